//! The build context of a Containerfile build: which files `COPY` and `ADD`
//! may read, what a source argument names, and a digest of what it named for
//! the build cache.
//!
//! - `.dockerignore` (or `.containerignore` when there is none) as Docker reads
//!   it: `#` comments, patterns cleaned of a leading `/` or `./` and a trailing
//!   `/`, `*` and `?` within one path component, `[...]` classes, `**` for any
//!   number of directories, `\` escapes and `!` exceptions. A rule matches a
//!   path when it matches the path or one of its parent directories; the last
//!   matching rule decides.
//! - A source argument is cleaned lexically and must stay inside the context.
//!   Symlinks on the way to it (the source itself included) are followed by
//!   hand, one component at a time with the context as the root, and refused
//!   when they lead outside. Inside a copied directory symlinks are kept as
//!   links, never followed, and refused when their target leaves the context:
//!   an absolute target always does.
//! - Device nodes, sockets and fifos are refused. The ignore file is read
//!   with `beneath` and refused when it is a symlink, wherever it points.
//! - Files are read by their resolved, canonical path with
//!   `beneath::open_canonical`: a component turned into a symlink after the
//!   resolution makes the read fail, never leave the context.
//! - The digest covers names, kinds, permission bits, sizes, link targets and
//!   file contents, never times, owners or inode numbers, so a fresh checkout
//!   of the same commit hashes the same.
//!
//! A directory excluded by the ignore file is still walked when an exception
//! could re-include something under it; it is then listed (so its kept
//! descendants have a parent), and otherwise left out.

use std::collections::VecDeque;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use crate::beneath;
use crate::quote::{quoted, short};

/// How many symlinks one source may go through before it is called a loop.
const MAX_LINKS: usize = 40;
/// Read buffer for hashing file contents.
const HASH_BUFFER: usize = 256 * 1024;
/// Threads hashing file contents.
const HASH_THREADS: usize = 2;

