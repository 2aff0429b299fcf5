//! Message heads: a client's request head and an instance's response head,
//! parsed with `httparse` and written again for the other side. The router
//! never forwards a head's bytes as they came: it writes a canonical head of
//! its own (hop-by-hop headers out, `X-Forwarded-*` in, one framing header),
//! so the two sides can never disagree about where a message ends.

use super::headers::{self, Connection};

/// The largest head the router reads (nginx's default limit is 32 KiB).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields one head may carry.
const MAX_HEADERS: usize = 100;

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes (responses only).
    Close,
}

impl Framing {
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::Empty | Framing::Length(0))
    }
}

/// A client's request head, parsed and written for the instance.
#[derive(Debug)]
pub(super) struct Request {
    /// Bytes the head took from the client's buffer.
    pub len: usize,
    pub framing: Framing,
    /// The client spoke HTTP/1.0.
    pub http10: bool,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The client asks to switch protocols (`Connection: upgrade`).
    pub upgrade: bool,
    /// A `HEAD` request: its response has no body.
    pub head: bool,
    /// Safe to send again on another connection if the first one closed
    /// before any answer: an idempotent method and no body.
    pub replayable: bool,
}

/// Why a request head was refused (400).
#[derive(Debug, thiserror::Error)]
pub(super) enum BadRequest {
    #[error("the request head is malformed ({0})")]
    Malformed(httparse::Error),
    #[error("the request head is larger than {} KiB", MAX_HEAD / 1024)]
    TooLarge,
    #[error("the request has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the request's Content-Length is not a number")]
    BadLength,
    #[error("the request has Content-Length headers that disagree")]
    ConflictingLengths,
    #[error("the request has both Content-Length and Transfer-Encoding")]
    LengthAndEncoding,
    #[error("the request's Transfer-Encoding is not `chunked` (the only one accepted)")]
    UnsupportedEncoding,
    #[error("an HTTP/1.0 request cannot have a Transfer-Encoding")]
    EncodingInHttp10,
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("the request target is not a path or an http(s) URL")]
    BadTarget,
}

/// Parse a request head at the start of `buf`; `Ok(None)` if it has not all
/// arrived yet. On success the head for the instance is appended to `out`,
/// with `client` (the peer's address) appended to `X-Forwarded-For`.
pub(super) fn request(
    buf: &[u8],
    client: &[u8],
    out: &mut Vec<u8>,
) -> Result<Option<Request>, BadRequest> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(BadRequest::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadRequest::TooManyHeaders),
        Err(e) => return Err(BadRequest::Malformed(e)),
    };
    if len > MAX_HEAD {
        return Err(BadRequest::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(BadRequest::Malformed(httparse::Error::Token));
    };
    let http10 = version == 0;
    let fields = &*parsed.headers;

    let mut length = None;
    let mut encoding = None;
    let mut host = None;
    let mut connection = Connection::default();
    let mut upgrade_field = false;
    for field in fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = headers::content_length(field.value).ok_or(BadRequest::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadRequest::ConflictingLengths);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // One header, exactly `chunked`: anything else is refused
            // rather than guessed at.
            if encoding.is_some() || !headers::is_chunked(field.value) {
                return Err(BadRequest::UnsupportedEncoding);
            }
            encoding = Some(());
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(BadRequest::DuplicateHost);
            }
            host = Some(field.value);
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add(field.value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade_field = true;
        }
    }
    let framing = match (length, encoding) {
        (Some(_), Some(())) => return Err(BadRequest::LengthAndEncoding),
        (None, Some(())) if http10 => return Err(BadRequest::EncodingInHttp10),
        (None, Some(())) => Framing::Chunked,
        (Some(n), None) => Framing::Length(n),
        (None, None) => Framing::Empty,
    };
    let upgrade = !http10 && connection.upgrade && upgrade_field;

    // The target in origin form; an absolute URL gives its path, and its
    // authority as Host when none came.
    let (path, authority) = origin_form(target)?;
    let host_field = host.is_some();
    let host = host.or(authority.map(str::as_bytes));

    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if path.starts_with('?') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forwarded_for = Vec::new();
    for field in fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(field.value);
            continue;
        }
        let kept_upgrade = upgrade && name.eq_ignore_ascii_case("upgrade");
        if !kept_upgrade
            && (headers::is_hop_by_hop(name)
                || connection.names(name)
                || name.eq_ignore_ascii_case("content-length")
                || name.eq_ignore_ascii_case("x-forwarded-proto")
                || name.eq_ignore_ascii_case("x-forwarded-host"))
        {
            continue;
        }
        field_line(out, name.as_bytes(), field.value);
    }
    if let (Some(authority), false) = (authority, host_field) {
        field_line(out, b"host", authority.as_bytes());
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for earlier in forwarded_for {
        out.extend_from_slice(earlier.trim_ascii());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(client);
    out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    if let Some(host) = host {
        field_line(out, b"x-forwarded-host", host);
    }
    match framing {
        Framing::Length(n) => length_line(out, n),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Empty | Framing::Close => {}
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let idempotent = matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
    );
    Ok(Some(Request {
        len,
        framing,
        http10,
        keep_alive: if http10 {
            connection.keep_alive && !connection.close
        } else {
            !connection.close
        },
        upgrade,
        head: method == "HEAD",
        replayable: idempotent && !framing.has_body(),
    }))
}

/// `target`'s path (with query) and, for an absolute URL, its authority.
fn origin_form(target: &str) -> Result<(&str, Option<&str>), BadRequest> {
    if target.starts_with('/') || target == "*" {
        return Ok((target, None));
    }
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            target
                .get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|_| &target[scheme.len()..])
        })
        .ok_or(BadRequest::BadTarget)?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return Err(BadRequest::BadTarget);
    }
    Ok((if path.is_empty() { "/" } else { path }, Some(authority)))
}

