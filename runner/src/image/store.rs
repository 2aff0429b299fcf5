//! The local image index: which manifest a reference pointed to when it was last
//! pulled, with the image config and layer digests, so an image whose layers are
//! cached starts without contacting any registry (Docker's and podman's
//! `--pull missing`, their default).
//!
//! One JSON file per reference under `images/`, named by the sha256 of the full
//! reference (`host/repo:tag` and `host/repo@sha256:…` both get one), written to
//! a temp file and renamed, so readers never see half a record. The config's
//! digest is checked again on every read.

use std::io;
use std::path::{Path, PathBuf};

use oci_client::Reference;
use sha2::{Digest as _, Sha256};

/// What one pull resolved a reference to.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    pub reference: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// The image config exactly as the registry served it.
    pub config: String,
    /// Bottom layer first.
    pub layers: Vec<String>,
    /// Compressed sizes and media types of `layers` (records written before
    /// these were kept have none; images are pulled again for builds then).
    #[serde(default)]
    pub layer_sizes: Vec<u64>,
    #[serde(default)]
    pub layer_media_types: Vec<String>,
}

impl ImageRecord {
    /// Does the stored config still hash to its digest?
    pub fn config_intact(&self) -> bool {
        format!(
            "sha256:{}",
            hex::encode(Sha256::digest(self.config.as_bytes()))
        ) == self.config_digest
    }
}

#[derive(Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

fn key(reference: &str) -> String {
    hex::encode(Sha256::digest(reference.as_bytes()))
}

/// `host/repo@digest` for a reference pulled by tag.
fn by_digest(reference: &Reference, digest: &str) -> String {
    format!(
        "{}/{}@{digest}",
        reference.resolve_registry(),
        reference.repository()
    )
}

impl ImageStore {
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<ImageStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(ImageStore { dir })
    }

    fn path(&self, reference: &str) -> PathBuf {
        self.dir.join(format!("{}.json", key(reference)))
    }

    /// The record for `reference`, if one is stored and intact.
    pub fn lookup(&self, reference: &Reference) -> Option<ImageRecord> {
        let whole = reference.whole();
        let text = std::fs::read(self.path(&whole)).ok()?;
        let record: ImageRecord = serde_json::from_slice(&text).ok()?;
        (record.reference == whole && record.config_intact()).then_some(record)
    }

    /// Store what `reference` resolved to, under its own name and by digest.
    pub fn record(&self, reference: &Reference, record: &ImageRecord) -> io::Result<()> {
        let digest_name = by_digest(reference, &record.manifest_digest);
        for name in [reference.whole(), digest_name] {
            let record = ImageRecord {
                reference: name.clone(),
                ..record.clone()
            };
            write_atomic(&self.path(&name), &serde_json::to_vec_pretty(&record)?)?;
        }
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(config: &str) -> ImageRecord {
        ImageRecord {
            reference: String::new(),
            manifest_digest: format!("sha256:{}", "a".repeat(64)),
            config_digest: format!("sha256:{}", hex::encode(Sha256::digest(config))),
            config: config.to_owned(),
            layers: vec![format!("sha256:{}", "b".repeat(64))],
            layer_sizes: vec![10],
            layer_media_types: vec!["application/vnd.oci.image.layer.v1.tar+gzip".into()],
        }
    }

    #[test]
    fn records_by_tag_and_by_digest_and_rejects_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let tag: Reference = "localhost:5000/library/busybox:latest".parse().unwrap();
        assert!(store.lookup(&tag).is_none());
        store.record(&tag, &record("{}")).unwrap();
        let found = store.lookup(&tag).unwrap();
        assert_eq!(found.reference, "localhost:5000/library/busybox:latest");
        assert_eq!(found.layers.len(), 1);
        let digest: Reference = format!("localhost:5000/library/busybox@sha256:{}", "a".repeat(64))
            .parse()
            .unwrap();
        assert_eq!(
            store.lookup(&digest).unwrap().manifest_digest,
            found.manifest_digest
        );
        let other: Reference = "localhost:5000/library/busybox:1.0".parse().unwrap();
        assert!(store.lookup(&other).is_none());

        // A config edited on disk no longer matches its digest: not used.
        let path = store.path(&tag.whole());
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"{}\"", "\"{ }\"");
        std::fs::write(&path, text).unwrap();
        assert!(store.lookup(&tag).is_none());
    }
}