/// The longest ignore file read.
const IGNORE_LIMIT: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// A file of the context that could not be opened inside it (a symlink,
    /// or not a regular file).
    #[error(transparent)]
    Open(#[from] beneath::OpenError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: invalid pattern {}: {reason}", quoted(.pattern))]
    Pattern {
        /// `.dockerignore` or `.containerignore`.
        file: String,
        line: usize,
        pattern: String,
        reason: String,
    },
    /// A source argument with an invalid glob (`src/[a`).
    #[error("{}: invalid pattern: {reason}", short(.arg))]
    Glob { arg: String, reason: String },
    /// `arg` (the source as written) leads outside the context, lexically or
    /// through `link`.
    #[error("{}: {}", short(.arg), escape_detail(.link))]
    Escape {
        arg: String,
        link: Option<EscapingLink>,
    },
    /// Nothing in the context (or nothing the ignore file lets through) is
    /// named by `arg`.
    #[error("{}: {}", short(.arg), not_found_detail(*.glob, .excluded_by))]
    NotFound {
        arg: String,
        /// `arg` is a glob.
        glob: bool,
        /// The ignore file, when it excluded what `arg` names.
        excluded_by: Option<String>,
    },
    #[error("{}: too many levels of symbolic links (at {})", short(.arg), short(.link))]
    Loop { arg: String, link: String },
    /// A device node, socket or fifo at `path` (relative to the context).
    #[error("{}: {kind} cannot be copied from the build context", short(.path))]
    Special { path: String, kind: &'static str },
    #[error("{path}: file names in the build context must be UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}: changed while it was being hashed ({expected} bytes became {actual})")]
    Changed {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
}

/// A symlink whose target leaves the context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapingLink {
    /// The link, relative to the context.
    pub path: String,
    pub target: PathBuf,
}

fn escape_detail(link: &Option<EscapingLink>) -> String {
    match link {
        None => "outside the build context".to_owned(),
        Some(link) => format!(
            "symlink {} -> {} points outside the build context",
            short(&link.path),
            short(&link.target.to_string_lossy())
        ),
    }
}

fn not_found_detail(glob: bool, excluded_by: &Option<String>) -> String {
    match (glob, excluded_by) {
        (false, None) => "not found in the build context".to_owned(),
        (false, Some(file)) => format!("not found in the build context (excluded by {file})"),
        (true, None) => {
            "no source files were specified (nothing in the build context matches)".to_owned()
        }
        (true, Some(file)) => {
            format!("no source files were specified (every match is excluded by {file})")
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContextError + '_ {
    move |source| ContextError::Io {
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Patterns

#[derive(Debug, Clone)]
enum Token {
    Char(char),
    /// `?`: one character, not `/`.
    Any,
    /// `*`: any run of characters without `/`.
    Star,
    /// `**` not followed by `/`: anything, `/` included.
    AnyPath,
    /// `**/`: zero or more whole directories.
    AnyDirs,
    /// `[...]`: one character, not `/`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled pattern, matched against a whole string.
#[derive(Debug, Clone)]
struct Glob {
    tokens: Vec<Token>,
    /// The text before the first wildcard, escapes resolved.
    prefix: String,
    /// Whether the pattern has no wildcard at all (it is then `prefix`).
    literal: bool,
}

impl Glob {
    /// `across_dirs`: `**` spans directories (ignore files); otherwise it is
    /// `*` (a single component of a source glob).
    fn compile(text: &str, across_dirs: bool) -> Result<Glob, String> {
        let mut tokens = Vec::new();
        let mut prefix = String::new();
        let mut literal = true;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let token = match c {
                '\\' => Token::Char(chars.next().ok_or("ends with an unfinished escape `\\`")?),
                '*' if across_dirs && chars.peek() == Some(&'*') => {
                    chars.next();
                    if chars.peek() == Some(&'/') {
                        chars.next();
                        Token::AnyDirs
                    } else {
                        Token::AnyPath
                    }
                }
                '*' => Token::Star,
                '?' => Token::Any,
                '[' => class(&mut chars)?,
                c => Token::Char(c),
            };
            match token {
                Token::Char(c) if literal => prefix.push(c),
                Token::Char(_) => {}
                _ => literal = false,
            }
            tokens.push(token);
        }
        Ok(Glob {
            tokens,
            prefix,
            literal,
        })
    }

    fn matches(&self, s: &str) -> bool {
        if self.literal {
            return self.prefix == s;
        }
        // The set of offsets into `s` the tokens so far can end at.
        let bytes = s.as_bytes();
        let n = s.len();
        let mut cur = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        cur[0] = true;
        for token in &self.tokens {
            next.fill(false);
            match token {
                Token::Char(c) => {
                    for p in 0..n {
                        if cur[p] && s[p..].starts_with(*c) {
                            next[p + c.len_utf8()] = true;
                        }
                    }
                }
                Token::Any | Token::Class { .. } => {
                    for p in 0..n {
                        if !cur[p] {
                            continue;
                        }
                        let Some(c) = s[p..].chars().next() else {
                            continue;
                        };
                        let ok = c != '/'
                            && match token {
                                Token::Class { negated, ranges } => {
                                    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                                }
                                _ => true,
                            };
                        if ok {
                            next[p + c.len_utf8()] = true;
                        }
                    }
                }
                Token::Star | Token::AnyPath => {
                    let mut open = false;
                    for p in 0..=n {
                        open |= cur[p];
                        if open && s.is_char_boundary(p) {
                            next[p] = true;
                        }
                        if matches!(token, Token::Star) && p < n && bytes[p] == b'/' {
                            open = false;
                        }
                    }
                }
                Token::AnyDirs => {
                    let mut open = false;
                    for p in 0..=n {
                        open |= cur[p];
                        next[p] |= cur[p];
                        if open && p < n && bytes[p] == b'/' {
                            next[p + 1] = true;
                        }
                    }
                }
            }
            std::mem::swap(&mut cur, &mut next);
            if !cur.contains(&true) {
                return false;
            }
        }
        cur[n]
    }
}

/// The rest of a `[...]` class, after the `[`.
fn class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Token, String> {
    const UNCLOSED: &str = "unclosed `[`";
    let negated = matches!(chars.peek(), Some('^' | '!'));
    if negated {
        chars.next();
    }
    let mut ranges = Vec::new();
    loop {
        let lo = match chars.next().ok_or(UNCLOSED)? {
            ']' if ranges.is_empty() => return Err("empty character class `[]`".to_owned()),
            ']' => break,
            '\\' => chars.next().ok_or(UNCLOSED)?,
            c => c,
        };
        let hi = if chars.peek() == Some(&'-') {
            chars.next();
            match chars.next().ok_or(UNCLOSED)? {
                // `[a-]`: a and `-`.
                ']' => {
                    ranges.push((lo, lo));
                    ranges.push(('-', '-'));
                    break;
                }
                '\\' => chars.next().ok_or(UNCLOSED)?,
                c => c,
            }
        } else {
            lo
        };
        if hi < lo {
            return Err(format!(
                "range `{}-{}` is backwards",
                short(&lo.to_string()),
                short(&hi.to_string())
            ));
        }
        ranges.push((lo, hi));
    }
    Ok(Token::Class { negated, ranges })
}

fn has_wildcard(text: &str) -> bool {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '*' | '?' | '[' => return true,
            _ => {}
        }
    }
    false
}

// ---------------------------------------------------------------------------
// The ignore file

#[derive(Debug, Clone)]
struct Rule {
    /// `!pattern`: re-includes what earlier rules excluded.
    exception: bool,
    glob: Glob,
}

impl Rule {
    /// Whether the rule matches `rel` or one of its parent directories.
    fn matches(&self, rel: &str) -> bool {
        rel.match_indices('/')
            .map(|(i, _)| &rel[..i])
            .chain(std::iter::once(rel))
            .any(|p| self.glob.matches(p))
    }
}

/// The rules of a `.dockerignore` (or `.containerignore`) file.
#[derive(Debug, Clone)]
pub struct Ignore {
    /// The file's name, for messages.
    file: String,
    rules: Vec<Rule>,
}

impl Default for Ignore {
    /// Nothing is ignored.
    fn default() -> Ignore {
        Ignore {
            file: ".dockerignore".to_owned(),
            rules: Vec::new(),
        }
    }
}

impl Ignore {
    /// `<context>/.dockerignore`, else `<context>/.containerignore`, else
    /// nothing ignored. Each is read with [`beneath::open`]: a symlink is
    /// refused, whatever it points to.
    pub fn load(context: &Path) -> Result<Ignore, ContextError> {
        for name in [".dockerignore", ".containerignore"] {
            match beneath::read_to_string(context, name, beneath::Links::Refuse, IGNORE_LIMIT) {
                Ok(text) => return Ignore::parse_named(&text, name),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(ContextError::Open(e)),
            }
        }
        Ok(Ignore::default())
    }

    /// The text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Ignore, ContextError> {
        Ignore::parse_named(text, ".dockerignore")
    }

    fn parse_named(text: &str, file: &str) -> Result<Ignore, ContextError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // As Docker: a comment only when `#` is the line's first character.
            if line.starts_with('#') {
                continue;
            }
            let written = line.trim();
            if written.is_empty() {
                continue;
            }
            let error = |reason: String| ContextError::Pattern {
                file: file.to_owned(),
                line: i + 1,
                pattern: written.to_owned(),
                reason,
            };
            let (exception, pattern) = match written.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, written),
            };
            if pattern.is_empty() {
                return Err(error("`!` must be followed by a pattern".to_owned()));
            }
            let cleaned = clean_pattern(pattern);
            let glob = Glob::compile(&cleaned, true).map_err(error)?;
            // A pattern naming the context root itself (`/`, `.`) names no
            // path in it.
            if !cleaned.is_empty() {
                rules.push(Rule { exception, glob });
            }
        }
        Ok(Ignore {
            file: file.to_owned(),
            rules,
        })
    }

    /// Whether `rel` (relative to the context, `/`-separated, clean) is
    /// excluded. The context root never is.
    pub fn is_ignored(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return false;
        }
        let mut ignored = false;
        for rule in &self.rules {
            if ignored == rule.exception && rule.matches(rel) {
                ignored = !rule.exception;
            }
        }
        ignored
    }

    /// Whether an exception could re-include something under the directory
    /// `dir`: its literal prefix and `dir/` agree as far as both go.
    fn may_include_under(&self, dir: &str) -> bool {
        let dir = format!("{dir}/");
        self.rules.iter().any(|rule| {
            rule.exception
                && (rule.glob.prefix.starts_with(&dir) || dir.starts_with(&rule.glob.prefix))
        })
    }
}

