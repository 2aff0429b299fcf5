//! The responses the router writes itself: plain, short, and saying which
//! app and environment (and, for a refused request, what was wrong).

use std::io::Write;

/// What the router answers with itself.
pub(super) enum Page<'a> {
    /// 400: the request could not be read; says why.
    BadRequest(&'a (dyn std::fmt::Display + Sync)),
    /// 502: the instance failed to answer, or answered with something
    /// that is not HTTP.
    UpstreamFailed,
    /// 503: no instance is ready.
    NoInstance,
    /// 504: no response head in time.
    UpstreamTimeout,
}

/// The bodies, made once per router.
pub(super) struct Pages {
    no_instance: String,
    upstream_failed: String,
    upstream_timeout: String,
}

const BAD_REQUEST: &str = "400 Bad Request";

impl Pages {
    pub fn new(app: &str, env: &str) -> Pages {
        let (app, env) = (escape(app), escape(env));
        Pages {
            no_instance: page(
                "503 Service Unavailable",
                &format!("No instance of {app} ({env}) is ready to answer. Try again shortly."),
            ),
            upstream_failed: page(
                "502 Bad Gateway",
                &format!("The instance of {app} ({env}) that took this request failed to answer."),
            ),
            upstream_timeout: page(
                "504 Gateway Timeout",
                &format!(
                    "The instance of {app} ({env}) that took this request did not answer in time."
                ),
            ),
        }
    }

    /// Append the whole response to `out`; `close` adds `Connection: close`.
    pub fn write(&self, page: Page<'_>, close: bool, out: &mut Vec<u8>) {
        let bad_request;
        let (status, body) = match page {
            Page::BadRequest(why) => {
                bad_request = self::page(
                    BAD_REQUEST,
                    &format!(
                        "The router could not read this request: {}.",
                        escape(&why.to_string())
                    ),
                );
                (BAD_REQUEST, bad_request.as_str())
            }
            Page::UpstreamFailed => ("502 Bad Gateway", self.upstream_failed.as_str()),
            Page::NoInstance => ("503 Service Unavailable", self.no_instance.as_str()),
            Page::UpstreamTimeout => ("504 Gateway Timeout", self.upstream_timeout.as_str()),
        };
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
             cache-control: no-store\r\ncontent-length: {}\r\n",
            body.len()
        );
        if status.starts_with("503") {
            out.extend_from_slice(b"retry-after: 1\r\n");
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
    }
}

fn page(title: &str, text: &str) -> String {
    format!("<!doctype html>\n<title>{title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n")
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
