//! Masking secrets in log output as it streams.
//!
//! Every secret value is hidden, and so are its base64 form and, for a
//! multi-line value, each of its lines. Output arrives in arbitrary chunks, so
//! a secret may be split across two: the masker holds back the longest tail
//! that could still be the start of a secret until the next chunk (or the end)
//! decides.

const MASK: &[u8] = b"********";
/// Lines of a multi-line secret shorter than this are not masked on their own
/// (a lone "}" or "-----" would blank out unrelated output).
const MIN_LINE: usize = 4;

pub struct Masker {
    patterns: Vec<Vec<u8>>,
    pending: Vec<u8>,
}

impl Masker {
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Masker {
        use base64::Engine as _;
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for value in secrets {
            if value.is_empty() {
                continue;
            }
            patterns.push(value.as_bytes().to_vec());
            patterns.push(
                base64::engine::general_purpose::STANDARD
                    .encode(value)
                    .into_bytes(),
            );
            if value.contains('\n') {
                for line in value.lines().map(str::trim_end) {
                    if line.len() >= MIN_LINE {
                        patterns.push(line.as_bytes().to_vec());
                    }
                }
            }
        }
        // Longest first, so a value wins over one of its own lines.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        patterns.dedup();
        Masker {
            patterns,
            pending: Vec::new(),
        }
    }

    /// Feed a chunk; returns what can be shown now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let (out, rest) = self.scan(false);
        self.pending = rest;
        out
    }

    /// The end of the stream: everything left, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let (out, _) = self.scan(true);
        self.pending.clear();
        out
    }

    fn scan(&self, at_end: bool) -> (Vec<u8>, Vec<u8>) {
        let buf = &self.pending;
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'outer: while i < buf.len() {
            for p in &self.patterns {
                if buf[i..].starts_with(p) {
                    out.extend_from_slice(MASK);
                    i += p.len();
                    continue 'outer;
                }
            }
            if !at_end {
                // Could a secret start here and continue in the next chunk?
                let tail = &buf[i..];
                if self
                    .patterns
                    .iter()
                    .any(|p| p.len() > tail.len() && p.starts_with(tail))
                {
                    return (out, tail.to_vec());
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        (out, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(secrets: &[&str], chunks: &[&str]) -> String {
        let mut m = Masker::new(secrets.iter().copied());
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c.as_bytes()));
        }
        out.extend(m.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn masks_whole_split_base64_and_multiline_secrets() {
        assert_eq!(run(&["hunter2"], &["pw=hunter2!"]), "pw=********!");
        // Split across chunks, even one byte at a time.
        assert_eq!(run(&["hunter2"], &["pw=hun", "ter2 ok"]), "pw=******** ok");
        let bytes: Vec<String> = "a hunter2 b".chars().map(String::from).collect();
        let chunks: Vec<&str> = bytes.iter().map(String::as_str).collect();
        assert_eq!(run(&["hunter2"], &chunks), "a ******** b");
        // base64 of the value.
        assert_eq!(run(&["hunter2"], &["aHVudGVyMg== end"]), "******** end");
        // A multi-line value: whole, and line by line.
        let key = "-----BEGIN KEY-----\nAAAABBBBCCCC\n-----END KEY-----";
        assert_eq!(run(&[key], &[key]), "********");
        assert_eq!(run(&[key], &["x AAAABBBBCCCC y"]), "x ******** y");
        // A prefix that does not complete is shown in the end.
        assert_eq!(run(&["hunter2"], &["hunt", "ing"]), "hunting");
        assert_eq!(run(&["hunter2"], &["hunte"]), "hunte");
        assert_eq!(run(&[], &["plain"]), "plain");
    }
}