/// Lexical cleaning as Docker does to ignore patterns: no empty or `.`
/// components, `..` folded where it can be, no leading or trailing `/`.
fn clean_pattern(pattern: &str) -> String {
    let rooted = pattern.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => match parts.last() {
                Some(&last) if last != ".." => {
                    parts.pop();
                }
                _ if rooted => {}
                _ => parts.push(".."),
            },
            part => parts.push(part),
        }
    }
    parts.join("/")
}

// ---------------------------------------------------------------------------
// Sources

/// What one entry on disk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `mode`: permission bits (`& 0o7777`).
    File {
        size: u64,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    /// Copied as a link, never followed.
    Symlink {
        target: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the source's match: "" for the match itself.
    pub rel: String,
    /// On disk, absolute.
    pub path: PathBuf,
    pub kind: Kind,
}

/// One match of a source argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The match, relative to the context as named (through any symlink):
    /// "" for the context root.
    pub rel: String,
    /// The match first, then (for a directory) everything under it that the
    /// ignore file lets through, sorted by `rel` bytes.
    pub entries: Vec<Entry>,
}

/// The matches of `source` (a `COPY` or `ADD` argument after variable
/// expansion, relative to the context root, possibly a glob).
pub fn resolve(context: &Path, ignore: &Ignore, source: &str) -> Result<Vec<Source>, ContextError> {
    let root = std::fs::canonicalize(context).map_err(io(context))?;
    let given = std::path::absolute(context).map_err(io(context))?;
    let parts = clean_source(source)?;
    let resolver = Resolver {
        root: &root,
        given: &given,
        ignore,
        arg: source,
    };
    if parts.iter().any(|p| has_wildcard(p)) {
        resolver.glob(&parts)
    } else {
        resolver.literal(&parts)
    }
}

/// The components of a source argument, `.` and `..` folded; refused when
/// `..` would leave the context.
fn clean_source(source: &str) -> Result<Vec<String>, ContextError> {
    let mut parts = Vec::new();
    for part in source.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ContextError::Escape {
                        arg: source.to_owned(),
                        link: None,
                    });
                }
            }
            part => parts.push(part.to_owned()),
        }
    }
    Ok(parts)
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn utf8_name(name: std::ffi::OsString, dir: &Path) -> Result<String, ContextError> {
    name.into_string().map_err(|name| ContextError::NotUtf8 {
        path: dir.join(name),
    })
}

struct Resolver<'a> {
    /// The context, canonical.
    root: &'a Path,
    /// The context as given, made absolute (absolute link targets under it
    /// stay inside).
    given: &'a Path,
    ignore: &'a Ignore,
    arg: &'a str,
}

/// A component still to resolve, and the symlink whose target it came from.
type Pending = VecDeque<(String, Option<Rc<EscapingLink>>)>;

