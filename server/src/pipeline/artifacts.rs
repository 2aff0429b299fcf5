//! Artifacts: one tar per job, `<data>/artifacts/<job id>.tar`, written to a
//! temporary file and renamed into place, then recorded in `jobs.artifacts_bytes`,
//! so a job that needs it either finds the whole file or none.

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// Largest artifact tar accepted.
pub const MAX_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifacts larger than {MAX_BYTES} bytes are refused")]
    TooLarge,
    #[error("artifacts {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("receiving the artifacts: {0}")]
    Body(String),
}

#[derive(Clone)]
pub struct Artifacts {
    root: PathBuf,
}

impl Artifacts {
    pub fn new(data_dir: &Path) -> Artifacts {
        Artifacts {
            root: data_dir.join("artifacts"),
        }
    }

    pub fn path(&self, job: i64) -> PathBuf {
        self.root.join(format!("{job}.tar"))
    }

    /// Store a job's artifacts from a body stream; returns the size.
    pub async fn store(&self, job: i64, body: axum::body::Body) -> Result<u64, ArtifactError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ArtifactError::Io { path, source }
        };
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(io(&self.root))?;
        let tmp = self
            .root
            .join(format!("{job}.tar.{}.tmp", rand::random::<u32>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
            let mut size = 0u64;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| ArtifactError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > MAX_BYTES {
                    return Err(ArtifactError::TooLarge);
                }
                file.write_all(&chunk).await.map_err(io(&tmp))?;
            }
            file.sync_all().await.map_err(io(&tmp))?;
            let target = self.path(job);
            tokio::fs::rename(&tmp, &target)
                .await
                .map_err(io(&target))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}
