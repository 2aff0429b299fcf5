//! `deploy:` of `.slipway.yml`: the app, its image and its promotion chain.
//! What protects an environment (its cluster, approvals) is never read from
//! here: that is server-side configuration a commit cannot change.

use super::model::{
    DeploySpec, EnvironmentSettings, EnvironmentSpec, JobSpec, PipelineSpec, Strategy,
    VerificationSpec,
};
use super::read::{nearest, start_of, valid_repository, Fields, Reader};
use super::yaml::{Key, Node};
use super::SpecError;

const DEPLOY_KEYS: &[&str] = &[
    "app",
    "image",
    "port",
    "health",
    "replicas",
    "env",
    "memory",
    "cpus",
    "deadline",
    "keep",
    "environments",
];
const ENVIRONMENT_KEYS: &[&str] = &[
    "strategy",
    "replicas",
    "env",
    "secrets",
    "memory",
    "cpus",
    "deadline",
    "keep",
    "verify",
    "soak",
    "auto",
    "on_verify_failure",
];
/// Job keys a verify job may not use: it runs alone, once.
const NOT_IN_VERIFY: &[&str] = &["needs", "matrix", "artifacts"];

pub const MAX_REPLICAS: u64 = 50;
/// The longest readiness wait and rollback window a spec may ask for.
pub const MAX_DEADLINE: std::time::Duration = std::time::Duration::from_secs(3600);
pub const MAX_KEEP: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
pub const MAX_ENVIRONMENTS: usize = 20;
/// The longest soak a spec may ask for.
pub const MAX_SOAK: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);
const MAX_CPUS: f64 = 256.0;
/// Below this an instance cannot start a shell.
const MIN_MEMORY: u64 = 4 << 20;

/// An app or environment name: it appears in URLs, paths and labels, so it is
/// a DNS label (lowercase letters, digits and inner '-', at most 63).
pub fn valid_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// `512M`, `1Gi`, `256k` or a number of bytes.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "b" | "B" => 1,
        "k" | "K" | "Ki" | "KiB" | "kB" | "KB" => 1 << 10,
        "m" | "M" | "Mi" | "MiB" | "MB" => 1 << 20,
        "g" | "G" | "Gi" | "GiB" | "GB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

impl Reader {
    pub(super) fn deploy(&mut self, node: &Node) -> Option<DeploySpec> {
        let what = "deploy";
        let fields = self.fields(node, what, DEPLOY_KEYS)?;
        let at = start_of(node);
        let app = self
            .required(&fields, "app", what, at)
            .and_then(|n| self.label(n, "deploy.app"));
        let image = self
            .required(&fields, "image", what, at)
            .and_then(|n| self.repository(n, "deploy.image"));
        let port = self
            .required(&fields, "port", what, at)
            .and_then(|n| self.port(n));
        let health = self
            .required(&fields, "health", what, at)
            .and_then(|n| self.health(n));
        let defaults = self.settings(&fields, what, &EnvironmentSettings::default());
        let environments = match self.required(&fields, "environments", what, at) {
            Some(node) => self.environments(node, &defaults),
            None => Vec::new(),
        };
        Some(DeploySpec {
            app: app?,
            span: at,
            image: image?,
            port: port?,
            health: health?,
            defaults,
            environments,
        })
    }

    fn label(&mut self, node: &Node, what: &str) -> Option<String> {
        let name = self.string(node, what)?;
        if valid_label(&name) {
            return Some(name);
        }
        self.error(
            node.span(),
            format!(
                "{what} {name:?} is not a valid name: lowercase letters, digits and '-' \
                 (not first or last), at most 63"
            ),
        );
        None
    }

    fn repository(&mut self, node: &Node, what: &str) -> Option<String> {
        let name = self.string(node, what)?;
        if valid_repository(&name) {
            return Some(name);
        }
        self.error(
            node.span(),
            format!(
                "{what} {name:?} is not a registry repository (lowercase path components \
                 such as team/web); give the repository without a tag or digest"
            ),
        );
        None
    }

    fn port(&mut self, node: &Node) -> Option<u16> {
        match self.number(node, "deploy.port", 65535)? {
            0 => {
                self.error(node.span(), "deploy.port must be from 1 to 65535");
                None
            }
            port => Some(port as u16),
        }
    }

    fn health(&mut self, node: &Node) -> Option<String> {
        let path = self.string(node, "deploy.health")?;
        let ok = path.starts_with('/')
            && path.len() <= 1024
            && path.bytes().all(|b| b.is_ascii_graphic())
            && !path.contains('#');
        if ok {
            return Some(path);
        }
        self.error(
            node.span(),
            format!(
                "deploy.health {path:?} must be a URL path starting with '/', without \
                 spaces or a fragment, such as /healthz"
            ),
        );
        None
    }

