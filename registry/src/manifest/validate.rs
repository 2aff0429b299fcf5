//! Parsing and validating pushed manifests (untrusted input).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::RegistryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// What the registry needs to know about a manifest to store and link it.
#[derive(Debug)]
pub struct ParsedManifest {
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    /// Config and layers that must exist as blobs in the repository.
    pub blobs: Vec<Digest>,
    /// Child manifests of an index that must exist in the repository.
    pub children: Vec<Digest>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    urls: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Image,
    Index,
}

fn kind_of(media_type: &str) -> Result<Kind, RegistryError> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Ok(Kind::Index),
        t if DOCKER_SCHEMA1.contains(&t) => {
            Err(RegistryError::ManifestInvalid("Docker schema 1 manifests are not supported; push schema 2 or OCI".into()))
        }
        t => Err(RegistryError::ManifestInvalid(format!(
            "unsupported manifest media type {t:?}; expected one of {OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}, {DOCKER_LIST}"
        ))),
    }
}

fn descriptor_digest(d: &RawDescriptor, field: &str) -> Result<Digest, RegistryError> {
    if d.size < 0 {
        return Err(RegistryError::ManifestInvalid(format!(
            "{field}.size is negative ({})",
            d.size
        )));
    }
    if d.media_type.is_empty() {
        return Err(RegistryError::ManifestInvalid(format!(
            "{field}.mediaType is empty"
        )));
    }
    d.digest
        .parse()
        .map_err(|e| RegistryError::ManifestInvalid(format!("{field}.digest: {e}")))
}

/// Layers that live elsewhere (Docker "foreign" layers, OCI non-distributable
/// layers with URLs) are not required to be in the registry.
fn is_foreign(d: &RawDescriptor) -> bool {
    !d.urls.is_empty()
        && (d.media_type.contains("foreign") || d.media_type.contains("nondistributable"))
}

/// Parse a manifest body pushed with `content_type`. Checks: well-formed JSON,
/// schemaVersion 2, a supported media type that agrees with the body's own
/// `mediaType`, the fields its kind requires, and valid descriptors.
pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, RegistryError> {
    let raw: RawManifest = serde_json::from_slice(body)
        .map_err(|e| RegistryError::ManifestInvalid(format!("not a valid manifest: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(RegistryError::ManifestInvalid(match raw.schema_version {
            Some(v) => format!("schemaVersion is {v}; only 2 is supported"),
            None => "schemaVersion is missing".into(),
        }));
    }
    let header_type = content_type
        .map(|ct| ct.split(';').next().unwrap_or("").trim())
        .filter(|ct| {
            !ct.is_empty() && *ct != "application/json" && *ct != "application/octet-stream"
        });
    let media_type = match (header_type, raw.media_type.as_deref()) {
        (Some(h), Some(b)) if h != b => {
            return Err(RegistryError::ManifestInvalid(format!(
                "Content-Type {h:?} does not match the manifest's mediaType {b:?}"
            )))
        }
        (Some(h), _) => h.to_owned(),
        (None, Some(b)) => b.to_owned(),
        (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
        (None, None) => OCI_MANIFEST.to_owned(),
    };
    let kind = kind_of(&media_type)?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    let mut artifact_type = raw.artifact_type.clone();
    match kind {
        Kind::Image => {
            if raw.manifests.is_some() {
                return Err(RegistryError::ManifestInvalid(format!(
                    "{media_type} must not have \"manifests\""
                )));
            }
            let config = raw.config.as_ref().ok_or_else(|| {
                RegistryError::ManifestInvalid(format!("{media_type} requires \"config\""))
            })?;
            blobs.push(descriptor_digest(config, "config")?);
            let layers = raw.layers.as_ref().ok_or_else(|| {
                RegistryError::ManifestInvalid(format!("{media_type} requires \"layers\""))
            })?;
            for (i, layer) in layers.iter().enumerate() {
                let digest = descriptor_digest(layer, &format!("layers[{i}]"))?;
                if !is_foreign(layer) {
                    blobs.push(digest);
                }
            }
            if artifact_type.is_none() && media_type == OCI_MANIFEST {
                artifact_type = Some(config.media_type.clone());
            }
        }
        Kind::Index => {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(RegistryError::ManifestInvalid(format!(
                    "{media_type} must not have \"config\" or \"layers\""
                )));
            }
            let manifests = raw.manifests.as_ref().ok_or_else(|| {
                RegistryError::ManifestInvalid(format!("{media_type} requires \"manifests\""))
            })?;
            for (i, m) in manifests.iter().enumerate() {
                children.push(descriptor_digest(m, &format!("manifests[{i}]"))?);
            }
        }
    }
    let subject = raw
        .subject
        .as_ref()
        .map(|s| descriptor_digest(s, "subject"))
        .transpose()?;
    blobs.sort();
    blobs.dedup();
    children.sort();
    children.dedup();
    Ok(ParsedManifest {
        media_type,
        artifact_type,
        subject,
        blobs,
        children,
        annotations: raw.annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> String {
        Digest::of(s.as_bytes()).to_string()
    }

    fn image(extra: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":3}}]{extra}}}"#,
            d("c"),
            d("l")
        )
    }

    #[test]
    fn image_manifest_lists_its_blobs() {
        let m = parse(Some(OCI_MANIFEST), image("").as_bytes()).unwrap();
        assert_eq!(m.blobs.len(), 2);
        assert_eq!(
            m.artifact_type.as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        assert!(m.subject.is_none());
    }

    #[test]
    fn subject_is_recorded() {
        let body = image(&format!(
            r#","subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":10}}"#,
            d("s")
        ));
        let m = parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.subject.unwrap().to_string(), d("s"));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let cases: Vec<(Option<&str>, String, &str)> = vec![
            (None, "{not json".into(), "not a valid manifest"),
            (None, r#"{"schemaVersion":1}"#.into(), "only 2 is supported"),
            (Some(OCI_INDEX), image(""), "does not match"),
            (
                Some("application/vnd.docker.distribution.manifest.v1+json"),
                r#"{"schemaVersion":2}"#.into(),
                "schema 1",
            ),
            (
                Some("text/plain"),
                r#"{"schemaVersion":2}"#.into(),
                "unsupported manifest media type",
            ),
            (
                Some(OCI_MANIFEST),
                r#"{"schemaVersion":2,"layers":[]}"#.to_string(),
                "requires \"config\"",
            ),
            (
                None,
                image("").replace(&d("l"), "sha256:1234"),
                "layers[0].digest",
            ),
            (
                None,
                image("").replace("\"size\":3", "\"size\":-3"),
                "layers[0].size is negative",
            ),
            (
                Some(OCI_INDEX),
                format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}"}}"#),
                "requires \"manifests\"",
            ),
        ];
        for (ct, body, expect) in cases {
            let err = parse(ct, body.as_bytes()).unwrap_err();
            assert!(matches!(err, RegistryError::ManifestInvalid(_)), "{body}");
            assert!(
                err.to_string().contains(expect),
                "{err} should contain {expect:?}"
            );
        }
    }
}
