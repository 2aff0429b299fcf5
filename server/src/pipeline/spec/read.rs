//! From the YAML tree to the model, collecting every error on the way (not just
//! the first), each with the position of the offending node.

use std::time::Duration;

use super::model::{
    BuildSpec, CronSpec, Event, JobSpec, Pattern, PipelineSpec, Run, ServiceSpec, StepSpec, When,
};
use super::yaml::{Key, Node, Span};
use super::SpecError;

const TOP_KEYS: &[&str] = &["jobs", "env", "cron", "deploy"];
const JOB_KEYS: &[&str] = &[
    "steps",
    "needs",
    "runs-on",
    "services",
    "matrix",
    "artifacts",
    "env",
    "when",
];
const STEP_KEYS: &[&str] = &[
    "name",
    "image",
    "commands",
    "entrypoint",
    "args",
    "env",
    "secrets",
    "when",
    "timeout",
    "retry",
    "build",
];
const BUILD_KEYS: &[&str] = &[
    "context", "file", "image", "tags", "args", "target", "cache",
];
const SERVICE_KEYS: &[&str] = &["image", "commands", "entrypoint", "args", "env"];
const WHEN_KEYS: &[&str] = &["branch", "tag", "event", "paths"];
const CRON_KEYS: &[&str] = &["name", "schedule", "branch"];

/// Combinations a matrix may expand to.
pub const MAX_MATRIX: usize = 256;
pub const MAX_RETRY: u64 = 10;

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[derive(Default)]
pub struct Reader {
    pub errors: Vec<SpecError>,
    /// (job, needed job, where) for the graph checks.
    pub needs: Vec<(String, String, Span)>,
}

/// A mapping's entries, looked up by key.
pub(super) struct Fields<'a>(&'a [(Key, Node)]);

impl<'a> Fields<'a> {
    pub(super) fn get(&self, key: &str) -> Option<&'a Node> {
        self.0.iter().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }
}

/// Where a mapping visibly starts: its first key (a block mapping's own mark is
/// where the parser noticed it, often past the first key).
pub(super) fn start_of(node: &Node) -> Span {
    match node {
        Node::Map(entries, _) if !entries.is_empty() => entries[0].0.span,
        other => other.span(),
    }
}

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A registry repository name: path components of lowercase letters and
/// digits joined by `.`, `_`, `__` or `-`.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && part
                    .bytes()
                    .last()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

