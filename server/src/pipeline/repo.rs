//! Git repositories that run pipelines: their rows, and the bare mirror the
//! server keeps of each (`<data>/git/<id>.git`), read with git2.
//!
//! Fetching runs `git fetch` (the Debian `git` package): git's transports bring
//! https with the system's certificates, credential helpers and ssh, while
//! git2's https would link OpenSSL into a server that otherwise uses rustls,
//! and initialising it costs ~4 MiB of resident memory on first use.
//!
//! Everything git2 does is blocking; callers run it in `spawn_blocking`. Fetches
//! of one repository are serialised by a per-repository lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sqlx::SqlitePool;

use crate::db::now_ms;

pub const SPEC_FILE: &str = ".slipway.yml";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(
        "repository name {0:?} must be 1-100 of a-z 0-9 . _ - with at most one '/' between parts"
    )]
    BadName(String),
    #[error(
        "branch {0:?} is not a git branch name (at most 255 bytes, git check-ref-format rules)"
    )]
    BadBranch(String),
    #[error("repository URL {0:?} must be http(s)://, git://, ssh:// or an absolute local path")]
    BadUrl(String),
    #[error(
        "repository URL {0:?} is inside the server's data directory (its mirrors, blobs and \
         keys): refused"
    )]
    InsideDataDir(String),
    #[error(
        "repository {name:?} would share a namespace with repository {other:?}: a pipeline of \
         a one-part name `team` pushes and pulls team and team/*, so `team` and `team/...` \
         cannot both be registered"
    )]
    Overlaps { name: String, other: String },
    #[error("repository {0:?} already exists")]
    Exists(String),
    #[error("no repository named {0:?}")]
    NotFound(String),
    #[error("{repo}: {what}: {message}")]
    Git {
        repo: String,
        what: String,
        message: String,
    },
    #[error("{repo}: no ref or commit {wanted:?}")]
    UnknownRef { repo: String, wanted: String },
    #[error(
        "{repo}: its default branch {branch:?} (recorded when it was added) is not in the \
         repository; its branches are {branches}: give a ref (slipway run --ref BRANCH)"
    )]
    NoDefaultBranch {
        repo: String,
        branch: String,
        branches: String,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug, Clone)]
pub struct GitRepo {
    pub id: i64,
    pub name: String,
    pub url: String,
    pub default_branch: String,
    pub webhook_secret: String,
    /// Patterns of Slipway's registry its pipelines may pull from besides
    /// their own repository (`pipeline::pull_allow`).
    pub pull_allow: Vec<String>,
}

/// A commit, resolved from a ref.
#[derive(Debug, Clone)]
pub struct Commit {
    pub sha: String,
    /// The full ref it was reached from (`refs/heads/main`), or the sha.
    pub git_ref: String,
    pub message: String,
    pub author: String,
    /// Committer time, seconds since the epoch (builds' SOURCE_DATE_EPOCH).
    pub time: i64,
}

pub fn valid_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    (1..=100).contains(&name.len())
        && parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

/// The longest ref (a branch, tag, full ref or commit) the API takes: 255
/// bytes, the longest file name, which is where git keeps a loose ref.
pub const MAX_REF: usize = 255;

/// A ref as `git check-ref-format` takes it: a full ref (`refs/...`) as it
/// is, a short one (a branch, tag or commit) as a branch would be named.
pub fn valid_ref(r: &str) -> bool {
    if r.is_empty() || r.len() > MAX_REF {
        return false;
    }
    let full = if r.starts_with("refs/") {
        r.to_owned()
    } else {
        format!("refs/heads/{r}")
    };
    git2::Reference::is_valid_name(&full)
}

fn valid_url(url: &str) -> bool {
    ["http://", "https://", "git://", "ssh://"]
        .iter()
        .any(|p| url.starts_with(p))
        || local_path(url).is_some()
}

/// The path of a local source (`/srv/git/app.git` or `file:///srv/...`);
/// `None` for a remote URL or a local one spelled so that it could hide where
/// it leads (`file://host/...`, percent escapes).
fn local_path(url: &str) -> Option<&Path> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    (path.starts_with('/') && !path.contains('%')).then(|| Path::new(path))
}

