//! The image a build produces: its config (history, env, entrypoint, labels),
//! its manifest, and the provenance document attached to it as a referrer.
//! Everything is serialised from `serde_json` values, whose maps are sorted,
//! so the same build gives the same bytes.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::exec::LayerRef;

pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const PROVENANCE: &str = "application/vnd.in-toto+json";

/// The runtime config of an image being built (`config` in the OCI image
/// config), plus its history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub env: Vec<(String, String)>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub workdir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub exposed: std::collections::BTreeSet<String>,
    /// `SHELL`; not part of the OCI config (Docker keeps it in its own).
    pub shell: Vec<String>,
    pub history: Vec<Value>,
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

impl RunConfig {
    /// The config of `scratch`.
    pub fn scratch() -> RunConfig {
        RunConfig {
            shell: vec!["/bin/sh".into(), "-c".into()],
            ..Default::default()
        }
    }

    /// From a base image's config document.
    pub fn from_image(doc: &Value) -> RunConfig {
        let c = &doc["config"];
        let env = strings(c.get("Env"))
            .unwrap_or_default()
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv, String::new()),
            })
            .collect();
        RunConfig {
            env,
            cmd: strings(c.get("Cmd")),
            entrypoint: strings(c.get("Entrypoint")),
            workdir: c["WorkingDir"].as_str().unwrap_or_default().to_owned(),
            user: c["User"].as_str().unwrap_or_default().to_owned(),
            labels: c["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default(),
            exposed: c["ExposedPorts"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
            shell: strings(c.get("Shell")).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]),
            history: doc["history"].as_array().cloned().unwrap_or_default(),
        }
    }

    pub fn env_get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn env_set(&mut self, name: &str, value: String) {
        match self.env.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.env.push((name.to_owned(), value)),
        }
    }
}

/// RFC 3339 (UTC) of seconds since the epoch.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's
    // well-known algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// The image config document.
pub fn config_document(run: &RunConfig, layers: &[LayerRef], created: u64) -> Vec<u8> {
    let mut c = serde_json::Map::new();
    if !run.env.is_empty() {
        c.insert(
            "Env".into(),
            json!(run
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()),
        );
    }
    if let Some(cmd) = &run.cmd {
        c.insert("Cmd".into(), json!(cmd));
    }
    if let Some(ep) = &run.entrypoint {
        c.insert("Entrypoint".into(), json!(ep));
    }
    if !run.workdir.is_empty() {
        c.insert("WorkingDir".into(), json!(run.workdir));
    }
    if !run.user.is_empty() {
        c.insert("User".into(), json!(run.user));
    }
    if !run.labels.is_empty() {
        c.insert("Labels".into(), json!(run.labels));
    }
    if !run.exposed.is_empty() {
        let ports: serde_json::Map<String, Value> =
            run.exposed.iter().map(|p| (p.clone(), json!({}))).collect();
        c.insert("ExposedPorts".into(), Value::Object(ports));
    }
    let doc = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": rfc3339(created),
        "config": c,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "history": run.history,
    });
    serde_json::to_vec(&doc).expect("json")
}

/// The image manifest for `config` and `layers`, annotated with the base.
pub fn manifest_document(
    config: &[u8],
    layers: &[LayerRef],
    base: Option<(&str, &str)>,
) -> Vec<u8> {
    let mut doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": descriptor(CONFIG, &sha256(config), config.len() as u64),
        "layers": layers
            .iter()
            .map(|l| descriptor(&l.media_type, &l.digest, l.size))
            .collect::<Vec<_>>(),
    });
    if let Some((name, digest)) = base {
        doc["annotations"] = json!({
            "org.opencontainers.image.base.name": name,
            "org.opencontainers.image.base.digest": digest,
        });
    }
    serde_json::to_vec(&doc).expect("json")
}

/// What the provenance records: what was built from what.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub containerfile_path: String,
    pub containerfile_digest: String,
    pub context_digest: Option<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// (reference, manifest digest) of every base image used.
    pub bases: Vec<(String, String)>,
    pub repository: Option<String>,
    pub commit: Option<String>,
    pub pipeline: Option<String>,
    pub source_date_epoch: u64,
}

/// The provenance statement (in-toto, SLSA provenance v1 predicate) for the
/// image manifest `subject_digest`.
pub fn provenance_document(p: &Provenance, subject_name: &str, subject_digest: &str) -> Vec<u8> {
    let mut source = serde_json::Map::new();
    if let Some(r) = &p.repository {
        source.insert("repository".into(), json!(r));
    }
    if let Some(c) = &p.commit {
        source.insert("commit".into(), json!(c));
    }
    let doc = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{
            "name": subject_name,
            "digest": {"sha256": subject_digest.trim_start_matches("sha256:")},
        }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://slipway.dev/containerfile-build/v1",
                "externalParameters": {
                    "containerfile": {"path": p.containerfile_path, "digest": p.containerfile_digest},
                    "context": p.context_digest,
                    "buildArgs": p.build_args,
                    "target": p.target,
                    "source": source,
                    "sourceDateEpoch": p.source_date_epoch,
                },
                "resolvedDependencies": p.bases.iter().map(|(name, digest)| json!({
                    "uri": name,
                    "digest": {"sha256": digest.trim_start_matches("sha256:")},
                })).collect::<Vec<_>>(),
            },
            "runDetails": {
                "builder": {
                    "id": "https://slipway.dev/builder",
                    "version": {"slipway": env!("CARGO_PKG_VERSION")},
                },
                "metadata": {"invocationId": p.pipeline},
            },
        },
    });
    serde_json::to_vec(&doc).expect("json")
}

/// The referrer manifest that attaches `statement` to the image manifest
/// `subject` (`(digest, size)`), and the empty config blob it names.
pub fn referrer_manifest(statement: &[u8], subject: (&str, u64)) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": PROVENANCE,
        "config": descriptor(EMPTY, &sha256(b"{}"), 2),
        "layers": [descriptor(PROVENANCE, &sha256(statement), statement.len() as u64)],
        "subject": descriptor(MANIFEST, subject.0, subject.1),
        "annotations": {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"},
    });
    serde_json::to_vec(&doc).expect("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn base_configs_are_read_back() {
        let doc = json!({"config": {
            "Env": ["PATH=/bin", "A=b=c"], "Cmd": ["sh"], "WorkingDir": "/w",
            "Labels": {"x": "y"}, "ExposedPorts": {"80/tcp": {}},
        }, "history": [{"created_by": "base"}]});
        let run = RunConfig::from_image(&doc);
        assert_eq!(run.env_get("A"), Some("b=c"));
        assert_eq!(run.cmd, Some(vec!["sh".to_owned()]));
        assert_eq!(run.workdir, "/w");
        assert_eq!(run.labels["x"], "y");
        assert!(run.exposed.contains("80/tcp"));
        assert_eq!(run.history.len(), 1);
        let bytes = config_document(&run, &[], 0);
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back["config"]["Env"], json!(["PATH=/bin", "A=b=c"]));
        assert_eq!(back["created"], "1970-01-01T00:00:00Z");
        assert_eq!(
            config_document(&run, &[], 0),
            bytes,
            "same input, same bytes"
        );
    }
}