impl Resolver<'_> {
    fn abs(&self, real: &[String]) -> PathBuf {
        let mut path = self.root.to_path_buf();
        path.extend(real);
        path
    }

    fn escape(&self, link: EscapingLink) -> ContextError {
        ContextError::Escape {
            arg: self.arg.to_owned(),
            link: Some(link),
        }
    }

    /// Resolves `rest` from the directory `real` (symlink-free, relative to
    /// the context), following symlinks inside the context. `None` when a
    /// component does not exist (or is not a directory while more follow).
    fn follow(
        &self,
        mut real: Vec<String>,
        rest: &[String],
    ) -> Result<Option<Vec<String>>, ContextError> {
        let mut pending: Pending = rest.iter().map(|p| (p.clone(), None)).collect();
        let mut links = 0;
        while let Some((part, from)) = pending.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    if real.pop().is_none() {
                        // Only a link's target, or an escaped `\..` in a
                        // glob, still has `..` here.
                        return Err(ContextError::Escape {
                            arg: self.arg.to_owned(),
                            link: from.map(|link| (*link).clone()),
                        });
                    }
                    continue;
                }
                _ => {}
            }
            real.push(part);
            let path = self.abs(&real);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(&path)(e)),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                let rel = real.join("/");
                if links > MAX_LINKS {
                    return Err(ContextError::Loop {
                        arg: self.arg.to_owned(),
                        link: rel,
                    });
                }
                let target = std::fs::read_link(&path).map_err(io(&path))?;
                real.pop();
                let link = Rc::new(EscapingLink {
                    path: rel,
                    target: target.clone(),
                });
                let relative = if target.is_absolute() {
                    let inside = target
                        .strip_prefix(self.root)
                        .or_else(|_| target.strip_prefix(self.given))
                        .map_err(|_| self.escape((*link).clone()))?;
                    real.clear();
                    inside.to_path_buf()
                } else {
                    target
                };
                for part in relative.iter().rev() {
                    let part = part
                        .to_str()
                        .ok_or_else(|| ContextError::NotUtf8 { path: path.clone() })?;
                    pending.push_front((part.to_owned(), Some(link.clone())));
                }
            } else if !meta.is_dir() && pending.iter().any(|(p, _)| !p.is_empty() && p != ".") {
                return Ok(None);
            }
        }
        Ok(Some(real))
    }

    fn not_found(&self, glob: bool, excluded: bool) -> ContextError {
        ContextError::NotFound {
            arg: self.arg.to_owned(),
            glob,
            excluded_by: excluded.then(|| self.ignore.file.clone()),
        }
    }

    fn literal(&self, parts: &[String]) -> Result<Vec<Source>, ContextError> {
        let Some(real) = self.follow(Vec::new(), parts)? else {
            return Err(self.not_found(false, false));
        };
        match self.source(parts.join("/"), &real)? {
            Some(source) => Ok(vec![source]),
            None => Err(self.not_found(false, true)),
        }
    }

    fn glob(&self, parts: &[String]) -> Result<Vec<Source>, ContextError> {
        // (as named, resolved) of every directory (then match) so far.
        let mut found: Vec<(String, Vec<String>)> = vec![(String::new(), Vec::new())];
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let glob = Glob::compile(part, false).map_err(|reason| ContextError::Glob {
                arg: self.arg.to_owned(),
                reason,
            })?;
            let mut next = Vec::new();
            for (named, real) in found {
                let names = if glob.literal {
                    vec![glob.prefix.clone()]
                } else {
                    let dir = self.abs(&real);
                    let mut names = Vec::new();
                    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
                        let name = utf8_name(entry.map_err(io(&dir))?.file_name(), &dir)?;
                        if glob.matches(&name) {
                            names.push(name);
                        }
                    }
                    names.sort();
                    names
                };
                for name in names {
                    // Dangling links and non-directories on the way match nothing.
                    let Some(resolved) = self.follow(real.clone(), std::slice::from_ref(&name))?
                    else {
                        continue;
                    };
                    if last || self.abs(&resolved).is_dir() {
                        next.push((join(&named, &name), resolved));
                    }
                }
            }
            found = next;
        }
        let mut sources = Vec::new();
        let mut excluded = false;
        for (named, real) in found {
            match self.source(named, &real)? {
                Some(source) => sources.push(source),
                None => excluded = true,
            }
        }
        if sources.is_empty() {
            return Err(self.not_found(true, excluded));
        }
        Ok(sources)
    }

    /// The match `named`, resolved to `real`; `None` when the ignore file
    /// excludes it and everything under it.
    fn source(&self, named: String, real: &[String]) -> Result<Option<Source>, ContextError> {
        let real_rel = real.join("/");
        let excluded = self.ignore.is_ignored(&named) || self.ignore.is_ignored(&real_rel);
        let path = self.abs(real);
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mut entries = Vec::new();
        if meta.is_dir() {
            if excluded && !self.ignore.may_include_under(&real_rel) {
                return Ok(None);
            }
            self.walk(&path, &real_rel, "", &mut entries)?;
            if excluded && entries.is_empty() {
                return Ok(None);
            }
        } else if excluded {
            return Ok(None);
        }
        entries.push(Entry {
            rel: String::new(),
            kind: self.kind(&meta, &path, &real_rel)?,
            path,
        });
        entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(Some(Source {
            rel: named,
            entries,
        }))
    }

    fn kind(&self, meta: &std::fs::Metadata, path: &Path, rel: &str) -> Result<Kind, ContextError> {
        let mode = meta.mode() & 0o7777;
        let kind = meta.file_type();
        if kind.is_dir() {
            Ok(Kind::Dir { mode })
        } else if kind.is_file() {
            Ok(Kind::File {
                size: meta.len(),
                mode,
            })
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(io(path))?;
            if link_escapes(rel, &target) {
                return Err(self.escape(EscapingLink {
                    path: rel.to_owned(),
                    target,
                }));
            }
            Ok(Kind::Symlink { target })
        } else {
            let kind = if kind.is_char_device() {
                "character devices"
            } else if kind.is_block_device() {
                "block devices"
            } else if kind.is_socket() {
                "sockets"
            } else {
                "fifos"
            };
            Err(ContextError::Special {
                path: rel.to_owned(),
                kind,
            })
        }
    }

    /// Everything under the directory `dir` (`rel` in the context, `under`
    /// in the match) that the ignore file lets through, unsorted.
    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        under: &str,
        out: &mut Vec<Entry>,
    ) -> Result<(), ContextError> {
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let name = utf8_name(entry.map_err(io(dir))?.file_name(), dir)?;
            let path = dir.join(&name);
            let child_rel = join(rel, &name);
            let child_under = join(under, &name);
            let excluded = self.ignore.is_ignored(&child_rel);
            let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
            if meta.is_dir() {
                if excluded && !self.ignore.may_include_under(&child_rel) {
                    continue;
                }
                let before = out.len();
                self.walk(&path, &child_rel, &child_under, out)?;
                if excluded && out.len() == before {
                    continue;
                }
            } else if excluded {
                continue;
            }
            out.push(Entry {
                rel: child_under,
                kind: self.kind(&meta, &path, &child_rel)?,
                path,
            });
        }
        Ok(())
    }
}