/// `path` with `.` and `..` resolved by the text alone (for a path that does
/// not exist, or a symlink's own place).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Refuse a local source that leads into `data_dir`: by its text, where its
/// symlinks resolve to, and where git would find the repository's own
/// directories (a `.git` file's `gitdir:`, a worktree's common dir). The
/// server's mirrors of other repositories, its blobs and keys live there.
fn check_source(url: &str, data_dir: &Path) -> Result<(), RepoError> {
    let Some(path) = local_path(url) else {
        return Ok(());
    };
    let roots: Vec<PathBuf> = [Some(lexical(data_dir)), data_dir.canonicalize().ok()]
        .into_iter()
        .flatten()
        .collect();
    let mut places = vec![lexical(path)];
    places.extend(path.canonicalize().ok());
    if let Ok(git) = git2::Repository::open_ext(
        path,
        git2::RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    ) {
        for dir in [git.path(), git.commondir()] {
            places.push(lexical(dir));
            places.extend(dir.canonicalize().ok());
        }
    }
    if places
        .iter()
        .any(|p| roots.iter().any(|root| p.starts_with(root)))
    {
        return Err(RepoError::InsideDataDir(url.to_owned()));
    }
    Ok(())
}

/// Rows and mirrors.
#[derive(Clone)]
pub struct Repos {
    db: SqlitePool,
    root: PathBuf,
    /// Local sources may not lead here ([`check_source`]).
    data_dir: PathBuf,
    locks: Arc<Mutex<HashMap<i64, Arc<Mutex<()>>>>>,
}

fn row(r: (i64, String, String, String, String, String)) -> GitRepo {
    GitRepo {
        id: r.0,
        name: r.1,
        url: r.2,
        default_branch: r.3,
        webhook_secret: r.4,
        pull_allow: serde_json::from_str(&r.5).unwrap_or_default(),
    }
}

const COLUMNS: &str = "id, name, url, default_branch, webhook_secret, pull_allow";

impl Repos {
    pub fn new(db: SqlitePool, data_dir: &Path) -> Repos {
        Repos {
            db,
            root: data_dir.join("git"),
            data_dir: data_dir.to_owned(),
            locks: Arc::default(),
        }
    }

    pub fn mirror_path(&self, id: i64) -> PathBuf {
        self.root.join(format!("{id}.git"))
    }

    pub async fn add(
        &self,
        name: &str,
        url: &str,
        default_branch: &str,
    ) -> Result<GitRepo, RepoError> {
        if !valid_name(name) {
            return Err(RepoError::BadName(name.to_owned()));
        }
        if !valid_url(url) || url.chars().any(char::is_whitespace) {
            return Err(RepoError::BadUrl(url.to_owned()));
        }
        check_source(url, &self.data_dir)?;
        if !valid_ref(default_branch) || default_branch.starts_with("refs/") {
            return Err(RepoError::BadBranch(default_branch.to_owned()));
        }
        let secret = hex::encode(rand::random::<[u8; 24]>());
        // Images live under the repository's name and below it (`team` and
        // `team/*`), so `team` and `team/app` would share images, job tokens
        // and pull rights: refuse the second, in one statement so that two
        // concurrent registrations cannot both pass.
        let parent = name.split_once('/').map_or("", |(first, _)| first);
        let below = format!("{name}/");
        let inserted = sqlx::query_scalar::<_, i64>(
            "INSERT INTO git_repos (name, url, default_branch, webhook_secret, created_at)
             SELECT ?, ?, ?, ?, ?
             WHERE NOT EXISTS (SELECT 1 FROM git_repos
                               WHERE name = ? OR substr(name, 1, length(?)) = ?)
             RETURNING id",
        )
        .bind(name)
        .bind(url)
        .bind(default_branch)
        .bind(&secret)
        .bind(now_ms())
        .bind(parent)
        .bind(&below)
        .bind(&below)
        .fetch_optional(&self.db)
        .await;
        let id = match inserted {
            Ok(Some(id)) => id,
            Ok(None) => {
                let other: String = sqlx::query_scalar(
                    "SELECT name FROM git_repos
                     WHERE name = ? OR substr(name, 1, length(?)) = ? ORDER BY name LIMIT 1",
                )
                .bind(parent)
                .bind(&below)
                .bind(&below)
                .fetch_optional(&self.db)
                .await?
                .unwrap_or_default();
                return Err(RepoError::Overlaps {
                    name: name.to_owned(),
                    other,
                });
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(RepoError::Exists(name.to_owned()))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(GitRepo {
            id,
            name: name.to_owned(),
            url: url.to_owned(),
            default_branch: default_branch.to_owned(),
            webhook_secret: secret,
            pull_allow: super::pull_allow::DEFAULT
                .iter()
                .map(|p| (*p).to_owned())
                .collect(),
        })
    }

    pub async fn get(&self, name: &str) -> Result<GitRepo, RepoError> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM git_repos WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.db)
            .await?
            .map(row)
            .ok_or_else(|| RepoError::NotFound(name.to_owned()))
    }