/// An instance's response head, parsed and written for the client.
#[derive(Debug)]
pub(super) struct Response {
    /// Bytes the head took from the instance's buffer.
    pub len: usize,
    pub status: u16,
    /// A 1xx other than 101: another head follows.
    pub interim: bool,
    /// How the instance delimits the body.
    pub framing: Framing,
    /// The body goes to the client in chunks (re-encoded).
    pub chunked_out: bool,
    /// The instance's connection cannot carry another request.
    pub upstream_close: bool,
    /// The client's connection closes after this response.
    pub client_close: bool,
}

/// Why a response head was refused (502).
#[derive(Debug, thiserror::Error)]
pub(super) enum BadResponse {
    #[error("the response head is malformed ({0})")]
    Malformed(httparse::Error),
    #[error("the response head is larger than {} KiB", MAX_HEAD / 1024)]
    TooLarge,
    #[error("the response has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("the response's Content-Length is not a number")]
    BadLength,
    #[error("the response has Content-Length headers that disagree")]
    ConflictingLengths,
    #[error("the response has both Content-Length and Transfer-Encoding")]
    LengthAndEncoding,
    #[error("the response's Transfer-Encoding is not `chunked`")]
    UnsupportedEncoding,
    #[error("the response switches protocols though the request did not ask to")]
    UnaskedSwitch,
}

/// Parse a response head at the start of `buf` (`Ok(None)`: not all here
/// yet) and append the head for the client to `out`. `close` says the
/// client's connection closes after this response anyway.
pub(super) fn response(
    buf: &[u8],
    request: &Request,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<Response>, BadResponse> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(BadResponse::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse::TooManyHeaders),
        Err(e) => return Err(BadResponse::Malformed(e)),
    };
    if len > MAX_HEAD {
        return Err(BadResponse::TooLarge);
    }
    let (Some(version), Some(status)) = (parsed.version, parsed.code) else {
        return Err(BadResponse::Malformed(httparse::Error::Status));
    };
    let reason = parsed.reason.unwrap_or("");
    let fields = &*parsed.headers;
    let switch = status == 101;
    if switch && !request.upgrade {
        return Err(BadResponse::UnaskedSwitch);
    }
    let interim = (100..200).contains(&status) && !switch;

    let mut length = None;
    let mut encoding = None;
    let mut connection = Connection::default();
    for field in fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = headers::content_length(field.value).ok_or(BadResponse::BadLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(BadResponse::ConflictingLengths);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if encoding.is_some() || !headers::is_chunked(field.value) {
                return Err(BadResponse::UnsupportedEncoding);
            }
            encoding = Some(());
        } else if name.eq_ignore_ascii_case("connection") {
            connection.add(field.value);
        }
    }
    // RFC 9112 6.3: no body after HEAD, 1xx, 204 and 304, whatever the
    // headers say (a HEAD's or 304's Content-Length describes the GET).
    let bodiless = request.head || status < 200 || status == 204 || status == 304;
    let framing = match (length, encoding) {
        _ if bodiless => Framing::Empty,
        (Some(_), Some(())) => return Err(BadResponse::LengthAndEncoding),
        (None, Some(())) => Framing::Chunked,
        (Some(n), None) => Framing::Length(n),
        (None, None) => Framing::Close,
    };
    let upstream_close =
        connection.close || (version == 0 && !connection.keep_alive) || framing == Framing::Close;
    // Chunks go to an HTTP/1.1 client as chunks; an HTTP/1.0 client gets
    // the bytes and the end of the connection.
    let chunked_out = framing == Framing::Chunked && !request.http10;
    let client_close = close
        || switch
        || framing == Framing::Close
        || (framing == Framing::Chunked && request.http10);

    out.extend_from_slice(b"HTTP/1.1 ");
    decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for field in fields {
        let name = field.name;
        let kept_upgrade = switch && name.eq_ignore_ascii_case("upgrade");
        let kept_length = name.eq_ignore_ascii_case("content-length")
            && matches!(framing, Framing::Empty)
            && (request.head || status == 304);
        if !kept_upgrade
            && !kept_length
            && (headers::is_hop_by_hop(name)
                || connection.names(name)
                || name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        field_line(out, name.as_bytes(), field.value);
    }
    match framing {
        Framing::Length(n) => length_line(out, n),
        Framing::Chunked if chunked_out => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::Chunked | Framing::Close | Framing::Empty => {}
    }
    let connection_field: &[u8] = match () {
        _ if switch => b"connection: upgrade\r\n",
        _ if interim => b"",
        _ if client_close => b"connection: close\r\n",
        _ if request.http10 => b"connection: keep-alive\r\n",
        _ => b"",
    };
    out.extend_from_slice(connection_field);
    out.extend_from_slice(b"\r\n");
    Ok(Some(Response {
        len,
        status,
        interim,
        framing,
        chunked_out,
        upstream_close,
        client_close,
    }))
}

fn length_line(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(b"content-length: ");
    decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal digits (no formatting machinery: this runs twice a
/// request).
fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}
