//! Containerfiles (Dockerfiles): the subset Slipway builds, parsed into stages
//! of instructions, each with the line it came from.
//!
//! - `lines.rs`: physical lines to logical ones: the `# escape=` directive,
//!   line continuations, comments and blank lines.
//! - `parse.rs`: logical lines to instructions. Anything outside the subset is
//!   an error with line and column (an unknown instruction names the nearest
//!   known one), never silently ignored.
//!
//! Variables (`ARG`, `ENV`) are kept as written; the build expands them with
//! `expand.rs` (Docker's `$NAME`, `${NAME}`, `${NAME:-default}`,
//! `${NAME:+alternative}`), since their values depend on build arguments and
//! on the stage.

mod expand;
mod lines;
mod parse;

pub use expand::expand;
pub use parse::parse;

/// A parse error at a 1-based line and column of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Every error of one file, shown as `file:line:col: message` lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseErrors {
    pub file: String,
    pub errors: Vec<ParseError>,
}

/// At most this many errors are shown: a file that is not a Containerfile
/// (a symlinked secret, say) must not be echoed line by line.
pub const SHOWN_ERRORS: usize = 10;

impl std::fmt::Display for ParseErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.errors.iter().take(SHOWN_ERRORS).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, e.line, e.col, e.message)?;
        }
        let more = self.errors.len().saturating_sub(SHOWN_ERRORS);
        if more > 0 {
            let s = if more == 1 { "" } else { "s" };
            write!(f, "\n{}: … and {more} more error{s}", self.file)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A file of 50 bad lines (a secret read as a Containerfile) shows ten
    /// errors and a count, not every line's first word.
    #[test]
    fn errors_are_capped_at_ten() {
        let text: String = (0..50).map(|i| format!("SECRET{i:02} value\n")).collect();
        let err = super::parse("Containerfile", &text).unwrap_err();
        assert_eq!(err.errors.len(), 50);
        let shown = err.to_string();
        assert_eq!(shown.lines().count(), 11, "{shown}");
        assert!(shown.contains("SECRET09"), "{shown}");
        assert!(!shown.contains("SECRET10"), "{shown}");
        assert!(!shown.contains("SECRET49"), "{shown}");
        assert!(
            shown.ends_with("Containerfile: … and 40 more errors"),
            "{shown}"
        );
    }
}

/// `RUN`, `CMD` and `ENTRYPOINT` take either form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run by the stage's shell (`SHELL`, default `/bin/sh -c`).
    Shell(String),
    /// A JSON array: run as is.
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    /// `--from=stage|image` (COPY only).
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    pub sources: Vec<String>,
    pub destination: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run(Command),
    Copy(Copy),
    /// Local files only; a local tar archive is extracted.
    Add(Copy),
    Env(Vec<(String, String)>),
    /// A name and its default, if any.
    Arg(String, Option<String>),
    Workdir(String),
    User(String),
    Label(Vec<(String, String)>),
    Expose(Vec<String>),
    Cmd(Command),
    Entrypoint(Command),
    Shell(Vec<String>),
}

/// An instruction and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub instruction: Instruction,
    /// The instruction as written (one line), for history and progress.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub line: usize,
    /// An image reference (may contain `$VARS`) or `scratch`.
    pub base: String,
    /// `--platform=`: accepted for the host's platform only.
    pub platform: Option<String>,
    /// `AS name`.
    pub name: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerfile {
    /// The escape character (`\\`, or `` ` `` by the `# escape=` directive).
    pub escape: char,
    /// `ARG`s before the first `FROM`: usable in `FROM` lines.
    pub global_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}
