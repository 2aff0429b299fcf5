//! A repository's pull allowlist: the repositories of Slipway's registry its
//! pipelines may pull from besides their own (`team/app` and `team/app/…`),
//! like GitLab's job token allowlist; `library/*` unless an admin changes it
//! (`POST /api/v1/repos/pull-allow`, `slipway repo pull-allow`).
//!
//! Job registry tokens carry exactly these patterns (`api/runner.rs`), so a
//! build's `FROM` is limited by the registry itself; step and service images
//! outside them fail at pipeline creation (`create.rs`), naming the image and
//! the setting. Images naming another registry's host are not Slipway's and
//! are not limited here (if the host is Slipway's own, the token still is).

use slipway_registry::access::RepoPattern;
use slipway_runner::api::JobDefinition;

use super::repo::GitRepo;

/// A new repository's allowlist.
pub const DEFAULT: &[&str] = &["library/*"];

/// At most this many patterns per repository.
pub const MAX_PATTERNS: usize = 100;

/// Image references are resolved against this stand-in for Slipway's own
/// registry, to tell its images from other registries'.
const OWN_REGISTRY: &str = "slipway.registry.invalid";

/// Check an allowlist an admin sets: each pattern a repository name,
/// `prefix/*` or `*`, at most [`MAX_PATTERNS`], duplicates dropped.
pub fn validate(patterns: &[String]) -> Result<Vec<String>, String> {
    if patterns.len() > MAX_PATTERNS {
        return Err(format!(
            "{} patterns: at most {MAX_PATTERNS}",
            patterns.len()
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for p in patterns {
        crate::auth::check_pattern(p).map_err(|e| format!("pattern {p:?}: {e}"))?;
        if !out.contains(p) {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// What a pipeline of `repo` may pull: its own repository, what is below
/// it, and its allowlist.
pub fn patterns(repo: &GitRepo) -> Vec<String> {
    let own = repo.name.to_ascii_lowercase();
    let mut all = vec![own.clone(), format!("{own}/*")];
    all.extend(repo.pull_allow.iter().cloned());
    all
}

/// The repository of Slipway's registry that `image` (as a spec names it)
/// pulls, or `None` for another registry's image (or a reference the runner
/// will refuse anyway).
fn own_repository(image: &str) -> Option<String> {
    let reference = slipway_runner::image::resolve(image, OWN_REGISTRY).ok()?;
    (reference.registry() == OWN_REGISTRY).then(|| reference.repository().to_owned())
}

/// Every step and service image of `jobs` that pipelines of `repo` may not
/// pull, as one message naming each (once) and the setting.
pub fn check_images(repo: &GitRepo, jobs: &[&JobDefinition]) -> Result<(), String> {
    let allowed: Vec<RepoPattern> = patterns(repo).into_iter().map(RepoPattern::new).collect();
    let mut refused: Vec<(String, String)> = Vec::new();
    for job in jobs {
        let images = job
            .steps
            .iter()
            .filter(|s| s.build.is_none())
            .map(|s| (format!("job {:?} step {:?}", job.name, s.name), &s.image))
            .chain(
                job.services
                    .iter()
                    .map(|s| (format!("job {:?} service {:?}", job.name, s.name), &s.image)),
            );
        for (place, image) in images {
            let Some(repository) = own_repository(image) else {
                continue;
            };
            let ok = allowed.iter().any(|p| p.matches(&repository));
            if !ok && !refused.iter().any(|(_, i)| i == image) {
                refused.push((place, image.clone()));
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let mut message = String::new();
    for (place, image) in &refused {
        message.push_str(&format!(
            "{place}: image {image} is outside what pipelines of {name} may pull \
             from this server's registry ({name}, {name}/* and its pull allowlist: {list})\n",
            name = repo.name,
            list = if repo.pull_allow.is_empty() {
                "empty".to_owned()
            } else {
                repo.pull_allow.join(", ")
            },
        ));
    }
    message.push_str(&format!(
        "an admin can allow more with `slipway repo pull-allow {} PATTERN...` \
         (POST /api/v1/repos/pull-allow)",
        repo.name
    ));
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(allow: &[&str]) -> GitRepo {
        GitRepo {
            id: 1,
            name: "team/app".into(),
            url: "/x".into(),
            default_branch: "main".into(),
            webhook_secret: String::new(),
            pull_allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn which_images_are_ours() {
        assert_eq!(
            own_repository("busybox").as_deref(),
            Some("library/busybox")
        );
        assert_eq!(own_repository("team/app:v1").as_deref(), Some("team/app"));
        assert_eq!(
            own_repository(
                "a/b/c@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            )
            .as_deref(),
            Some("a/b/c")
        );
        assert_eq!(own_repository("quay.io/other/private"), None);
        assert_eq!(own_repository("localhost:5000/other/private"), None);
    }

    #[test]
    fn patterns_cover_own_below_and_the_list() {
        let r = repo(&["library/*", "shared/tool"]);
        let ok = |image: &str| {
            let job = JobDefinition {
                name: "j".into(),
                steps: vec![slipway_runner::api::StepDefinition {
                    position: 0,
                    name: "s".into(),
                    image: image.into(),
                    command: slipway_runner::api::Command::Commands(vec![]),
                    env: vec![],
                    secrets: vec![],
                    withheld: vec![],
                    timeout_secs: None,
                    retry: 0,
                    skip: false,
                    build: None,
                    refused: None,
                }],
                services: vec![],
                artifacts: vec![],
                reach: None,
            };
            check_images(&r, &[&job])
        };
        for image in [
            "busybox",
            "team/app",
            "team/app/sub:x",
            "shared/tool",
            "quay.io/x/y",
        ] {
            assert!(ok(image).is_ok(), "{image}");
        }
        for image in ["other/private", "team/app2", "team/other", "shared/tool2"] {
            let e = ok(image).unwrap_err();
            assert!(
                e.contains(image) && e.contains("slipway repo pull-allow team/app"),
                "{e}"
            );
        }
    }

    #[test]
    fn patterns_are_checked() {
        assert!(validate(&["library/*".into(), "*".into(), "a/b".into()]).is_ok());
        assert!(validate(&["Bad Name".into()]).is_err());
        assert!(validate(&["team*".into()]).is_err());
        assert_eq!(validate(&["a/b".into(), "a/b".into()]).unwrap(), ["a/b"]);
    }
}
