//! The runner's own credentials (its `slr_` token), kept where no job can
//! reach them: a directory outside the work dir (which holds the jobs'
//! workspaces, the build contexts and everything containers are given),
//! mode 0700, the token file 0600.
//!
//! Runners before this kept the token at `<work dir>/runner-token`; it is
//! moved on start (written to the new place, synced, then removed from the
//! old one), so an upgrade neither loses the registration nor leaves a copy
//! in the work dir.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use slipway_builder::beneath::{self, Links};

/// The token's file name, in the credentials directory (and, formerly, in
/// the work dir).
const TOKEN_FILE: &str = "runner-token";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("the credentials directory {dir} is inside the work dir {work_dir}, which jobs' files are placed in; choose one outside it (--credentials-dir)")]
    InsideWorkDir { dir: PathBuf, work_dir: PathBuf },
    #[error("the work dir {work_dir} is inside the credentials directory {dir}, so jobs' files would be placed beside the token; choose them apart (--credentials-dir)")]
    WorkDirInside { dir: PathBuf, work_dir: PathBuf },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CredentialsError {
    let path = path.to_owned();
    move |source| CredentialsError::Io { what, path, source }
}

/// Beside the work dir: `/var/lib/slipway/runner` keeps its credentials in
/// `/var/lib/slipway/runner-credentials`.
pub fn default_dir(work_dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(work_dir).unwrap_or_else(|_| work_dir.to_owned());
    let name = absolute
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slipway-runner".to_owned());
    absolute
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!("{name}-credentials"))
}

/// Where a runner's credentials live.
#[derive(Debug, Clone)]
pub struct Credentials {
    dir: PathBuf,
}

impl Credentials {
    /// Create `dir` (0700) if needed; refused inside `work_dir` (which must
    /// exist). Moves a token left in the work dir by an older runner.
    pub fn open(dir: &Path, work_dir: &Path) -> Result<Credentials, CredentialsError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io("creating", dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restricting", dir))?;
        let canonical = dir.canonicalize().map_err(io("opening", dir))?;
        let work = work_dir.canonicalize().map_err(io("opening", work_dir))?;
        // Either way round (equal paths included): no job's files beside
        // the token, and no token under the jobs' files.
        if canonical.starts_with(&work) {
            return Err(CredentialsError::InsideWorkDir {
                dir: canonical,
                work_dir: work,
            });
        }
        if work.starts_with(&canonical) {
            return Err(CredentialsError::WorkDirInside {
                dir: canonical,
                work_dir: work,
            });
        }
        let credentials = Credentials { dir: canonical };
        credentials.migrate(&work)?;
        Ok(credentials)
    }

    /// The token file.
    pub fn token_path(&self) -> PathBuf {
        self.dir.join(TOKEN_FILE)
    }

    /// The stored token, if the runner is registered.
    pub fn token(&self) -> Result<Option<String>, CredentialsError> {
        let path = self.token_path();
        match beneath::read_to_string(&self.dir, TOKEN_FILE, Links::Refuse, 4096) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(io("reading", &path)(std::io::Error::other(e))),
        }
    }

    /// Keep a new token (0600, synced).
    pub fn store(&self, token: &str) -> Result<(), CredentialsError> {
        let path = self.token_path();
        write_private(&path, token).map_err(io("writing", &path))
    }

    /// `<work dir>/runner-token` of an older runner to the credentials dir.
    fn migrate(&self, work_dir: &Path) -> Result<(), CredentialsError> {
        let old = work_dir.join(TOKEN_FILE);
        let text = match beneath::read_to_string(work_dir, TOKEN_FILE, Links::Refuse, 4096) {
            Ok(text) => text,
            Err(e) if e.is_not_found() => return Ok(()),
            // Not a file an older runner wrote (a symlink, say): not read,
            // not moved, but not left in the work dir either.
            Err(e) => {
                tracing::warn!(path = %old.display(), error = %e, "removing what is not a runner token");
                return std::fs::remove_file(&old).map_err(io("removing", &old));
            }
        };
        if self.token()?.is_none() {
            self.store(text.trim())?;
        }
        std::fs::remove_file(&old).map_err(io("removing", &old))?;
        tracing::info!(from = %old.display(), to = %self.token_path().display(), "moved the runner token out of the work dir");
        Ok(())
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn the_default_is_beside_the_work_dir() {
        assert_eq!(
            default_dir(Path::new("/var/lib/slipway/runner")),
            Path::new("/var/lib/slipway/runner-credentials")
        );
        assert_eq!(
            default_dir(Path::new("/var/lib/slipway/runner/")),
            Path::new("/var/lib/slipway/runner-credentials")
        );
        assert_eq!(
            default_dir(Path::new("/")),
            Path::new("/slipway-runner-credentials")
        );
    }

    #[test]
    fn a_token_is_stored_privately_outside_the_work_dir() {
        let top = tempfile::tempdir().unwrap();
        let work = top.path().join("work");
        std::fs::create_dir(&work).unwrap();
        let dir = default_dir(&work);
        let c = Credentials::open(&dir, &work).unwrap();
        assert_eq!(c.token().unwrap(), None);
        c.store("slr_abc").unwrap();
        assert_eq!(c.token().unwrap().as_deref(), Some("slr_abc"));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&c.token_path()), 0o600);
        assert!(!c.token_path().starts_with(&work));

        let err = Credentials::open(&work.join("creds"), &work).unwrap_err();
        assert!(
            matches!(err, CredentialsError::InsideWorkDir { .. }),
            "{err}"
        );
        let err = Credentials::open(&work, &work).unwrap_err();
        assert!(
            matches!(err, CredentialsError::InsideWorkDir { .. }),
            "{err}"
        );
    }

    /// The work dir inside the credentials directory was accepted: jobs'
    /// workspaces (`<work>/jobs`) then lie under the token's directory.
    #[test]
    fn a_work_dir_inside_the_credentials_dir_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let creds = top.path().join("creds");
        let work = creds.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let err = Credentials::open(&creds, &work).unwrap_err();
        assert!(
            matches!(err, CredentialsError::WorkDirInside { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("is inside the credentials directory"),
            "{err}"
        );
    }

    #[test]
    fn an_old_token_in_the_work_dir_is_moved_not_lost() {
        let top = tempfile::tempdir().unwrap();
        let work = top.path().join("work");
        std::fs::create_dir(&work).unwrap();
        std::fs::write(work.join("runner-token"), "slr_old\n").unwrap();
        let dir = top.path().join("creds");
        // A loose directory mode is tightened.
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let c = Credentials::open(&dir, &work).unwrap();
        assert_eq!(c.token().unwrap().as_deref(), Some("slr_old"));
        assert!(!work.join("runner-token").exists(), "left in the work dir");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&c.token_path()), 0o600);
        // Opening again changes nothing.
        let c = Credentials::open(&dir, &work).unwrap();
        assert_eq!(c.token().unwrap().as_deref(), Some("slr_old"));

        // A symlink where the old token was is removed, never followed.
        let elsewhere = top.path().join("elsewhere");
        std::fs::write(&elsewhere, "not a token").unwrap();
        std::os::unix::fs::symlink(&elsewhere, work.join("runner-token")).unwrap();
        let c = Credentials::open(&dir, &work).unwrap();
        assert_eq!(c.token().unwrap().as_deref(), Some("slr_old"));
        assert!(work.join("runner-token").symlink_metadata().is_err());
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "not a token");
    }
}
