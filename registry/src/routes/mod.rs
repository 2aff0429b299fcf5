//! HTTP routes of the distribution API. Repository names contain `/`, so one
//! catch-all route parses the path ([`RegistryPath`]) and hands each request to
//! the module of its route group; handlers parse, call one domain function and
//! map the result.

mod base;
mod blob;
mod catalog;
mod manifest;
mod referrers;
mod tags;
mod upload;

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;

use crate::access::{Action, Caller, CallerKind};
use crate::error::{RegistryError, Result};
use crate::name::check_name;
use crate::Registry;

#[cfg(test)]
pub(crate) use blob::parse_range as blob_range;
#[cfg(test)]
pub(crate) use upload::parse_content_range as upload_content_range;

/// The registry's routes under `/v2/`, to be merged into the server's router.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/v2", get(base::get))
        .route("/v2/", get(base::get))
        .route("/v2/{*path}", any(dispatch))
        .with_state(registry)
}

/// The route group a response came from, for the server's request metrics.
#[derive(Clone, Copy, Debug)]
pub struct RouteLabel(pub &'static str);

/// A request path below `/v2/`, split into repository name and route.
#[derive(Debug, PartialEq, Eq)]
pub enum RegistryPath<'a> {
    Catalog,
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    Uploads { name: &'a str, id: Option<&'a str> },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> RegistryPath<'a> {
    pub fn parse(path: &'a str) -> Option<RegistryPath<'a>> {
        if path == "_catalog" {
            return Some(RegistryPath::Catalog);
        }
        if let Some(name) = path.strip_suffix("/tags/list") {
            return Some(RegistryPath::Tags { name });
        }
        let trimmed = path.strip_suffix('/').unwrap_or(path);
        if let Some(name) = trimmed.strip_suffix("/blobs/uploads") {
            return Some(RegistryPath::Uploads { name, id: None });
        }
        let (head, last) = trimmed.rsplit_once('/')?;
        let (name, kind) = head.rsplit_once('/')?;
        match kind {
            "manifests" => Some(RegistryPath::Manifest {
                name,
                reference: last,
            }),
            "blobs" => Some(RegistryPath::Blob { name, digest: last }),
            "referrers" => Some(RegistryPath::Referrers { name, digest: last }),
            "uploads" => name
                .strip_suffix("/blobs")
                .map(|name| RegistryPath::Uploads {
                    name,
                    id: Some(last),
                }),
            _ => None,
        }
    }

    fn name(&self) -> Option<&'a str> {
        match *self {
            RegistryPath::Catalog => None,
            RegistryPath::Tags { name }
            | RegistryPath::Manifest { name, .. }
            | RegistryPath::Blob { name, .. }
            | RegistryPath::Uploads { name, .. }
            | RegistryPath::Referrers { name, .. } => Some(name),
        }
    }
}

pub(crate) type Params = HashMap<String, String>;

async fn dispatch(
    State(registry): State<Registry>,
    method: Method,
    Path(path): Path<String>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (label, result) = route(&registry, &method, &path, &params, &headers, body).await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response.extensions_mut().insert(RouteLabel(label));
    response
}

async fn route(
    registry: &Registry,
    method: &Method,
    path: &str,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, Result<Response>) {
    let Some(parsed) = RegistryPath::parse(path) else {
        return (
            "/v2/unknown",
            Err(RegistryError::NameUnknown(format!(
                "no registry route matches /v2/{path}"
            ))),
        );
    };
    if let Some(name) = parsed.name() {
        if let Err(message) = check_name(name) {
            return ("/v2/invalid", Err(RegistryError::NameInvalid(message)));
        }
    }
    use RegistryPath as P;
    match (method.clone(), parsed) {
        (Method::GET, P::Catalog) => (
            "/v2/_catalog",
            catalog::get(registry, headers, params).await,
        ),
        (Method::GET, P::Tags { name }) => (
            "/v2/{name}/tags/list",
            tags::get(registry, headers, name, params).await,
        ),
        (Method::GET | Method::HEAD, P::Manifest { name, reference }) => (
            "/v2/{name}/manifests/{reference}",
            manifest::get(registry, headers, name, reference, method == Method::HEAD).await,
        ),
        (Method::PUT, P::Manifest { name, reference }) => (
            "/v2/{name}/manifests/{reference}",
            manifest::put(registry, headers, name, reference, body).await,
        ),
        (Method::DELETE, P::Manifest { name, reference }) => (
            "/v2/{name}/manifests/{reference}",
            manifest::delete(registry, headers, name, reference).await,
        ),
        (Method::GET | Method::HEAD, P::Blob { name, digest }) => (
            "/v2/{name}/blobs/{digest}",
            blob::get(registry, headers, name, digest, method == Method::HEAD).await,
        ),
        (Method::DELETE, P::Blob { name, digest }) => (
            "/v2/{name}/blobs/{digest}",
            blob::delete(registry, headers, name, digest).await,
        ),
        (Method::POST, P::Uploads { name, id: None }) => (
            "/v2/{name}/blobs/uploads/",
            upload::post(registry, headers, name, params, body).await,
        ),
        (Method::PATCH, P::Uploads { name, id: Some(id) }) => (
            "/v2/{name}/blobs/uploads/{id}",
            upload::patch(registry, headers, name, id, body).await,
        ),
        (Method::PUT, P::Uploads { name, id: Some(id) }) => (
            "/v2/{name}/blobs/uploads/{id}",
            upload::put(registry, headers, name, id, params, body).await,
        ),
        (Method::GET, P::Uploads { name, id: Some(id) }) => (
            "/v2/{name}/blobs/uploads/{id}",
            upload::status(registry, headers, name, id).await,
        ),
        (Method::DELETE, P::Uploads { name, id: Some(id) }) => (
            "/v2/{name}/blobs/uploads/{id}",
            upload::cancel(registry, headers, name, id).await,
        ),
        (Method::GET, P::Referrers { name, digest }) => (
            "/v2/{name}/referrers/{digest}",
            referrers::get(registry, headers, name, digest, params).await,
        ),
        (m, p) => (
            "/v2/unsupported",
            Err(RegistryError::Unsupported(format!(
                "{m} is not supported on {p:?}"
            ))),
        ),
    }
}

