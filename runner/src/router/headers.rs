//! Header filters on the wire: which headers describe one hop (never
//! forwarded: RFC 9110 7.6.1), what a `Connection` header says, and the
//! framing headers' values.

/// Headers that describe one hop. The router writes its own `Connection`,
/// `Transfer-Encoding` and (for a switch) `Upgrade`.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// What the `Connection` headers of one message say.
#[derive(Default)]
pub(super) struct Connection<'b> {
    pub close: bool,
    pub keep_alive: bool,
    pub upgrade: bool,
    /// The headers' values, for `names`; more than a few is rare.
    values: Vec<&'b [u8]>,
}

impl<'b> Connection<'b> {
    pub fn add(&mut self, value: &'b [u8]) {
        for token in tokens(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
        self.values.push(value);
    }

    /// Whether a `Connection` header names `name` (it is then hop-by-hop).
    pub fn names(&self, name: &str) -> bool {
        self.values
            .iter()
            .any(|v| tokens(v).any(|t| t.eq_ignore_ascii_case(name.as_bytes())))
    }
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// A `Content-Length` value: ASCII digits only, at most 18 of them (no sign,
/// no list, no spaces inside).
pub(super) fn content_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Whether a `Transfer-Encoding` value is exactly `chunked` (the only coding
/// the router forwards).
pub(super) fn is_chunked(value: &[u8]) -> bool {
    value.trim_ascii().eq_ignore_ascii_case(b"chunked")
}