fn valid_tag(tag: &str) -> bool {
    (1..=128).contains(&tag.len())
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Reader {
    pub(super) fn error(&mut self, span: Span, message: impl Into<String>) {
        self.errors.push(SpecError {
            span,
            message: message.into(),
        });
    }

    /// `node` as a mapping whose keys are all in `allowed`; unknown keys are
    /// reported with the nearest allowed one.
    pub(super) fn fields<'a>(
        &mut self,
        node: &'a Node,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'a>> {
        let Node::Map(entries, _) = node else {
            self.error(
                node.span(),
                format!("{what} must be a mapping, found {}", node.kind()),
            );
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                let hint = match nearest(&key.name, allowed.iter().copied()) {
                    Some(near) => format!("did you mean {near:?}?"),
                    None => format!("expected one of: {}", allowed.join(", ")),
                };
                self.error(
                    key.span,
                    format!("unknown key {:?} in {what}; {hint}", key.name),
                );
            }
        }
        Some(Fields(entries))
    }

    pub(super) fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match node {
            Node::Scalar { value, .. } => Some(value.clone()),
            other => {
                self.error(
                    other.span(),
                    format!("{what} must be a string, found {}", other.kind()),
                );
                None
            }
        }
    }

    pub(super) fn required<'a>(
        &mut self,
        fields: &Fields<'a>,
        key: &str,
        what: &str,
        at: Span,
    ) -> Option<&'a Node> {
        let found = fields.get(key);
        if found.is_none() {
            self.error(at, format!("{what} has no {key:?}"));
        }
        found
    }

    /// A list of strings; a single string is a list of one.
    pub(super) fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match node {
            Node::Scalar { value, .. } => vec![value.clone()],
            Node::Seq(items, _) => items
                .iter()
                .filter_map(|item| self.string(item, &format!("each entry of {what}")))
                .collect(),
            other => {
                self.error(
                    other.span(),
                    format!(
                        "{what} must be a string or a list of strings, found {}",
                        other.kind()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// Names that must look like `[A-Za-z0-9._-]+`, with the span of each.
    pub(super) fn names(&mut self, node: &Node, what: &str) -> Vec<(String, Span)> {
        let items: Vec<&Node> = match node {
            Node::Seq(items, _) => items.iter().collect(),
            other => vec![other],
        };
        let mut names = Vec::new();
        for item in items {
            if let Some(name) = self.string(item, &format!("each entry of {what}")) {
                if valid_name(&name) {
                    names.push((name, item.span()));
                } else {
                    self.error(
                        item.span(),
                        format!(
                            "{what}: {name:?} is not a name (letters, digits, '.', '_' and '-')"
                        ),
                    );
                }
            }
        }
        names
    }

    pub(super) fn env(&mut self, node: &Node, what: &str) -> Vec<(String, String)> {
        let Node::Map(entries, _) = node else {
            self.error(
                node.span(),
                format!(
                    "{what} must be a mapping of NAME: value, found {}",
                    node.kind()
                ),
            );
            return Vec::new();
        };
        let mut env = Vec::new();
        for (key, value) in entries {
            if !valid_env_name(&key.name) {
                self.error(
                    key.span,
                    format!(
                        "{what}: {:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
                        key.name
                    ),
                );
                continue;
            }
            let value = match value {
                Node::Null(_) => Some(String::new()),
                other => self.string(other, &format!("{what}: {}", key.name)),
            };
            if let Some(value) = value {
                env.push((key.name.clone(), value));
            }
        }
        env
    }

    pub(super) fn duration(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let text = self.string(node, what)?;
        let parsed = match text.parse::<u64>() {
            Ok(seconds) => Ok(Duration::from_secs(seconds)),
            Err(_) => humantime::parse_duration(&text),
        };
        match parsed {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(node.span(), format!("{what} must be more than zero"));
                None
            }
            Err(e) => {
                self.error(
                    node.span(),
                    format!("{what} {text:?} is not a duration such as 90s, 10m or 1h30m ({e})"),
                );
                None
            }
        }
    }

    pub(super) fn number(&mut self, node: &Node, what: &str, max: u64) -> Option<u64> {
        let n = match node {
            Node::Scalar {
                value, plain: true, ..
            } => value.parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n <= max => Some(n),
            Some(n) => {
                self.error(
                    node.span(),
                    format!("{what} is {n}; at most {max} is allowed"),
                );
                None
            }
            None => {
                self.error(
                    node.span(),
                    format!(
                        "{what} must be a whole number from 0 to {max}, found {}",
                        node.kind()
                    ),
                );
                None
            }
        }
    }

    fn patterns(&mut self, node: &Node, what: &str) -> Vec<Pattern> {
        let items: Vec<&Node> = match node {
            Node::Seq(items, _) => items.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(text) = self.string(item, &format!("each entry of {what}")) else {
                continue;
            };
            match globset::GlobBuilder::new(&text)
                .literal_separator(true)
                .build()
            {
                Ok(glob) => out.push(Pattern {
                    matcher: glob.compile_matcher(),
                    text,
                }),
                Err(e) => self.error(
                    item.span(),
                    format!("{what}: {text:?} is not a valid glob: {}", e.kind()),
                ),
            }
        }
        out
    }

    fn when(&mut self, node: &Node, what: &str) -> Option<When> {
        let fields = self.fields(node, what, WHEN_KEYS)?;
        let mut when = When::default();
        if let Some(n) = fields.get("branch") {
            when.branch = self.patterns(n, &format!("{what}.branch"));
        }
        if let Some(n) = fields.get("tag") {
            when.tag = self.patterns(n, &format!("{what}.tag"));
        }
        if let Some(n) = fields.get("paths") {
            when.paths = self.patterns(n, &format!("{what}.paths"));
        }
        if let Some(n) = fields.get("event") {
            let items: Vec<&Node> = match n {
                Node::Seq(items, _) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let Some(name) = self.string(item, &format!("each entry of {what}.event")) else {
                    continue;
                };
                match Event::parse(&name) {
                    Some(e) => when.event.push(e),
                    None => {
                        let hint = match nearest(&name, Event::NAMES) {
                            Some(near) => format!("did you mean {near:?}?"),
                            None => format!("expected one of: {}", Event::NAMES.join(", ")),
                        };
                        self.error(
                            item.span(),
                            format!("{what}.event: unknown event {name:?}; {hint}"),
                        );
                    }
                }
            }
        }
        Some(when)
    }

    /// `commands` or `entrypoint`/`args`.
    fn run(&mut self, fields: &Fields<'_>, what: &str, at: Span) -> Run {
        let commands = fields.get("commands");
        let entrypoint = fields.get("entrypoint");
        let args = fields.get("args");
        if let (Some(_), Some(other)) = (commands, entrypoint.or(args)) {
            self.error(
                other.span(),
                format!("{what} has both commands and entrypoint/args; use one or the other"),
            );
        }
        match commands {
            Some(node) => {
                let commands = self.strings(node, &format!("{what}: commands"));
                if commands.is_empty() && matches!(node, Node::Seq(..)) {
                    self.error(node.span(), format!("{what}: commands is an empty list"));
                }
                Run::Commands(commands)
            }
            None => {
                let _ = at;
                Run::Exec {
                    entrypoint: entrypoint.map(|n| self.strings(n, &format!("{what}: entrypoint"))),
                    args: args
                        .map(|n| self.strings(n, &format!("{what}: args")))
                        .unwrap_or_default(),
                }
            }
        }
    }

    fn image(&mut self, fields: &Fields<'_>, what: &str, at: Span) -> String {
        let Some(node) = self.required(fields, "image", what, at) else {
            return String::new();
        };
        let Some(image) = self.string(node, &format!("{what}: image")) else {
            return String::new();
        };
        if image.is_empty() || image.chars().any(char::is_whitespace) {
            self.error(
                node.span(),
                format!("{what}: image {image:?} is not an image reference"),
            );
        }
        image
    }

    fn step(&mut self, node: &Node, job: &str, index: usize) -> Option<StepSpec> {
        // Named in messages by its name when it has a usable one.
        let given = match node {
            Node::Map(entries, _) => entries
                .iter()
                .find(|(k, _)| k.name == "name")
                .map(|(_, v)| v),
            _ => None,
        };
        let what = match given {
            Some(Node::Scalar { value, .. }) => format!("step {value:?} of job {job:?}"),
            _ => format!("step {} of job {job:?}", index + 1),
        };
        let fields = self.fields(node, &what, STEP_KEYS)?;
        let name = match fields.get("name") {
            Some(n) => self.string(n, &format!("the name of {what}"))?,
            None => format!("step-{}", index + 1),
        };
        let span = start_of(node);
        let build = fields
            .get("build")
            .and_then(|n| self.build(n, &format!("{what}: build")));
        let (image, run) = if let Some(node) = fields.get("build") {
            for key in ["image", "commands", "entrypoint", "args"] {
                if let Some(other) = fields.get(key) {
                    self.error(
                        other.span(),
                        format!("{what} is a build step: it takes no {key} (the Containerfile says what to run)"),
                    );
                }
            }
            let _ = node;
            (String::new(), Run::Commands(Vec::new()))
        } else {
            (
                self.image(&fields, &what, span),
                self.run(&fields, &what, span),
            )
        };
        let env = fields
            .get("env")
            .map(|n| self.env(n, &format!("{what}: env")))
            .unwrap_or_default();
        let secrets = fields
            .get("secrets")
            .map(|n| {
                let names = self.names(n, &format!("{what}: secrets"));
                names.into_iter().map(|(name, _)| name).collect()
            })
            .unwrap_or_default();
        let when = fields
            .get("when")
            .and_then(|n| self.when(n, &format!("{what}: when")));
        let timeout = fields
            .get("timeout")
            .and_then(|n| self.duration(n, &format!("{what}: timeout")));
        let retry = fields
            .get("retry")
            .and_then(|n| self.number(n, &format!("{what}: retry"), MAX_RETRY))
            .unwrap_or(0) as u32;
        Some(StepSpec {
            name,
            span,
            image,
            run,
            env,
            secrets,
            when,
            timeout,
            retry,
            build,
        })
    }

    /// A path inside the workspace: relative, never leaving it.
    fn workspace_path(&mut self, node: &Node, what: &str) -> Option<String> {
        let path = self.string(node, what)?;
        let escapes = path.starts_with('/')
            || path
                .split('/')
                .try_fold(0i32, |depth, part| match part {
                    ".." if depth == 0 => None,
                    ".." => Some(depth - 1),
                    "" | "." => Some(depth),
                    _ => Some(depth + 1),
                })
                .is_none();
        if escapes {
            self.error(
                node.span(),
                format!("{what}: {path:?} must be a path inside the repository"),
            );
            return None;
        }
        Some(path)
    }

    fn build(&mut self, node: &Node, what: &str) -> Option<BuildSpec> {
        let fields = self.fields(node, what, BUILD_KEYS)?;
        // Every field is checked before giving up on the step, so each error
        // is reported.
        let context = match fields.get("context") {
            Some(n) => self.workspace_path(n, &format!("{what}: context")),
            None => Some(".".to_owned()),
        };
        let file = fields
            .get("file")
            .map(|n| self.workspace_path(n, &format!("{what}: file")));
        let image = match fields.get("image") {
            Some(n) => {
                let image = self.string(n, &format!("{what}: image"))?;
                if !valid_repository(&image) {
                    self.error(
                        n.span(),
                        format!("{what}: image {image:?} is not a repository name (lowercase letters, digits and . _ - separated by /, no tag)"),
                    );
                }
                Some(image)
            }
            None => None,
        };
        let tags = fields
            .get("tags")
            .map(|n| {
                let tags = self.strings(n, &format!("{what}: tags"));
                for t in &tags {
                    if !valid_tag(t) {
                        self.error(
                            n.span(),
                            format!("{what}: tag {t:?} is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128)"),
                        );
                    }
                }
                tags
            })
            .unwrap_or_default();
        let args = fields
            .get("args")
            .map(|n| self.env(n, &format!("{what}: args")))
            .unwrap_or_default();
        let target = match fields.get("target") {
            Some(n) => Some(self.string(n, &format!("{what}: target"))?),
            None => None,
        };
        let registry_cache = match fields.get("cache") {
            None => true,
            Some(n) => match self.string(n, &format!("{what}: cache"))?.as_str() {
                "registry" => true,
                "local" => false,
                other => {
                    self.error(
                        n.span(),
                        format!("{what}: cache must be registry or local, not {other:?}"),
                    );
                    return None;
                }
            },
        };
        Some(BuildSpec {
            registry_cache,
            context: context?,
            file: file.map(|f| f.ok_or(())).transpose().ok()?,
            image,
            tags,
            args,
            target,
        })
    }

    fn services(&mut self, node: &Node, job: &str) -> Vec<ServiceSpec> {
        let what = format!("services of job {job:?}");
        let Node::Map(entries, _) = node else {
            self.error(
                node.span(),
                format!(
                    "{what} must be a mapping of name: service, found {}",
                    node.kind()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            if !valid_name(&key.name) {
                self.error(key.span, format!("{what}: {:?} is not a name", key.name));
                continue;
            }
            let what = format!("service {:?} of job {job:?}", key.name);
            let Some(fields) = self.fields(value, &what, SERVICE_KEYS) else {
                continue;
            };
            let image = self.image(&fields, &what, key.span);
            let run = self.run(&fields, &what, key.span);
            let env = fields
                .get("env")
                .map(|n| self.env(n, &format!("{what}: env")))
                .unwrap_or_default();
            out.push(ServiceSpec {
                name: key.name.clone(),
                span: key.span,
                image,
                run,
                env,
            });
        }
        out
    }

    fn matrix(&mut self, node: &Node, job: &str) -> Vec<(String, Vec<String>)> {
        let what = format!("matrix of job {job:?}");
        let Node::Map(entries, _) = node else {
            self.error(
                node.span(),
                format!(
                    "{what} must be a mapping of VARIABLE: [values], found {}",
                    node.kind()
                ),
            );
            return Vec::new();
        };
        let span = start_of(node);
        let mut out = Vec::new();
        let mut combinations: usize = 1;
        for (key, value) in entries {
            if !valid_env_name(&key.name) {
                self.error(
                    key.span,
                    format!("{what}: {:?} is not a variable name", key.name),
                );
                continue;
            }
            let Node::Seq(items, _) = value else {
                self.error(
                    value.span(),
                    format!(
                        "{what}: {} must be a list of values, found {}",
                        key.name,
                        value.kind()
                    ),
                );
                continue;
            };
            if items.is_empty() {
                self.error(value.span(), format!("{what}: {} has no values", key.name));
                continue;
            }
            let values: Vec<String> = items
                .iter()
                .filter_map(|v| self.string(v, &format!("{what}: each value of {}", key.name)))
                .collect();
            combinations = combinations.saturating_mul(values.len());
            out.push((key.name.clone(), values));
        }
        if combinations > MAX_MATRIX {
            self.error(
                span,
                format!("{what} expands to {combinations} jobs; at most {MAX_MATRIX} are allowed"),
            );
        }
        out
    }

    fn artifacts(&mut self, node: &Node, job: &str) -> Vec<String> {
        let what = format!("artifacts of job {job:?}");
        let items: Vec<&Node> = match node {
            Node::Seq(items, _) => items.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::new();
        for item in items {
            let Some(path) = self.string(item, &format!("each entry of {what}")) else {
                continue;
            };
            // A trailing `/` or a `.` component would make the runner's
            // kernel follow a symlinked directory; empty components hide
            // one. The same rule as the runner's, which refuses them again.
            let why = slipway_runner::agent::artifacts::invalid(&path);
            if let Some(why) = why {
                self.error(
                    item.span(),
                    format!("{what}: {path:?} {why}; it must be a relative path inside the workspace (like dist/app), without '.', '..', '//' or a trailing '/'"),
                );
            } else {
                out.push(path);
            }
        }
        out
    }

    pub(super) fn job(&mut self, key: &Key, node: &Node) -> Option<JobSpec> {
        let job = key.name.as_str();
        if !valid_name(job) {
            self.error(
                key.span,
                format!("job name {job:?} must be letters, digits, '.', '_' and '-'"),
            );
        }
        let what = format!("job {job:?}");
        let fields = self.fields(node, &what, JOB_KEYS)?;
        let steps_node = self.required(&fields, "steps", &what, key.span);
        let mut steps = Vec::new();
        match steps_node {
            Some(Node::Seq(items, span)) => {
                if items.is_empty() {
                    self.error(*span, format!("{what} has an empty list of steps"));
                }
                // Name → where it was first used (one lookup per step: a job
                // may have thousands).
                let mut seen = std::collections::HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(step) = self.step(item, job, i) {
                        if let Some(first) = seen.get(&step.name).copied() {
                            let first: Span = first;
                            let line = first.line;
                            self.error(
                                step.span,
                                format!(
                                    "{what} has two steps named {:?} (the first at line {line})",
                                    step.name
                                ),
                            );
                        } else {
                            seen.insert(step.name.clone(), step.span);
                        }
                        steps.push(step);
                    }
                }
            }
            Some(other) => self.error(
                other.span(),
                format!("steps of {what} must be a list, found {}", other.kind()),
            ),
            None => {}
        }
        let needs = fields
            .get("needs")
            .map(|n| self.names(n, &format!("needs of {what}")))
            .unwrap_or_default();
        let runs_on = fields
            .get("runs-on")
            .map(|n| self.strings(n, &format!("runs-on of {what}")))
            .unwrap_or_default();
        let services = fields
            .get("services")
            .map(|n| self.services(n, job))
            .unwrap_or_default();
        let matrix = fields
            .get("matrix")
            .map(|n| self.matrix(n, job))
            .unwrap_or_default();
        let artifacts = fields
            .get("artifacts")
            .map(|n| self.artifacts(n, job))
            .unwrap_or_default();
        let env = fields
            .get("env")
            .map(|n| self.env(n, &format!("env of {what}")))
            .unwrap_or_default();
        let when = fields
            .get("when")
            .and_then(|n| self.when(n, &format!("when of {what}")));
        self.needs
            .extend(needs.iter().map(|(n, s)| (job.to_owned(), n.clone(), *s)));
        Some(JobSpec {
            name: job.to_owned(),
            span: key.span,
            needs: needs.into_iter().map(|(n, _)| n).collect(),
            runs_on,
            services,
            matrix,
            artifacts,
            env,
            when,
            steps,
        })
    }

    fn cron(&mut self, node: &Node) -> Vec<CronSpec> {
        let Node::Seq(items, _) = node else {
            self.error(
                node.span(),
                format!("cron must be a list of schedules, found {}", node.kind()),
            );
            return Vec::new();
        };
        let mut out: Vec<CronSpec> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let what = format!("cron schedule {}", i + 1);
            let Some(fields) = self.fields(item, &what, CRON_KEYS) else {
                continue;
            };
            let name = fields
                .get("name")
                .and_then(|n| self.string(n, &format!("{what}: name")))
                .unwrap_or_else(|| format!("cron-{}", i + 1));
            if seen.contains(&name) {
                self.error(
                    start_of(item),
                    format!("two cron schedules are named {name:?}"),
                );
            }
            seen.push(name.clone());
            let Some(schedule_node) = self.required(&fields, "schedule", &what, start_of(item))
            else {
                continue;
            };
            let Some(text) = self.string(schedule_node, &format!("{what}: schedule")) else {
                continue;
            };
            let branch = fields
                .get("branch")
                .and_then(|n| self.string(n, &format!("{what}: branch")));
            match text.parse::<croner::Cron>() {
                Ok(schedule) => out.push(CronSpec {
                    name,
                    span: start_of(item),
                    schedule,
                    schedule_text: text,
                    branch,
                }),
                Err(e) => self.error(
                    schedule_node.span(),
                    format!("{what}: {text:?} is not a cron schedule such as \"0 3 * * *\" ({e})"),
                ),
            }
        }
        out
    }
}

impl Reader {
    /// Read the whole document; `None` when the top level is unusable.
    pub fn document(&mut self, root: &Node) -> Option<PipelineSpec> {
        if let Node::Null(span) = root {
            self.error(*span, "the file is empty; it needs a `jobs:` mapping");
            return None;
        }
        let top = self.fields(root, "the top level", TOP_KEYS)?;
        let env = top
            .get("env")
            .map(|n| self.env(n, "the top-level env"))
            .unwrap_or_default();
        let cron = top.get("cron").map(|n| self.cron(n)).unwrap_or_default();
        let deploy = top.get("deploy").and_then(|n| self.deploy(n));
        let mut jobs = Vec::new();
        match self.required(&top, "jobs", "the file", start_of(root)) {
            Some(Node::Map(entries, span)) => {
                if entries.is_empty() {
                    self.error(*span, "jobs is empty; define at least one job");
                }
                for (key, node) in entries {
                    if let Some(job) = self.job(key, node) {
                        jobs.push(job);
                    }
                }
            }
            Some(other) => self.error(
                other.span(),
                format!(
                    "jobs must be a mapping of name: job, found {}",
                    other.kind()
                ),
            ),
            None => {}
        }
        Some(PipelineSpec {
            jobs,
            env,
            cron,
            deploy,
        })
    }
}
