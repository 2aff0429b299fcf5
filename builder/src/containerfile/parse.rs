//! Logical lines to stages and instructions, collecting every error.

use super::lines::{logical_lines, Logical};
use super::{Command, Containerfile, Copy, Instruction, ParseError, ParseErrors, Stage, Step};
use crate::quote::{quoted, short};

const SUPPORTED: &[&str] = &[
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "WORKDIR",
    "USER",
    "LABEL",
    "EXPOSE",
    "CMD",
    "ENTRYPOINT",
    "SHELL",
];
/// Docker instructions outside Slipway's subset: refused by name.
const UNSUPPORTED: &[&str] = &[
    "ONBUILD",
    "HEALTHCHECK",
    "STOPSIGNAL",
    "VOLUME",
    "MAINTAINER",
];

fn nearest(word: &str) -> Option<&'static str> {
    SUPPORTED
        .iter()
        .map(|k| (strsim::jaro_winkler(word, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

struct Parser {
    escape: char,
    errors: Vec<ParseError>,
}

/// Words of `text` split at unquoted whitespace; quotes removed, escapes
/// applied. `Err` names an unclosed quote.
fn words(text: &str, escape: char) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, c) if c == escape && quote != Some('\'') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unclosed {q} quote"));
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// A JSON array of strings, if `text` is one.
fn json_array(text: &str) -> Option<Vec<String>> {
    if !text.trim_start().starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(text).ok()
}

impl Parser {
    fn error(&mut self, line: &Logical, offset: usize, message: impl Into<String>) {
        self.errors.push(ParseError {
            line: line.line,
            col: line.col + offset,
            message: message.into(),
        });
    }

    /// `--name=value` flags at the start of `args`, and the rest.
    fn flags<'a>(
        &mut self,
        line: &Logical,
        keyword: &str,
        args: &'a str,
        allowed: &[&str],
    ) -> (Vec<(String, String)>, &'a str) {
        let mut rest = args.trim_start();
        let mut flags = Vec::new();
        while let Some(flag) = rest.strip_prefix("--") {
            let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
            let (name, value) = flag[..end].split_once('=').unwrap_or((&flag[..end], ""));
            if !allowed.contains(&name) {
                let offset = line.text.len() - rest.len();
                let known = if allowed.is_empty() {
                    "it takes no flags".to_owned()
                } else {
                    format!("it takes --{}", allowed.join(", --"))
                };
                self.error(
                    line,
                    offset,
                    format!("{keyword} --{} is not supported ({known})", short(name)),
                );
            } else if value.is_empty() {
                let offset = line.text.len() - rest.len();
                self.error(
                    line,
                    offset,
                    format!(
                        "{keyword} --{} needs a value (--{}=...)",
                        short(name),
                        short(name)
                    ),
                );
            } else {
                flags.push((name.to_owned(), value.to_owned()));
            }
            rest = flag[end..].trim_start();
        }
        (flags, rest)
    }

    fn command(&mut self, args: &str) -> Command {
        match json_array(args) {
            Some(v) => Command::Exec(v),
            // As Docker does: what is not a JSON array is shell form.
            None => Command::Shell(args.to_owned()),
        }
    }

    fn pairs(&mut self, line: &Logical, keyword: &str, args: &str) -> Vec<(String, String)> {
        let offset = line.text.len() - args.len();
        let list = match words(args, self.escape) {
            Ok(w) => w,
            Err(e) => {
                self.error(line, offset, format!("{keyword}: {e}"));
                return Vec::new();
            }
        };
        // `ENV key value...`: the old form, one variable.
        if keyword == "ENV" && !list.is_empty() && !list[0].contains('=') {
            if list.len() < 2 {
                self.error(line, offset, "ENV needs a value: ENV NAME=value");
                return Vec::new();
            }
            return vec![(list[0].clone(), list[1..].join(" "))];
        }
        let mut out = Vec::new();
        let before = self.errors.len();
        for w in list {
            match w.split_once('=') {
                Some((k, v)) if !k.is_empty() => out.push((k.to_owned(), v.to_owned())),
                _ => self.error(
                    line,
                    offset,
                    format!("{keyword}: {} is not NAME=value", quoted(&w)),
                ),
            }
        }
        if out.is_empty() && self.errors.len() == before {
            self.error(
                line,
                offset,
                format!("{keyword} needs at least one NAME=value"),
            );
        }
        out
    }

    fn copy(&mut self, line: &Logical, keyword: &str, args: &str) -> Option<Copy> {
        let allowed: &[&str] = if keyword == "COPY" {
            &["from", "chown"]
        } else {
            &["chown"]
        };
        let (flags, rest) = self.flags(line, keyword, args, allowed);
        let offset = line.text.len() - rest.len();
        let list = match json_array(rest) {
            Some(v) => v,
            None => match words(rest, self.escape) {
                Ok(w) => w,
                Err(e) => {
                    self.error(line, offset, format!("{keyword}: {e}"));
                    return None;
                }
            },
        };
        if list.len() < 2 {
            self.error(
                line,
                offset,
                format!("{keyword} needs at least one source and a destination"),
            );
            return None;
        }
        if keyword == "ADD" {
            if let Some(url) = list[..list.len() - 1]
                .iter()
                .find(|s| s.contains("://") || s.starts_with("git@"))
            {
                self.error(
                    line,
                    offset,
                    format!(
                        "ADD {}: only local files can be added; download in a RUN step",
                        short(url)
                    ),
                );
                return None;
            }
        }
        let get = |name: &str| {
            flags
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let (sources, destination) = list.split_at(list.len() - 1);
        Some(Copy {
            from: get("from"),
            chown: get("chown"),
            sources: sources.to_vec(),
            destination: destination[0].clone(),
        })
    }

    fn one(&mut self, line: &Logical, keyword: &str, args: &str) -> Option<String> {
        let offset = line.text.len() - args.len();
        match words(args, self.escape) {
            Ok(w) if w.len() == 1 => Some(w[0].clone()),
            Ok(w) if w.is_empty() => {
                self.error(line, offset, format!("{keyword} needs a value"));
                None
            }
            Ok(_) => {
                self.error(line, offset, format!("{keyword} takes one value"));
                None
            }
            Err(e) => {
                self.error(line, offset, format!("{keyword}: {e}"));
                None
            }
        }
    }

    fn from(&mut self, line: &Logical, args: &str) -> Option<Stage> {
        let (flags, rest) = self.flags(line, "FROM", args, &["platform"]);
        let offset = line.text.len() - rest.len();
        let list = words(rest, self.escape).unwrap_or_default();
        let (base, name) = match list.as_slice() {
            [base] => (base.clone(), None),
            [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                if !valid {
                    self.error(line, offset, format!("stage name {} must start with a letter and use letters, digits, '-', '_', '.'", quoted(name)));
                    return None;
                }
                (base.clone(), Some(name.to_ascii_lowercase()))
            }
            _ => {
                self.error(
                    line,
                    offset,
                    "FROM takes an image and optionally AS name: FROM image [AS name]",
                );
                return None;
            }
        };
        Some(Stage {
            line: line.line,
            base,
            platform: flags
                .into_iter()
                .find(|(k, _)| k == "platform")
                .map(|(_, v)| v),
            name,
            steps: Vec::new(),
        })
    }

    fn instruction(&mut self, line: &Logical, keyword: &str, args: &str) -> Option<Instruction> {
        let offset = line.text.len() - args.len();
        if args.trim().is_empty() {
            self.error(line, 0, format!("{keyword} needs arguments"));
            return None;
        }
        Some(match keyword {
            "RUN" => {
                let (_, rest) = self.flags(line, keyword, args, &[]);
                Instruction::Run(self.command(rest))
            }
            "CMD" => Instruction::Cmd(self.command(args)),
            "ENTRYPOINT" => Instruction::Entrypoint(self.command(args)),
            "SHELL" => match json_array(args) {
                Some(v) if !v.is_empty() => Instruction::Shell(v),
                _ => {
                    self.error(
                        line,
                        offset,
                        r#"SHELL needs a JSON array, e.g. SHELL ["/bin/sh", "-c"]"#,
                    );
                    return None;
                }
            },
            "COPY" => Instruction::Copy(self.copy(line, keyword, args)?),
            "ADD" => Instruction::Add(self.copy(line, keyword, args)?),
            "ENV" => Instruction::Env(self.pairs(line, keyword, args)),
            "LABEL" => Instruction::Label(self.pairs(line, keyword, args)),
            "ARG" => {
                let value = self.one(line, keyword, args)?;
                match value.split_once('=') {
                    Some((name, default)) => {
                        Instruction::Arg(name.to_owned(), Some(default.to_owned()))
                    }
                    None => Instruction::Arg(value, None),
                }
            }
            "WORKDIR" => Instruction::Workdir(self.one(line, keyword, args)?),
            "USER" => Instruction::User(self.one(line, keyword, args)?),
            "EXPOSE" => {
                let ports = words(args, self.escape).unwrap_or_default();
                for p in &ports {
                    let (number, proto) = p.split_once('/').unwrap_or((p, "tcp"));
                    let ok = !number.contains('$')
                        && number.parse::<u16>().is_ok_and(|n| n > 0)
                        && matches!(proto, "tcp" | "udp" | "sctp");
                    if !ok && !p.contains('$') {
                        self.error(
                            line,
                            offset,
                            format!("EXPOSE {} is not a port such as 80 or 53/udp", quoted(p)),
                        );
                    }
                }
                Instruction::Expose(ports)
            }
            _ => unreachable!("only supported keywords get here"),
        })
    }
}

/// Parse `text`, the contents of `file` (named in errors).
pub fn parse(file: &str, text: &str) -> Result<Containerfile, ParseErrors> {
    let fail = |errors| ParseErrors {
        file: file.to_owned(),
        errors,
    };
    let (escape, lines) = logical_lines(text).map_err(|e| fail(vec![e]))?;
    let mut p = Parser {
        escape,
        errors: Vec::new(),
    };
    let mut file_out = Containerfile {
        escape,
        global_args: Vec::new(),
        stages: Vec::new(),
    };
    for line in &lines {
        let (word, args) = line
            .text
            .split_once(char::is_whitespace)
            .unwrap_or((line.text.as_str(), ""));
        let keyword = word.to_ascii_uppercase();
        let args = args.trim_start();
        if UNSUPPORTED.contains(&keyword.as_str()) {
            p.error(
                line,
                0,
                format!("{keyword} is not supported by Slipway's builder"),
            );
            continue;
        }
        if !SUPPORTED.contains(&keyword.as_str()) {
            let hint = match nearest(&keyword) {
                Some(k) => format!("; did you mean {k}?"),
                None => String::new(),
            };
            p.error(
                line,
                0,
                format!("unknown instruction {}{hint}", quoted(word)),
            );
            continue;
        }
        if keyword == "FROM" {
            if let Some(stage) = p.from(line, args) {
                file_out.stages.push(stage);
            } else {
                // Keep following instructions attached to something.
                file_out.stages.push(Stage {
                    line: line.line,
                    base: String::new(),
                    platform: None,
                    name: None,
                    steps: Vec::new(),
                });
            }
            continue;
        }
        let Some(instruction) = p.instruction(line, &keyword, args) else {
            continue;
        };
        match file_out.stages.last_mut() {
            Some(stage) => stage.steps.push(Step {
                line: line.line,
                instruction,
                text: line.text.clone(),
            }),
            None => match instruction {
                Instruction::Arg(name, default) => file_out.global_args.push((name, default)),
                _ => p.error(
                    line,
                    0,
                    format!("{keyword} comes before the first FROM (only ARG may)"),
                ),
            },
        }
    }
    if file_out.stages.is_empty() && p.errors.is_empty() {
        p.errors.push(ParseError {
            line: 1,
            col: 1,
            message: "there is no FROM: a Containerfile starts from an image or scratch".into(),
        });
    }
    // Stage names are unique.
    let mut seen: Vec<(&str, usize)> = Vec::new();
    let mut duplicates = Vec::new();
    for stage in &file_out.stages {
        if let Some(name) = &stage.name {
            if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
                duplicates.push(ParseError {
                    line: stage.line,
                    col: 1,
                    message: format!(
                        "stage name {} is already used at line {first}",
                        quoted(name)
                    ),
                });
            } else {
                seen.push((name, stage.line));
            }
        }
    }
    p.errors.extend(duplicates);
    if p.errors.is_empty() {
        Ok(file_out)
    } else {
        p.errors.sort_by_key(|e| (e.line, e.col));
        Err(fail(p.errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subset_parses() {
        let text = r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM --platform=linux/amd64 $BASE AS build
ENV A=1 B="two words" \
    C=3
ENV OLD style value
ARG VERSION
WORKDIR /src
COPY --chown=1000:1000 ["a b", "c", "/dst/"]
RUN echo "$A" && \
    touch /out
RUN ["/bin/sh", "-c", "echo exec"]
FROM scratch
COPY --from=build /out /out
ADD files.tar /
LABEL org.example.x="y z" k=v
EXPOSE 80 53/udp
USER 1000:1000
SHELL ["/bin/sh", "-ec"]
CMD ["/out"]
ENTRYPOINT echo hi
"#;
        let f = parse("Containerfile", text).unwrap();
        assert_eq!(f.global_args, vec![("BASE".into(), Some("busybox".into()))]);
        assert_eq!(f.stages.len(), 2);
        let build = &f.stages[0];
        assert_eq!(
            (build.base.as_str(), build.name.as_deref()),
            ("$BASE", Some("build"))
        );
        assert_eq!(build.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(
            build.steps[0].instruction,
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "3".into())
            ])
        );
        assert_eq!(
            build.steps[1].instruction,
            Instruction::Env(vec![("OLD".into(), "style value".into())])
        );
        assert_eq!(
            build.steps[2].instruction,
            Instruction::Arg("VERSION".into(), None)
        );
        assert_eq!(
            build.steps[4].instruction,
            Instruction::Copy(Copy {
                from: None,
                chown: Some("1000:1000".into()),
                sources: vec!["a b".into(), "c".into()],
                destination: "/dst/".into()
            })
        );
        assert_eq!(build.steps[5].line, 10);
        assert_eq!(
            build.steps[5].instruction,
            Instruction::Run(Command::Shell(r#"echo "$A" && touch /out"#.into()))
        );
        assert!(
            matches!(&build.steps[6].instruction, Instruction::Run(Command::Exec(v)) if v.len() == 3)
        );
        let last = &f.stages[1];
        assert!(
            matches!(&last.steps[0].instruction, Instruction::Copy(c) if c.from.as_deref() == Some("build"))
        );
        assert_eq!(
            last.steps[2].instruction,
            Instruction::Label(vec![
                ("org.example.x".into(), "y z".into()),
                ("k".into(), "v".into())
            ])
        );
        assert_eq!(
            last.steps[6].instruction,
            Instruction::Cmd(Command::Exec(vec!["/out".into()]))
        );
        assert_eq!(
            last.steps[7].instruction,
            Instruction::Entrypoint(Command::Shell("echo hi".into()))
        );
    }

    #[test]
    fn everything_outside_the_subset_is_an_error_with_its_position() {
        let errors = |text: &str| parse("Containerfile", text).unwrap_err().to_string();
        assert_eq!(
            errors("FROM a\nRUNN x\n"),
            "Containerfile:2:1: unknown instruction \"RUNN\"; did you mean RUN?"
        );
        assert_eq!(
            errors("FROM a\nHEALTHCHECK CMD true\n"),
            "Containerfile:2:1: HEALTHCHECK is not supported by Slipway's builder"
        );
        assert_eq!(
            errors("RUN x\nFROM a\n"),
            "Containerfile:1:1: RUN comes before the first FROM (only ARG may)"
        );
        assert_eq!(
            errors("FROM a b c d\n"),
            "Containerfile:1:6: FROM takes an image and optionally AS name: FROM image [AS name]"
        );
        assert_eq!(
            errors("FROM a\nCOPY onlyone\n"),
            "Containerfile:2:6: COPY needs at least one source and a destination"
        );
        assert_eq!(
            errors("FROM a\nCOPY --chmod=644 a b\n"),
            "Containerfile:2:6: COPY --chmod is not supported (it takes --from, --chown)"
        );
        assert_eq!(errors("FROM a\nADD https://x/y.tar /\n"), "Containerfile:2:5: ADD https://x/y.tar: only local files can be added; download in a RUN step");
        assert_eq!(
            errors("FROM a\nENV X=\"unclosed\n"),
            "Containerfile:2:5: ENV: unclosed \" quote"
        );
        assert_eq!(
            errors("FROM a\nSHELL /bin/bash\n"),
            "Containerfile:2:7: SHELL needs a JSON array, e.g. SHELL [\"/bin/sh\", \"-c\"]"
        );
        assert_eq!(
            errors("FROM a\nEXPOSE 99999\n"),
            "Containerfile:2:8: EXPOSE \"99999\" is not a port such as 80 or 53/udp"
        );
        assert_eq!(
            errors("FROM a AS x\nFROM b AS x\n"),
            "Containerfile:2:1: stage name \"x\" is already used at line 1"
        );
        assert_eq!(
            errors("# only a comment\n"),
            "Containerfile:1:1: there is no FROM: a Containerfile starts from an image or scratch"
        );
        assert_eq!(
            errors("FROM a\nWORKDIR\n"),
            "Containerfile:2:1: WORKDIR needs arguments"
        );
        // Text from the file is quoted short and escaped: a file that is no
        // Containerfile is not reprinted into the log.
        let secret = format!("root:$6$salt${}:19000:0:99999:7:::", "h".repeat(80));
        let err = errors(&format!("{secret}\nFROM a\nSTOPSIGNAL\x1b[2J x\n"));
        assert_eq!(
            err,
            format!(
                "Containerfile:1:1: unknown instruction \"{}…\"\nContainerfile:3:1: unknown instruction \"STOPSIGNAL\\u{{1b}}[2J\"",
                &secret[..40]
            )
        );
        assert!(!err.contains(&secret[..60]));
        let long_flag = format!("FROM a\nCOPY --{}=1 a b\n", "f".repeat(200));
        assert!(errors(&long_flag).len() < 160, "{}", errors(&long_flag));
        // Every error of a file, in order.
        assert_eq!(errors("FROM a\nRUNN\nCOPY x\n").lines().count(), 2);
    }

    /// Seeded random damage to a valid file never makes the parser panic, and
    /// every error points at a line of the text.
    #[test]
    fn damaged_containerfiles_never_panic() {
        let seed = "ARG B=busybox\nFROM --platform=x $B AS a\nENV A=\"1 2\" \\\n  C=3\nCOPY --from=a [\"x\", \"/y\"]\nRUN [\"sh\"]\nEXPOSE 80/tcp\nSHELL [\"/bin/sh\",\"-c\"]\n";
        let alphabet = b"[]\"'=\\`#- \nAaFROMRUN:/$0";
        let mut state: u64 = 0x1234_5678_9abc_def1;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        for _ in 0..20_000 {
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len());
                match next(3) {
                    0 => bytes.truncate(at),
                    1 => bytes.insert(at.min(bytes.len()), alphabet[next(alphabet.len())]),
                    _ if !bytes.is_empty() => bytes[at] = alphabet[next(alphabet.len())],
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let lines = text.lines().count().max(1);
            if let Err(e) = parse("f", &text) {
                for err in &e.errors {
                    assert!(err.line >= 1 && err.line <= lines, "{text:?}: {err:?}");
                }
            }
        }
    }
}
