//! The request and response filters: hop-by-hop headers out, the
//! `X-Forwarded-*` headers in, the target in origin form.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Uri;
use http::Request;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether the request asks to switch protocols (WebSocket).
pub(super) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "upgrade"))
}

/// Filter a client's request for the instance. `client` is the peer address
/// as a header value (made once per connection).
pub(super) fn request<B>(request: &mut Request<B>, client: &HeaderValue, upgrade: bool) {
    if request.uri().scheme().is_some() || request.uri().authority().is_some() {
        // Absolute form: the instance gets the path, and a Host if none came.
        if let Some(authority) = request.uri().authority() {
            if !request.headers().contains_key(header::HOST) {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    request.headers_mut().insert(header::HOST, host);
                }
            }
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *request.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
    }
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    let forwarded_for = match headers.get(&X_FORWARDED_FOR) {
        Some(earlier) => {
            let mut joined = earlier.as_bytes().to_vec();
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client.clone())
        }
        None => client.clone(),
    };
    headers.insert(X_FORWARDED_FOR, forwarded_for);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    match headers.get(header::HOST).cloned() {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

/// Filter an instance's response for the client.
pub(super) fn response(headers: &mut HeaderMap, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
}

/// Remove hop-by-hop headers and those the `Connection` header names. With
/// `upgrade`, `Upgrade` stays and `Connection: upgrade` is set again.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(name);
            }
        }
    }
    for name in &HOP_BY_HOP {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}