/// Whether the symlink at `rel` (in the context) with `target` leads out:
/// an absolute target always does, a relative one when, joined onto the
/// link's directory and cleaned lexically, it leaves the context.
fn link_escapes(rel: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth = rel.matches('/').count();
    for part in target.iter() {
        match part.as_bytes() {
            b"." => {}
            b".." if depth == 0 => return true,
            b".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Digest

/// `sha256:` over every source's name and every entry's name, kind,
/// permission bits, size, link target and file contents, in order.
pub fn digest(sources: &[Source]) -> Result<String, ContextError> {
    digest_files(sources).map(|(digest, _)| digest)
}

/// [`digest`], and the sha256 of every file's content by its path on disk
/// (so a layer made from the same files can reuse what is unchanged).
pub fn digest_files(
    sources: &[Source],
) -> Result<(String, std::collections::HashMap<PathBuf, [u8; 32]>), ContextError> {
    let files: Vec<(&Path, u64)> = sources
        .iter()
        .flat_map(|s| &s.entries)
        .filter_map(|e| match e.kind {
            Kind::File { size, .. } => Some((e.path.as_path(), size)),
            _ => None,
        })
        .collect();
    let hashes = hash_files(&files)?;
    let by_path = files
        .iter()
        .zip(&hashes)
        .map(|((path, _), hash)| (path.to_path_buf(), *hash))
        .collect();
    let mut contents = hashes.iter();

    let mut h = Sha256::new();
    h.update(b"slipway-context-v1\0");
    let field = |h: &mut Sha256, bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for source in sources {
        field(&mut h, b"source");
        field(&mut h, source.rel.as_bytes());
        h.update((source.entries.len() as u64).to_le_bytes());
        for entry in &source.entries {
            field(&mut h, entry.rel.as_bytes());
            match &entry.kind {
                Kind::File { size, mode } => {
                    h.update(b"f");
                    h.update(mode.to_le_bytes());
                    h.update(size.to_le_bytes());
                    h.update(contents.next().expect("one digest per file"));
                }
                Kind::Dir { mode } => {
                    h.update(b"d");
                    h.update(mode.to_le_bytes());
                }
                Kind::Symlink { target } => {
                    h.update(b"l");
                    field(&mut h, target.as_os_str().as_bytes());
                }
            }
        }
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), by_path))
}

/// The SHA-256 of each file's contents, in order, on up to `HASH_THREADS`
/// threads.
fn hash_files(files: &[(&Path, u64)]) -> Result<Vec<[u8; 32]>, ContextError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, HASH_THREADS)
        .min(files.len().max(1));
    let next = AtomicUsize::new(0);
    let work = || {
        let mut buf = vec![0u8; HASH_BUFFER];
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(path, size)) = files.get(i) else {
                return done;
            };
            let result = hash_file(path, size, &mut buf);
            let failed = result.is_err();
            done.push((i, result));
            if failed {
                // Stop handing out work; the first error by index wins.
                next.store(files.len(), Ordering::Relaxed);
                return done;
            }
        }
    };
    let mut done: Vec<(usize, Result<[u8; 32], ContextError>)> = if threads == 1 {
        work()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("hashing thread panicked"))
                .collect()
        })
    };
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn hash_file(path: &Path, size: u64, buf: &mut [u8]) -> Result<[u8; 32], ContextError> {
    // `path` is canonical and symlink-free (the resolver made it so): a
    // symlink there now is a swap, refused.
    let mut file = beneath::open_canonical(path)?;
    let mut h = Sha256::new();
    let mut read = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(path)(e)),
        };
        h.update(&buf[..n]);
        read += n as u64;
    }
    if read != size {
        return Err(ContextError::Changed {
            path: path.to_owned(),
            expected: size,
            actual: read,
        });
    }
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A context holding `files` (path, contents), each mode 0644.
    fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, contents).unwrap();
            chmod(&path, 0o644);
        }
        dir
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn rels(source: &Source) -> Vec<&str> {
        source.entries.iter().map(|e| e.rel.as_str()).collect()
    }

    fn ignored<'a>(ignore: &Ignore, paths: &[&'a str]) -> Vec<&'a str> {
        paths
            .iter()
            .copied()
            .filter(|p| ignore.is_ignored(p))
            .collect()
    }

    #[test]
    fn ignore_patterns_match_as_docker_does() {
        let ignore = Ignore::parse(
            "\u{feff}# a comment\n\
             \n\
             *.log\n\
             /build/\n\
             ./tmp\n\
             docs/**/draft?.md\n\
             **/node_modules\n\
             secret[0-9].txt\n\
             \\#literal\n  \n",
        )
        .unwrap();
        let paths = [
            "",
            "# a comment",
            "a.log",
            "logs/a.log",
            "build",
            "build/x/y.o",
            "src/build",
            "tmp/cache",
            "docs/draft1.md",
            "docs/a/b/draft2.md",
            "docs/draft10.md",
            "node_modules/x/index.js",
            "web/node_modules/y",
            "web/node_modules_old",
            "secret3.txt",
            "secretx.txt",
            "#literal",
        ];
        assert_eq!(
            ignored(&ignore, &paths),
            [
                "a.log",
                "build",
                "build/x/y.o",
                "tmp/cache",
                "docs/draft1.md",
                "docs/a/b/draft2.md",
                "node_modules/x/index.js",
                "web/node_modules/y",
                "secret3.txt",
                "#literal",
            ]
        );
    }

    #[test]
    fn the_last_matching_rule_decides_parents_included() {
        let ignore = Ignore::parse("docs\n!docs/*.md\ndocs/secret.md\n").unwrap();
        let paths = [
            "docs",
            "docs/a.md",
            "docs/secret.md",
            "docs/img/x.md",
            "docs/img/a.png",
        ];
        assert_eq!(
            ignored(&ignore, &paths),
            ["docs", "docs/secret.md", "docs/img/x.md", "docs/img/a.png"]
        );

        // Everything but src, and within src everything but its tests.
        let ignore = Ignore::parse("*\n!src\nsrc/tests\n!src/tests/keep.rs").unwrap();
        let paths = [
            "README.md",
            "src",
            "src/lib.rs",
            "src/tests/a.rs",
            "src/tests/keep.rs",
        ];
        assert_eq!(ignored(&ignore, &paths), ["README.md", "src/tests/a.rs"]);
    }

    #[test]
    fn an_invalid_pattern_is_an_error_at_its_line() {
        let err = Ignore::parse("target\n\n# [comment\nsrc/[a\n").unwrap_err();
        assert!(
            matches!(&err, ContextError::Pattern { line: 4, pattern, .. } if pattern == "src/[a"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            ".dockerignore:4: invalid pattern \"src/[a\": unclosed `[`"
        );
        let err = Ignore::parse("a\n!\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            ".dockerignore:2: invalid pattern \"!\": `!` must be followed by a pattern"
        );
        let err = Ignore::parse("x\\").unwrap_err();
        assert!(
            matches!(err, ContextError::Pattern { line: 1, .. }),
            "{err}"
        );
        let err = Ignore::parse("[z-a]").unwrap_err();
        assert!(err.to_string().contains("backwards"), "{err}");
    }

    #[test]
    fn load_reads_dockerignore_then_containerignore() {
        let dir = context(&[("a.log", ""), ("b.tmp", "")]);
        assert!(!Ignore::load(dir.path()).unwrap().is_ignored("a.log"));

        std::fs::write(dir.path().join(".containerignore"), "*.tmp\n[").unwrap();
        let err = Ignore::load(dir.path()).unwrap_err();
        assert!(err.to_string().starts_with(".containerignore:2: "), "{err}");

        std::fs::write(dir.path().join(".dockerignore"), "*.log\n").unwrap();
        let ignore = Ignore::load(dir.path()).unwrap();
        assert!(ignore.is_ignored("a.log"));
        assert!(!ignore.is_ignored("b.tmp"), ".containerignore is unused");
    }

    /// The ignore file steers what a build sees: it is never read through a
    /// symlink, wherever the symlink points.
    #[test]
    fn a_symlinked_ignore_file_is_refused() {
        let top = tempfile::tempdir().unwrap();
        let ctx = top.path().join("ctx");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(top.path().join("outside"), "[SECRET-CONTENT").unwrap();
        std::fs::write(ctx.join("patterns"), "*.log\n").unwrap();
        for (name, target) in [
            (".dockerignore", top.path().join("outside")),
            (".dockerignore", PathBuf::from("../outside")),
            (".dockerignore", PathBuf::from("patterns")),
            (".containerignore", top.path().join("outside")),
        ] {
            symlink(&target, ctx.join(name)).unwrap();
            let err = Ignore::load(&ctx).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{name}: is a symlink; refused (it must be a file in the directory itself)"
                ),
                "{target:?}"
            );
            std::fs::remove_file(ctx.join(name)).unwrap();
        }
        // A directory in its place is an error too, not "nothing ignored".
        std::fs::create_dir(ctx.join(".dockerignore")).unwrap();
        let err = Ignore::load(&ctx).unwrap_err();
        assert_eq!(err.to_string(), ".dockerignore: not a regular file");
    }

    #[test]
    fn pattern_errors_quote_a_short_escaped_excerpt() {
        let line = format!("[{}\u{1b}[2J", "k".repeat(100));
        let err = Ignore::parse(&line).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                ".dockerignore:1: invalid pattern \"[{}…\": unclosed `[`",
                "k".repeat(39)
            )
        );
    }

    #[test]
    fn resolves_files_directories_and_globs() {
        let dir = context(&[
            ("README.md", "hello\n"),
            ("a.txt", "a"),
            ("notes.txt", "n"),
            ("src/main.rs", "fn main() {}\n"),
            ("src/lib/mod.rs", ""),
            ("src/x.txt", ""),
        ]);
        let root = std::fs::canonicalize(dir.path()).unwrap();
        chmod(&root.join("src/main.rs"), 0o755);
        chmod(&root.join("src"), 0o750);
        let none = Ignore::default();

        let file = resolve(dir.path(), &none, "README.md").unwrap();
        assert_eq!(
            file,
            [Source {
                rel: "README.md".to_owned(),
                entries: vec![Entry {
                    rel: String::new(),
                    path: root.join("README.md"),
                    kind: Kind::File {
                        size: 6,
                        mode: 0o644
                    },
                }],
            }]
        );

        let src = resolve(dir.path(), &none, "/src/").unwrap();
        assert_eq!(src.len(), 1);
        assert_eq!(src[0].rel, "src");
        assert_eq!(rels(&src[0]), ["", "lib", "lib/mod.rs", "main.rs", "x.txt"]);
        assert_eq!(src[0].entries[0].kind, Kind::Dir { mode: 0o750 });
        assert_eq!(
            src[0].entries[3].kind,
            Kind::File {
                size: 13,
                mode: 0o755
            }
        );
        assert_eq!(src[0].entries[3].path, root.join("src/main.rs"));

        let txt = resolve(dir.path(), &none, "./*.txt").unwrap();
        let names: Vec<&str> = txt.iter().map(|s| s.rel.as_str()).collect();
        assert_eq!(names, ["a.txt", "notes.txt"]);
        let deep = resolve(dir.path(), &none, "s?c/[a-z].txt").unwrap();
        assert_eq!(deep.len(), 1);
        assert_eq!(deep[0].rel, "src/x.txt");

        let all = resolve(dir.path(), &none, ".").unwrap();
        assert_eq!(all[0].rel, "");
        assert_eq!(all[0].entries.len(), 9);

        let err = resolve(dir.path(), &none, "*.rs").unwrap_err();
        assert_eq!(
            err.to_string(),
            "*.rs: no source files were specified (nothing in the build context matches)"
        );
        let err = resolve(dir.path(), &none, "missing").unwrap_err();
        assert_eq!(err.to_string(), "missing: not found in the build context");
        let err = resolve(dir.path(), &none, "README.md/x").unwrap_err();
        assert!(matches!(err, ContextError::NotFound { .. }), "{err}");
        let err = resolve(dir.path(), &none, "src/[a").unwrap_err();
        assert_eq!(err.to_string(), "src/[a: invalid pattern: unclosed `[`");
    }

    #[test]
    fn entries_are_sorted_by_path_bytes() {
        let dir = context(&[("a.txt", ""), ("a/b", ""), ("a-c", ""), ("B", "")]);
        let all = resolve(dir.path(), &Ignore::default(), "").unwrap();
        assert_eq!(rels(&all[0]), ["", "B", "a", "a-c", "a.txt", "a/b"]);
    }

    #[test]
    fn ignored_paths_are_not_in_the_context() {
        let dir = context(&[
            (".dockerignore", "secret.txt\nbuild\n!build/keep\n"),
            ("secret.txt", "s"),
            ("app.txt", ""),
            ("build/out.o", ""),
            ("build/keep/x", ""),
        ]);
        let ignore = Ignore::load(dir.path()).unwrap();

        let err = resolve(dir.path(), &ignore, "secret.txt").unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret.txt: not found in the build context (excluded by .dockerignore)"
        );
        let err = resolve(dir.path(), &ignore, "secret*").unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret*: no source files were specified (every match is excluded by .dockerignore)"
        );
        let err = resolve(dir.path(), &ignore, "build/out.o").unwrap_err();
        assert!(
            err.to_string().contains("excluded by .dockerignore"),
            "{err}"
        );

        let all = resolve(dir.path(), &ignore, ".").unwrap();
        assert_eq!(
            rels(&all[0]),
            [
                "",
                ".dockerignore",
                "app.txt",
                "build",
                "build/keep",
                "build/keep/x"
            ]
        );
        // The excluded directory itself, for what it still holds.
        let build = resolve(dir.path(), &ignore, "build").unwrap();
        assert_eq!(rels(&build[0]), ["", "keep", "keep/x"]);
    }

    #[test]
    fn sources_outside_the_context_are_refused() {
        let dir = context(&[("b", "")]);
        let none = Ignore::default();
        for arg in ["../x", "a/../../x", "/../x", "*/../../x"] {
            let err = resolve(dir.path(), &none, arg).unwrap_err();
            assert!(
                matches!(&err, ContextError::Escape { arg: a, link: None } if a == arg),
                "{arg}: {err:?}"
            );
            assert_eq!(err.to_string(), format!("{arg}: outside the build context"));
        }
        let b = resolve(dir.path(), &none, "a/../b").unwrap();
        assert_eq!(b[0].rel, "b");
    }

    #[test]
    fn source_symlinks_are_followed_only_inside_the_context() {
        let dir = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(dir.path()).unwrap();
        let ctx = top.join("ctx");
        std::fs::create_dir_all(ctx.join("src")).unwrap();
        std::fs::create_dir(ctx.join("via")).unwrap();
        std::fs::write(ctx.join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(top.join("outside"), "secret").unwrap();
        symlink("/etc/passwd", ctx.join("passwd")).unwrap();
        symlink("../outside", ctx.join("up")).unwrap();
        symlink("../..", ctx.join("via/top")).unwrap();
        symlink("src", ctx.join("alias")).unwrap();
        symlink(ctx.join("src/main.rs"), ctx.join("absolute-inside")).unwrap();
        symlink("loop-b", ctx.join("loop-a")).unwrap();
        symlink("loop-a", ctx.join("loop-b")).unwrap();
        let none = Ignore::default();

        let err = resolve(&ctx, &none, "passwd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "passwd: symlink passwd -> /etc/passwd points outside the build context"
        );
        let err = resolve(&ctx, &none, "up").unwrap_err();
        assert!(
            matches!(&err, ContextError::Escape { link: Some(l), .. } if l.path == "up"),
            "{err:?}"
        );
        // Through a parent component, and through a glob.
        let err = resolve(&ctx, &none, "via/top/outside").unwrap_err();
        assert_eq!(
            err.to_string(),
            "via/top/outside: symlink via/top -> ../.. points outside the build context"
        );
        let err = resolve(&ctx, &none, "u*").unwrap_err();
        assert!(matches!(err, ContextError::Escape { .. }), "{err}");

        let main = resolve(&ctx, &none, "alias/main.rs").unwrap();
        assert_eq!(main[0].rel, "alias/main.rs");
        assert_eq!(main[0].entries[0].path, ctx.join("src/main.rs"));
        let alias = resolve(&ctx, &none, "alias").unwrap();
        assert_eq!(alias[0].rel, "alias");
        assert_eq!(alias[0].entries[0].path, ctx.join("src"));
        assert!(matches!(alias[0].entries[0].kind, Kind::Dir { .. }));
        assert_eq!(rels(&alias[0]), ["", "main.rs"]);
        let inside = resolve(&ctx, &none, "absolute-inside").unwrap();
        assert_eq!(inside[0].entries[0].path, ctx.join("src/main.rs"));

        let err = resolve(&ctx, &none, "loop-a").unwrap_err();
        assert!(matches!(err, ContextError::Loop { .. }), "{err}");
    }

    #[test]
    fn symlinks_in_a_copied_tree_stay_links_and_inside() {
        let dir = context(&[("README.md", ""), ("src/lib/mod.rs", "")]);
        let none = Ignore::default();
        symlink("../README.md", dir.path().join("src/readme")).unwrap();
        symlink("lib", dir.path().join("src/libdir")).unwrap();
        let src = resolve(dir.path(), &none, "src").unwrap();
        assert_eq!(
            rels(&src[0]),
            ["", "lib", "lib/mod.rs", "libdir", "readme"],
            "the linked directory is not followed"
        );
        assert_eq!(
            src[0].entries[4].kind,
            Kind::Symlink {
                target: PathBuf::from("../README.md")
            }
        );
        assert_eq!(
            src[0].entries[3].kind,
            Kind::Symlink {
                target: PathBuf::from("lib")
            }
        );

        // src/lib/../../x is x, in the context; one more `..` is not.
        symlink("../../x", dir.path().join("src/lib/in")).unwrap();
        assert!(resolve(dir.path(), &none, "src").is_ok());
        symlink("../../../x", dir.path().join("src/lib/out")).unwrap();
        let err = resolve(dir.path(), &none, "src").unwrap_err();
        assert_eq!(
            err.to_string(),
            "src: symlink src/lib/out -> ../../../x points outside the build context"
        );
        std::fs::remove_file(dir.path().join("src/lib/out")).unwrap();

        symlink("/etc", dir.path().join("src/etc")).unwrap();
        let err = resolve(dir.path(), &none, "src").unwrap_err();
        assert!(
            matches!(&err, ContextError::Escape { link: Some(l), .. }
                if l.path == "src/etc" && l.target == Path::new("/etc")),
            "{err:?}"
        );
        // Excluded, it is not looked at.
        let ignore = Ignore::parse("src/etc").unwrap();
        assert!(resolve(dir.path(), &ignore, "src").is_ok());
    }

    #[test]
    fn special_files_are_refused() {
        let dir = context(&[("src/a", "")]);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("src/pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = resolve(dir.path(), &Ignore::default(), "src").unwrap_err();
        assert_eq!(
            err.to_string(),
            "src/pipe: fifos cannot be copied from the build context"
        );
        let err = resolve(dir.path(), &Ignore::default(), "src/pipe").unwrap_err();
        assert!(matches!(err, ContextError::Special { .. }), "{err}");
    }

    #[test]
    fn the_digest_covers_contents_and_modes_not_times() {
        let big = "x".repeat(300 * 1024);
        let dir = context(&[
            ("src/a.rs", "fn a() {}\n"),
            ("src/big.bin", &big),
            ("src/b/c.rs", "c"),
        ]);
        symlink("a.rs", dir.path().join("src/link")).unwrap();
        let none = Ignore::default();
        let digest_of = || digest(&resolve(dir.path(), &none, "src").unwrap()).unwrap();
        let first = digest_of();
        assert!(
            first.starts_with("sha256:") && first.len() == 7 + 64,
            "{first}"
        );
        assert_eq!(digest_of(), first);

        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("src/big.bin"))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
            .unwrap();
        assert_eq!(digest_of(), first, "mtimes are not hashed");

        let mut changed = big.clone().into_bytes();
        changed[200 * 1024] = b'y';
        std::fs::write(dir.path().join("src/big.bin"), &changed).unwrap();
        let byte = digest_of();
        assert_ne!(byte, first, "one byte changed");

        chmod(&dir.path().join("src/a.rs"), 0o755);
        let mode = digest_of();
        assert_ne!(mode, byte, "mode changed");

        std::fs::remove_file(dir.path().join("src/link")).unwrap();
        symlink("b/c.rs", dir.path().join("src/link")).unwrap();
        assert_ne!(digest_of(), mode, "link target changed");

        // The same tree under another name as a source is another input.
        let renamed = resolve(dir.path(), &none, "src/a.rs").unwrap();
        let mut other = renamed.clone();
        other[0].rel = "src/other.rs".to_owned();
        assert_ne!(digest(&renamed).unwrap(), digest(&other).unwrap());
    }

    #[test]
    fn the_digest_fails_when_a_file_changes_size() {
        let dir = context(&[("a", "abc")]);
        let sources = resolve(dir.path(), &Ignore::default(), "a").unwrap();
        std::fs::write(dir.path().join("a"), "abcd").unwrap();
        let err = digest(&sources).unwrap_err();
        assert!(
            matches!(
                err,
                ContextError::Changed {
                    expected: 3,
                    actual: 4,
                    ..
                }
            ),
            "{err}"
        );
    }
}