    pub async fn by_id(&self, id: i64) -> Result<GitRepo, RepoError> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM git_repos WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.db)
            .await?
            .map(row)
            .ok_or_else(|| RepoError::NotFound(format!("#{id}")))
    }

    pub async fn list(&self) -> Result<Vec<GitRepo>, RepoError> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM git_repos ORDER BY name"))
                .fetch_all(&self.db)
                .await?
                .into_iter()
                .map(row)
                .collect(),
        )
    }

    fn lock(&self, id: i64) -> Arc<Mutex<()>> {
        self.locks.lock().unwrap().entry(id).or_default().clone()
    }

    /// Fetch branches and tags (and `extra` refspecs) into the mirror, creating
    /// it on first use.
    pub async fn fetch(&self, repo: &GitRepo, extra: Vec<String>) -> Result<(), RepoError> {
        let path = self.mirror_path(repo.id);
        let lock = self.lock(repo.id);
        let repo = repo.clone();
        let data_dir = self.data_dir.clone();
        blocking(&repo.name.clone(), "fetch", move || {
            let _held = lock.lock().unwrap();
            // Again at each fetch: a symlink on the way may have changed.
            check_source(&repo.url, &data_dir)?;
            fetch_blocking(&repo, &path, &extra)
        })
        .await
    }

    /// Make the branch the remote's HEAD names `repo`'s default branch (a
    /// remote whose HEAD names none keeps the one it has).
    pub async fn record_remote_head(&self, repo: &mut GitRepo) -> Result<(), RepoError> {
        let remote = repo.clone();
        let Some(branch) = blocking(&repo.name.clone(), "remote HEAD", move || {
            remote_head(&remote)
        })
        .await?
        else {
            return Ok(());
        };
        if !valid_ref(&branch) {
            return Err(RepoError::BadBranch(branch));
        }
        sqlx::query("UPDATE git_repos SET default_branch = ? WHERE id = ?")
            .bind(&branch)
            .bind(repo.id)
            .execute(&self.db)
            .await?;
        repo.default_branch = branch;
        Ok(())
    }

    /// Resolve the default branch: when it is not in the repository, the
    /// error says which it is and which branches there are.
    pub async fn resolve_default(&self, repo: &GitRepo) -> Result<Commit, RepoError> {
        match self.resolve(repo, &repo.default_branch).await {
            Err(RepoError::UnknownRef { .. }) => {
                let names: Vec<String> = self
                    .branches(repo)
                    .await?
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
                Err(RepoError::NoDefaultBranch {
                    repo: repo.name.clone(),
                    branch: repo.default_branch.clone(),
                    branches: if names.is_empty() {
                        "none".into()
                    } else {
                        names.join(", ")
                    },
                })
            }
            other => other,
        }
    }

    /// Resolve a branch, tag, full ref or commit sha in the mirror.
    pub async fn resolve(&self, repo: &GitRepo, wanted: &str) -> Result<Commit, RepoError> {
        let path = self.mirror_path(repo.id);
        let (name, wanted) = (repo.name.clone(), wanted.to_owned());
        blocking(&name.clone(), "resolve", move || {
            let git = open(&name, &path)?;
            let candidates = [
                wanted.clone(),
                format!("refs/heads/{wanted}"),
                format!("refs/tags/{wanted}"),
            ];
            for candidate in &candidates {
                if let Ok(reference) = git.find_reference(candidate) {
                    let commit = reference
                        .peel_to_commit()
                        .map_err(|e| git_err(&name, "peel", e))?;
                    return Ok(describe(&commit, candidate));
                }
            }
            let is_sha =
                (7..=40).contains(&wanted.len()) && wanted.bytes().all(|b| b.is_ascii_hexdigit());
            if is_sha {
                if let Ok(object) = git.revparse_single(&wanted) {
                    if let Ok(commit) = object.peel_to_commit() {
                        let sha = commit.id().to_string();
                        return Ok(describe(&commit, &sha));
                    }
                }
            }
            Err(RepoError::UnknownRef {
                repo: name.clone(),
                wanted: wanted.clone(),
            })
        })
        .await
    }

    /// The contents of `path` at `sha`, or `None` if the commit has no such file.
    /// The mirror's branches and the commit each points to, by name.
    pub async fn branches(&self, repo: &GitRepo) -> Result<Vec<(String, String)>, RepoError> {
        let path = self.mirror_path(repo.id);
        let name = repo.name.clone();
        blocking(&name.clone(), "branches", move || {
            let git = open(&name, &path)?;
            let refs = git
                .references_glob("refs/heads/*")
                .map_err(|e| git_err(&name, "listing branches", e))?;
            let mut out = Vec::new();
            for r in refs.flatten() {
                if let (Some(full), Some(target)) = (r.name(), r.target()) {
                    let short = full.trim_start_matches("refs/heads/").to_owned();
                    out.push((short, target.to_string()));
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    pub async fn read_file(
        &self,
        repo: &GitRepo,
        sha: &str,
        file: &str,
        max_bytes: usize,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let path = self.mirror_path(repo.id);
        let (name, sha, file) = (repo.name.clone(), sha.to_owned(), file.to_owned());
        blocking(&name.clone(), "read", move || {
            let git = open(&name, &path)?;
            let oid = git2::Oid::from_str(&sha).map_err(|e| git_err(&name, "commit id", e))?;
            let commit = git
                .find_commit(oid)
                .map_err(|e| git_err(&name, "find commit", e))?;
            let tree = commit.tree().map_err(|e| git_err(&name, "tree", e))?;
            let Ok(entry) = tree.get_path(Path::new(&file)) else {
                return Ok(None);
            };
            let blob = entry
                .to_object(&git)
                .and_then(|o| o.peel_to_blob())
                .map_err(|e| git_err(&name, &format!("reading {file}"), e))?;
            if blob.size() > max_bytes {
                return Err(RepoError::Git {
                    repo: name.clone(),
                    what: format!("reading {file}"),
                    message: format!("{} bytes; at most {max_bytes} are read", blob.size()),
                });
            }
            Ok(Some(blob.content().to_vec()))
        })
        .await
    }

    /// Write the commit's tree as a tar to `out` (file modes kept, symlinks as
    /// symlinks, submodules left out, every mtime the commit time), so runners
    /// need no repository credentials.
    pub async fn write_source_tar(
        &self,
        repo: &GitRepo,
        sha: &str,
        out: PathBuf,
    ) -> Result<(), RepoError> {
        let path = self.mirror_path(repo.id);
        let (name, sha) = (repo.name.clone(), sha.to_owned());
        blocking(&name.clone(), "source archive", move || {
            let git = open(&name, &path)?;
            let oid = git2::Oid::from_str(&sha).map_err(|e| git_err(&name, "commit id", e))?;
            let commit = git
                .find_commit(oid)
                .map_err(|e| git_err(&name, "find commit", e))?;
            let tree = commit.tree().map_err(|e| git_err(&name, "tree", e))?;
            let file = std::fs::File::create(&out).map_err(|e| io_err(&name, &out, e))?;
            let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
            let mtime = commit.time().seconds().max(0) as u64;
            let mut failure = None;
            tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                let entry_path = format!("{dir}{}", entry.name().unwrap_or(""));
                let result = (|| -> Result<(), RepoError> {
                    let mut header = tar::Header::new_gnu();
                    header.set_mtime(mtime);
                    header.set_uid(0);
                    header.set_gid(0);
                    match entry.filemode() {
                        0o040000 => {
                            header.set_entry_type(tar::EntryType::Directory);
                            header.set_mode(0o755);
                            header.set_size(0);
                            tar.append_data(&mut header, format!("{entry_path}/"), std::io::empty())
                                .map_err(|e| io_err(&name, &out, e))
                        }
                        0o120000 => {
                            let blob = git
                                .find_blob(entry.id())
                                .map_err(|e| git_err(&name, "blob", e))?;
                            let target = String::from_utf8_lossy(blob.content()).into_owned();
                            header.set_entry_type(tar::EntryType::Symlink);
                            header.set_mode(0o777);
                            header.set_size(0);
                            tar.append_link(&mut header, &entry_path, target)
                                .map_err(|e| io_err(&name, &out, e))
                        }
                        mode @ (0o100644 | 0o100755) => {
                            let blob = git
                                .find_blob(entry.id())
                                .map_err(|e| git_err(&name, "blob", e))?;
                            header.set_entry_type(tar::EntryType::Regular);
                            header.set_mode(if mode == 0o100755 { 0o755 } else { 0o644 });
                            header.set_size(blob.size() as u64);
                            tar.append_data(&mut header, &entry_path, blob.content())
                                .map_err(|e| io_err(&name, &out, e))
                        }
                        _ => Ok(()), // submodules (commits) are not part of the tree's files
                    }
                })();
                match result {
                    Ok(()) => git2::TreeWalkResult::Ok,
                    Err(e) => {
                        failure = Some(e);
                        git2::TreeWalkResult::Abort
                    }
                }
            })
            .map_err(|e| git_err(&name, "walking the tree", e))
            .or_else(|e| if failure.is_some() { Ok(()) } else { Err(e) })?;
            if let Some(e) = failure {
                return Err(e);
            }
            tar.into_inner()
                .and_then(|mut w| std::io::Write::flush(&mut w))
                .map_err(|e| io_err(&name, &out, e))
        })
        .await
    }
}

fn describe(commit: &git2::Commit<'_>, git_ref: &str) -> Commit {
    Commit {
        sha: commit.id().to_string(),
        git_ref: git_ref.to_owned(),
        message: commit.message().unwrap_or("").trim_end().to_owned(),
        author: commit.author().name().unwrap_or("").to_owned(),
        time: commit.time().seconds(),
    }
}

fn git_err(repo: &str, what: &str, e: git2::Error) -> RepoError {
    RepoError::Git {
        repo: repo.to_owned(),
        what: what.to_owned(),
        message: e.message().to_owned(),
    }
}

fn io_err(repo: &str, path: &Path, e: std::io::Error) -> RepoError {
    RepoError::Git {
        repo: repo.to_owned(),
        what: format!("writing {}", path.display()),
        message: e.to_string(),
    }
}

fn open(repo: &str, path: &Path) -> Result<git2::Repository, RepoError> {
    git2::Repository::open_bare(path).map_err(|e| git_err(repo, "opening the mirror", e))
}

async fn blocking<T: Send + 'static>(
    repo: &str,
    what: &str,
    f: impl FnOnce() -> Result<T, RepoError> + Send + 'static,
) -> Result<T, RepoError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RepoError::Git {
            repo: repo.to_owned(),
            what: what.to_owned(),
            message: e.to_string(),
        })?
}