    /// The settings an environment shares with the deploy section: `base`
    /// with what `fields` sets.
    fn settings(
        &mut self,
        fields: &Fields<'_>,
        what: &str,
        base: &EnvironmentSettings,
    ) -> EnvironmentSettings {
        let mut out = base.clone();
        if let Some(n) = fields.get("replicas") {
            match self.number(n, &format!("{what}.replicas"), MAX_REPLICAS) {
                Some(0) => self.error(n.span(), format!("{what}.replicas must be at least 1")),
                Some(r) => out.replicas = r as u32,
                None => {}
            }
        }
        if let Some(n) = fields.get("env") {
            for (name, value) in self.env(n, &format!("{what}.env")) {
                out.env.retain(|(k, _)| *k != name);
                out.env.push((name, value));
            }
        }
        if let Some(n) = fields.get("memory") {
            let text = self.string(n, &format!("{what}.memory"));
            match text.as_deref().map(|t| (t, parse_memory(t))) {
                Some((_, Some(bytes))) if bytes >= MIN_MEMORY => out.memory_bytes = Some(bytes),
                Some((t, Some(_))) => self.error(
                    n.span(),
                    format!("{what}.memory {t:?} is below the 4M an instance needs"),
                ),
                Some((t, None)) => self.error(
                    n.span(),
                    format!("{what}.memory {t:?} is not a size such as 256M or 1G"),
                ),
                None => {}
            }
        }
        if let Some(n) = fields.get("cpus") {
            let parsed = match n {
                Node::Scalar {
                    value, plain: true, ..
                } => value.parse::<f64>().ok(),
                _ => None,
            };
            match parsed {
                Some(c) if c.is_finite() && c > 0.0 && c <= MAX_CPUS => out.cpus = Some(c),
                _ => self.error(
                    n.span(),
                    format!(
                        "{what}.cpus must be a number of CPUs above 0 and at most 256, such as 0.5"
                    ),
                ),
            }
        }
        for (key, max, slot) in [
            ("deadline", MAX_DEADLINE, &mut out.deadline),
            ("keep", MAX_KEEP, &mut out.keep),
        ] {
            let Some(n) = fields.get(key) else { continue };
            match self.duration(n, &format!("{what}.{key}")) {
                Some(d) if d <= max => *slot = d,
                Some(d) => self.error(
                    n.span(),
                    format!(
                        "{what}.{key} is {}; at most {} is allowed",
                        humantime::format_duration(d),
                        humantime::format_duration(max)
                    ),
                ),
                None => {}
            }
        }
        out
    }

    fn environments(
        &mut self,
        node: &Node,
        defaults: &EnvironmentSettings,
    ) -> Vec<EnvironmentSpec> {
        let Node::Map(entries, span) = node else {
            self.error(
                node.span(),
                format!(
                    "deploy.environments must be a mapping of name: {{ strategy: ... }}, in \
                     promotion order, found {}",
                    node.kind()
                ),
            );
            return Vec::new();
        };
        if entries.is_empty() {
            self.error(
                *span,
                "deploy.environments is empty; name at least one environment",
            );
        }
        if entries.len() > MAX_ENVIRONMENTS {
            self.error(
                *span,
                format!(
                    "deploy.environments has {} environments; at most {MAX_ENVIRONMENTS} are allowed",
                    entries.len()
                ),
            );
            return Vec::new();
        }
        let mut out = Vec::new();
        for (key, value) in entries {
            if !valid_label(&key.name) {
                self.error(
                    key.span,
                    format!(
                        "environment {:?} is not a valid name: lowercase letters, digits and \
                         '-' (not first or last), at most 63",
                        key.name
                    ),
                );
                continue;
            }
            let what = format!("environment {:?}", key.name);
            let Some(fields) = self.fields(value, &what, ENVIRONMENT_KEYS) else {
                continue;
            };
            let strategy = match self.required(&fields, "strategy", &what, key.span) {
                Some(n) => self.strategy(n, &what),
                None => None,
            };
            let settings = self.settings(&fields, &what, defaults);
            let secrets = fields
                .get("secrets")
                .map(|n| self.names(n, &format!("{what}.secrets")))
                .unwrap_or_default()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            let verification = self.verification(&fields, key, &what, out.is_empty());
            if let Some(strategy) = strategy {
                out.push(EnvironmentSpec {
                    name: key.name.clone(),
                    span: key.span,
                    strategy,
                    settings,
                    secrets,
                    verification,
                });
            }
        }
        out
    }

