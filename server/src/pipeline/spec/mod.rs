//! `.slipway.yml`: the pipeline spec. [`parse`] turns the file's text into a
//! [`PipelineSpec`] or into every error it has, each with `file:line:column`.
//!
//! - `yaml.rs`: YAML with positions (anchors and merge keys, bounded expansion).
//! - `read.rs`: the tree to the model; unknown keys name the nearest valid one.
//! - `graph.rs`: `needs` must name existing jobs and form no cycle.
//! - `limits.rs`: what the spec may expand to (jobs, steps, commands, bytes
//!   after the matrix).
//! - `model.rs`: the domain types, and `when` evaluation.

mod deploy;
mod graph;
pub mod limits;
mod model;
mod read;
mod yaml;

pub use deploy::{parse_memory, valid_label};
pub use model::{
    CronSpec, DeploySpec, EnvironmentSettings, EnvironmentSpec, Event, JobSpec, Pattern,
    PipelineSpec, Run, ServiceSpec, StepSpec, Strategy, Trigger, VerificationSpec, When,
};
pub use read::valid_repository;
pub use yaml::Span;

/// Largest `.slipway.yml` accepted.
pub const MAX_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub span: Span,
    pub message: String,
}

/// Everything wrong with one file, in the order it appears there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors {
    pub file: String,
    pub errors: Vec<SpecError>,
}

impl std::fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, e.span.line, e.span.col, e.message
            )?;
        }
        Ok(())
    }
}

/// Parse and validate `text`, the contents of `file` (named in errors).
pub fn parse(file: &str, text: &str) -> Result<PipelineSpec, SpecErrors> {
    let fail = |errors: Vec<SpecError>| SpecErrors {
        file: file.to_owned(),
        errors,
    };
    if text.len() > MAX_BYTES {
        return Err(fail(vec![SpecError {
            span: Span { line: 1, col: 1 },
            message: format!(
                "the file is {} bytes; at most {MAX_BYTES} are allowed",
                text.len()
            ),
        }]));
    }
    let root = yaml::parse(text).map_err(|e| {
        fail(vec![SpecError {
            span: e.span,
            message: format!("invalid YAML: {}", e.message),
        }])
    })?;
    let mut reader = read::Reader::default();
    let spec = reader.document(&root);
    let mut errors = reader.errors;
    if let Some(spec) = &spec {
        graph::check(spec, &reader.needs, &mut errors);
        deploy::check_image_is_built(spec, &mut errors);
        limits::check(spec, &mut errors);
        // Each verify job is a pipeline of its own, with the same bounds.
        let verify_jobs = spec
            .deploy
            .iter()
            .flat_map(|d| &d.environments)
            .filter_map(|e| e.verification.job.clone());
        for job in verify_jobs {
            let alone = PipelineSpec {
                jobs: vec![job],
                env: spec.env.clone(),
                cron: Vec::new(),
                deploy: None,
            };
            limits::check(&alone, &mut errors);
        }
    }
    match spec {
        Some(spec) if errors.is_empty() => Ok(spec),
        _ => {
            errors.sort_by_key(|e| e.span);
            Err(fail(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example (its first yaml block), exactly as written there.
    fn readme_example() -> &'static str {
        let readme = include_str!("../../../../README.md");
        let start = readme
            .find("```yaml\n")
            .expect("a yaml block in the README")
            + 8;
        let end = start + readme[start..].find("```").unwrap();
        &readme[start..end]
    }

    #[test]
    fn the_readme_example_parses() {
        let spec = parse(".slipway.yml", readme_example()).unwrap();
        let names: Vec<&str> = spec.jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["test", "after"]);
        assert_eq!(spec.jobs[1].needs, ["test"]);
        let greet = &spec.jobs[0].steps[0];
        assert_eq!(
            (greet.name.as_str(), greet.image.as_str()),
            ("greet", "busybox")
        );
        assert_eq!(
            greet.run,
            Run::Commands(vec![r#"echo "hello from $SLIPWAY_COMMIT""#.into()])
        );
        assert_eq!(
            spec.jobs[1].steps[0].run,
            Run::Commands(vec!["echo done".into()])
        );
    }

    #[test]
    fn when_conditions_match_triggers() {
        let text = "jobs:\n  a:\n    steps:\n      - image: x\n        when:\n          branch: [main, 'release/*']\n          event: push\n          paths: ['src/**']\n";
        let spec = parse("f", text).unwrap();
        let when = spec.jobs[0].steps[0].when.as_ref().unwrap();
        let changed = vec!["src/lib/a.rs".to_owned()];
        let docs = vec!["docs/x.md".to_owned()];
        let t = |branch, event, changed| Trigger {
            event: Some(event),
            branch: Some(branch),
            tag: None,
            changed,
        };
        assert!(when.matches(&t("main", Event::Push, Some(&changed))));
        assert!(when.matches(&t("release/1.2", Event::Push, None)));
        assert!(!when.matches(&t("release/1/2", Event::Push, None)));
        assert!(!when.matches(&t("main", Event::PullRequest, None)));
        assert!(!when.matches(&t("main", Event::Push, Some(&docs))));
        assert_eq!(spec.jobs[0].steps[0].name, "step-1");
    }

    /// Seeded random damage to valid specs (cut, duplicated, swapped and
    /// replaced bytes) never makes the parser panic; it answers Ok or errors
    /// that carry positions inside the text.
    #[test]
    fn damaged_specs_never_panic() {
        let seeds = [
            readme_example(),
            "x: &a {k: [1, *a]}\njobs: {a: {steps: [{image: x, when: {event: push}}], matrix: {A: [1]}}}\ncron: [{schedule: '0 3 * * *'}]\n",
        ];
        let alphabet = b"{}[]:,-&*<>|'\"#\n \t!%@`?abc0";
        let mut state: u64 = 0x5eed_1234_abcd_0001;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].as_bytes().to_vec();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len().max(1));
                match next(4) {
                    0 => bytes.truncate(at),
                    1 => {
                        let c = alphabet[next(alphabet.len())];
                        bytes.insert(at.min(bytes.len()), c);
                    }
                    2 if !bytes.is_empty() => {
                        let end = (at + next(16)).min(bytes.len());
                        let piece = bytes[at..end].to_vec();
                        bytes.splice(at..at, piece);
                    }
                    _ if !bytes.is_empty() => bytes[at] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let lines = text.lines().count().max(1) + 1;
            if let Err(errors) = parse("f", &text) {
                assert!(!errors.errors.is_empty());
                for e in &errors.errors {
                    assert!(e.span.line >= 1 && e.span.line <= lines, "{text:?}: {e:?}");
                }
            }
        }
    }
}