fn fetch_blocking(repo: &GitRepo, path: &Path, extra: &[String]) -> Result<(), RepoError> {
    if git2::Repository::open_bare(path).is_err() {
        std::fs::create_dir_all(path).map_err(|e| io_err(&repo.name, path, e))?;
        git2::Repository::init_bare(path)
            .map_err(|e| git_err(&repo.name, "creating the mirror", e))?;
    }
    let mut refspecs = vec![
        "+refs/heads/*:refs/heads/*".to_owned(),
        "+refs/tags/*:refs/tags/*".to_owned(),
    ];
    refspecs.extend(extra.iter().cloned());
    git(
        repo,
        std::process::Command::new("git")
            .arg("--git-dir")
            .arg(path)
            .args(["fetch", "--prune", "--quiet", "--no-write-fetch-head", "--"])
            .arg(&repo.url)
            .args(&refspecs),
        format!("fetching {}", repo.url),
    )
    .map(drop)
}

/// The branch the remote's HEAD names (`git ls-remote --symref URL HEAD`
/// prints `ref: refs/heads/NAME<TAB>HEAD`), if it names one.
fn remote_head(repo: &GitRepo) -> Result<Option<String>, RepoError> {
    let out = git(
        repo,
        std::process::Command::new("git")
            .args(["ls-remote", "--symref", "--"])
            .arg(&repo.url)
            .arg("HEAD"),
        format!("reading the HEAD of {}", repo.url),
    )?;
    Ok(out.lines().find_map(|line| {
        let name = line
            .strip_prefix("ref: refs/heads/")?
            .strip_suffix("\tHEAD")?;
        Some(name.to_owned())
    }))
}

/// Run `command` (git) for `repo`, what it does being `what`; its standard
/// output. The transport is git's own (https with the system's
/// certificates and credential helpers, ssh, local paths); never a prompt,
/// and killed past [`FETCH_TIMEOUT`].
fn git(
    repo: &GitRepo,
    command: &mut std::process::Command,
    what: String,
) -> Result<String, RepoError> {
    let mut child = command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| RepoError::Git {
            repo: repo.name.clone(),
            what: format!("running git for {what} (is git installed?)"),
            message: e.to_string(),
        })?;
    // Read on threads, so that a full pipe never stops git.
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + FETCH_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| RepoError::Git {
            repo: repo.name.clone(),
            what: what.clone(),
            message: e.to_string(),
        })? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RepoError::Git {
                repo: repo.name.clone(),
                what,
                message: format!("no answer within {FETCH_TIMEOUT:?}"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    Err(RepoError::Git {
        repo: repo.name.clone(),
        what,
        message: stderr.trim().chars().take(500).collect(),
    })
}

/// A fetch that takes longer is stopped.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