    /// `verify`, `soak`, `auto` and `on_verify_failure` of one environment
    /// (`first`: the chain's first, which pipelines deploy to, so `auto`
    /// means nothing there).
    fn verification(
        &mut self,
        fields: &Fields<'_>,
        env: &Key,
        what: &str,
        first: bool,
    ) -> VerificationSpec {
        let mut out = VerificationSpec::default();
        if let Some(node) = fields.get("verify") {
            out.job = self.verify_job(node, env, what);
        }
        if let Some(n) = fields.get("soak") {
            match self.duration(n, &format!("{what}.soak")) {
                Some(d) if d <= MAX_SOAK => out.soak = Some(d),
                Some(d) => self.error(
                    n.span(),
                    format!(
                        "{what}.soak is {}; at most {} is allowed",
                        humantime::format_duration(d),
                        humantime::format_duration(MAX_SOAK)
                    ),
                ),
                None => {}
            }
        }
        if let Some(n) = fields.get("auto") {
            match n {
                Node::Scalar {
                    value, plain: true, ..
                } if value == "true" || value == "false" => {
                    out.auto = value == "true";
                    if out.auto && first {
                        self.error(
                            n.span(),
                            format!(
                                "{what}.auto: the first environment of the chain is deployed by \
                                 pipelines, not promoted; set auto on a later environment"
                            ),
                        );
                    }
                }
                other => self.error(other.span(), format!("{what}.auto must be true or false")),
            }
        }
        if let Some(n) = fields.get("on_verify_failure") {
            let text = self.string(n, &format!("{what}.on_verify_failure"));
            match text.as_deref() {
                Some("rollback") => out.rollback_on_failure = true,
                Some("fail") => {}
                Some(other) => self.error(
                    n.span(),
                    format!(
                        "{what}.on_verify_failure {other:?} is not one of: fail (the default: \
                         the deployment is marked failed and keeps running), rollback"
                    ),
                ),
                None => {}
            }
            if out.job.is_none() && out.soak.is_none() {
                self.error(
                    n.span(),
                    format!("{what}.on_verify_failure needs a verify job or a soak to fail"),
                );
            }
        }
        out
    }

    /// A verify job: a job (steps, services, env, runs-on, when is not
    /// allowed either) that runs alone and builds nothing.
    fn verify_job(&mut self, node: &Node, env: &Key, what: &str) -> Option<JobSpec> {
        if let Node::Map(entries, _) = node {
            for (key, _) in entries {
                if NOT_IN_VERIFY.contains(&key.name.as_str()) || key.name == "when" {
                    self.error(
                        key.span,
                        format!(
                            "{what}.verify: {:?} is not allowed in a verify job (it runs alone, \
                             once, after each deployment there)",
                            key.name
                        ),
                    );
                    return None;
                }
            }
        }
        let key = Key {
            name: format!("verify-{}", env.name),
            span: env.span,
        };
        let job = self.job(&key, node)?;
        for step in &job.steps {
            if step.build.is_some() {
                self.error(
                    step.span,
                    format!(
                        "{what}.verify: step {:?} builds an image; a verify job tests what \
                         runs, it builds nothing",
                        step.name
                    ),
                );
                return None;
            }
        }
        Some(job)
    }

    fn strategy(&mut self, node: &Node, what: &str) -> Option<Strategy> {
        let name = self.string(node, &format!("{what}.strategy"))?;
        let strategy = Strategy::parse(&name);
        if strategy.is_none() {
            let hint = match nearest(&name, Strategy::NAMES) {
                Some(near) => format!("did you mean {near:?}?"),
                None => format!("expected one of: {}", Strategy::NAMES.join(", ")),
            };
            self.error(
                node.span(),
                format!("{what}: unknown strategy {name:?}; {hint}"),
            );
        }
        strategy
    }
}

/// The image deployed must be one this file builds: a build step pushing
/// `deploy.image`, or one pushing to the pipeline's repository by default.
pub(super) fn check_image_is_built(spec: &PipelineSpec, errors: &mut Vec<SpecError>) {
    let Some(deploy) = &spec.deploy else {
        return;
    };
    let builds: Vec<Option<&str>> = spec
        .jobs
        .iter()
        .flat_map(|j| &j.steps)
        .filter_map(|s| s.build.as_ref())
        .map(|b| b.image.as_deref())
        .collect();
    if builds
        .iter()
        .any(|image| image.is_none() || *image == Some(deploy.image.as_str()))
    {
        return;
    }
    let pushed: Vec<&str> = builds.iter().flatten().copied().collect();
    let message = if pushed.is_empty() {
        format!(
            "deploy.image {:?} is not built by this file: add a step with `build: {{ image: {} }}`",
            deploy.image, deploy.image
        )
    } else {
        format!(
            "deploy.image {:?} is not built by this file (its build steps push {})",
            deploy.image,
            pushed.join(", ")
        )
    };
    errors.push(SpecError {
        span: deploy.span,
        message,
    });
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Strategy};
    use std::time::Duration;

    /// The example of the deploys issue, which the README shows.
    const EXAMPLE: &str = "\
jobs:
  image:
    steps:
      - name: build
        build:
          image: demo/web
