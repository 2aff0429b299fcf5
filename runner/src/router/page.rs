//! The pages the router answers with itself: plain, short, and saying which
//! app and environment.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// The bodies, made once per router.
pub(super) struct Pages {
    no_instance: Bytes,
    upstream_failed: Bytes,
    upstream_timeout: Bytes,
}

impl Pages {
    pub fn new(app: &str, env: &str) -> Pages {
        let page = |title: &str, text: &str| {
            let text = format!(
                "<!doctype html>\n<title>{title}</title>\n<h1>{title}</h1>\n<p>{text}</p>\n",
            );
            Bytes::from(text)
        };
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

    pub fn no_instance(&self) -> Response<ProxyBody> {
        respond(StatusCode::SERVICE_UNAVAILABLE, &self.no_instance)
    }

    pub fn upstream_failed(&self) -> Response<ProxyBody> {
        respond(StatusCode::BAD_GATEWAY, &self.upstream_failed)
    }

    pub fn upstream_timeout(&self) -> Response<ProxyBody> {
        respond(StatusCode::GATEWAY_TIMEOUT, &self.upstream_timeout)
    }
}

fn respond(status: StatusCode, body: &Bytes) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::Page(Some(body.clone())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