/// Authenticate the caller and check they may do `action` on `repo`.
pub(crate) async fn authorize(
    registry: &Registry,
    headers: &HeaderMap,
    repo: &str,
    action: Action,
) -> Result<Caller> {
    let caller = registry.auth.authenticate(headers).await?;
    if caller.may(repo, action) {
        return Ok(caller);
    }
    let actions = if action == Action::Push {
        "pull,push"
    } else {
        action.as_str()
    };
    let scope = format!("repository:{repo}:{actions}");
    Err(match caller.kind {
        CallerKind::Anonymous => RegistryError::Unauthorized {
            challenge: registry.auth.challenge(headers, Some(&scope), false),
        },
        CallerKind::ScopedToken => RegistryError::InsufficientScope {
            challenge: registry.auth.challenge(headers, Some(&scope), true),
            needed: scope.clone(),
        },
        CallerKind::Credentials => RegistryError::Denied(format!(
            "{} may not {} {repo}",
            caller.name.as_deref().unwrap_or("this caller"),
            action.as_str()
        )),
    })
}

/// The `Range` header of an upload session with `len` bytes, as distribution
/// writes it (`0-0` for an empty session).
pub fn range_header(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("0-{}", len.saturating_sub(1)))
        .expect("digits are a valid header")
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `n` and `last` query parameters of the paginated lists.
pub(crate) fn pagination(params: &Params) -> Result<(i64, Option<&str>)> {
    const MAX: i64 = 1000;
    let n = match params.get("n") {
        None => MAX,
        Some(n) => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                RegistryError::PaginationInvalid(format!("n={n:?} is not a non-negative integer"))
            })?
            .min(MAX),
    };
    Ok((n, params.get("last").map(String::as_str)))
}

#[cfg(test)]
mod tests {
    use super::RegistryPath as P;

    #[test]
    fn paths() {
        assert_eq!(P::parse("_catalog"), Some(P::Catalog));
        assert_eq!(P::parse("a/b/tags/list"), Some(P::Tags { name: "a/b" }));
        assert_eq!(
            P::parse("a/manifests/latest"),
            Some(P::Manifest {
                name: "a",
                reference: "latest"
            })
        );
        assert_eq!(
            P::parse("a/blobs/sha256:x"),
            Some(P::Blob {
                name: "a",
                digest: "sha256:x"
            })
        );
        assert_eq!(
            P::parse("a/b/blobs/uploads/"),
            Some(P::Uploads {
                name: "a/b",
                id: None
            })
        );
        assert_eq!(
            P::parse("a/b/blobs/uploads"),
            Some(P::Uploads {
                name: "a/b",
                id: None
            })
        );
        assert_eq!(
            P::parse("a/blobs/uploads/123"),
            Some(P::Uploads {
                name: "a",
                id: Some("123")
            })
        );
        assert_eq!(
            P::parse("blobs/blobs/x"),
            Some(P::Blob {
                name: "blobs",
                digest: "x"
            })
        );
        assert_eq!(
            P::parse("a/referrers/sha256:x"),
            Some(P::Referrers {
                name: "a",
                digest: "sha256:x"
            })
        );
        assert_eq!(P::parse("a/uploads/x"), None);
        assert_eq!(P::parse("a"), None);
        assert_eq!(P::parse("manifests/x"), None);
    }
}