deploy:
  app: web
  image: demo/web          # deploys the digest this pipeline's build step pushed
  port: 8080               # every instance gets PORT=8080 and must listen on it
  health: /healthz         # an instance is ready once this answers 2xx
  replicas: 2
  environments:
    dev:     { strategy: rolling }
    staging: { strategy: blue-green }
    prod:    { strategy: blue-green, replicas: 3 }
";

    #[test]
    fn the_example_reads_into_a_promotion_chain() {
        let spec = parse(".slipway.yml", EXAMPLE).unwrap();
        let deploy = spec.deploy.unwrap();
        assert_eq!(
            (deploy.app.as_str(), deploy.image.as_str(), deploy.port),
            ("web", "demo/web", 8080)
        );
        assert_eq!(deploy.health, "/healthz");
        let chain: Vec<(&str, Strategy, u32)> = deploy
            .environments
            .iter()
            .map(|e| (e.name.as_str(), e.strategy, e.settings.replicas))
            .collect();
        assert_eq!(
            chain,
            [
                ("dev", Strategy::Rolling, 2),
                ("staging", Strategy::BlueGreen, 2),
                ("prod", Strategy::BlueGreen, 3)
            ]
        );
        assert_eq!(
            deploy.environments[0].settings.deadline,
            Duration::from_secs(120)
        );
        assert_eq!(
            deploy.environments[0].settings.keep,
            Duration::from_secs(600)
        );
    }

    #[test]
    fn environments_override_and_merge_the_defaults() {
        let text = EXAMPLE.replace(
            "  replicas: 2\n",
            "  replicas: 2\n  memory: 256M\n  cpus: 0.5\n  deadline: 30s\n  env: { MODE: base, LEVEL: info }\n",
        ).replace(
            "prod:    { strategy: blue-green, replicas: 3 }",
            "prod:    { strategy: blue-green, replicas: 3, keep: 1m, memory: 1G, env: { LEVEL: warn }, secrets: [DB_PASSWORD] }",
        );
        let spec = parse(".slipway.yml", &text).unwrap();
        let deploy = spec.deploy.unwrap();
        let dev = &deploy.environments[0];
        let prod = &deploy.environments[2];
        assert_eq!(dev.settings.memory_bytes, Some(256 << 20));
        assert_eq!(prod.settings.memory_bytes, Some(1 << 30));
        assert_eq!(prod.settings.cpus, Some(0.5));
        assert_eq!(prod.settings.deadline, Duration::from_secs(30));
        assert_eq!(prod.settings.keep, Duration::from_secs(60));
        assert_eq!(
            prod.settings.env,
            [
                ("MODE".into(), "base".into()),
                ("LEVEL".into(), "warn".into())
            ]
        );
        assert_eq!(prod.secrets, ["DB_PASSWORD"]);
        assert!(dev.secrets.is_empty());
    }

    #[test]
    fn verification_reads_per_environment() {
        let text = EXAMPLE.replace(
            "staging: { strategy: blue-green }",
            "staging:\n      strategy: blue-green\n      auto: true\n      soak: 10m\n      on_verify_failure: rollback\n      verify:\n        runs-on: [linux]\n        steps:\n          - name: smoke\n            image: busybox\n            commands: [\"wget -qO- $SLIPWAY_ENV_URL/healthz\"]",
        );
        let spec = parse(".slipway.yml", &text).unwrap();
        let deploy = spec.deploy.unwrap();
        let dev = &deploy.environments[0].verification;
        assert!(dev.job.is_none() && dev.soak.is_none() && !dev.auto && !dev.rollback_on_failure);
        let staging = &deploy.environments[1].verification;
        let job = staging.job.as_ref().unwrap();
        assert_eq!(job.name, "verify-staging");
        assert_eq!(job.runs_on, ["linux"]);
        assert_eq!(job.steps[0].name, "smoke");
        assert_eq!(staging.soak, Some(Duration::from_secs(600)));
        assert!(staging.auto && staging.rollback_on_failure);
        // The pipeline itself has only its own jobs.
        assert_eq!(spec.jobs.len(), 1);
    }
}
