//! `GET /v2/_catalog`: the repositories the caller may pull from (or list, with
//! a catalog token), paginated.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{pagination, Params};
use crate::access::CallerKind;
use crate::error::{RegistryError, Result};
use crate::{repository, Registry};

#[derive(Serialize)]
struct Catalog {
    repositories: Vec<String>,
}

pub async fn get(registry: &Registry, headers: &HeaderMap, params: &Params) -> Result<Response> {
    let caller = registry.auth.authenticate(headers).await?;
    if !caller.may_use_registry() {
        return Err(match caller.kind {
            CallerKind::Credentials => {
                RegistryError::Denied("this caller may not list repositories".into())
            }
            _ => RegistryError::Unauthorized {
                challenge: registry
                    .auth
                    .challenge(headers, Some("registry:catalog:*"), false),
            },
        });
    }
    let (n, last) = pagination(params)?;
    let mut visible = Vec::new();
    let mut cursor = last.map(str::to_owned);
    // Filter by permission page by page until n + 1 are found or the table ends.
    loop {
        let page = repository::list(registry, cursor.as_deref(), 500).await?;
        let done = page.len() < 500;
        cursor = page.last().cloned();
        visible.extend(page.into_iter().filter(|r| caller.may_list(r)));
        if done || visible.len() as i64 > n {
            break;
        }
    }
    let more = visible.len() as i64 > n;
    visible.truncate(n as usize);
    let link = match (more, visible.last()) {
        (true, Some(last)) => Some(format!("</v2/_catalog?n={n}&last={last}>; rel=\"next\"")),
        _ => None,
    };
    let mut response = axum::Json(Catalog {
        repositories: visible,
    })
    .into_response();
    if let Some(link) = link {
        response.headers_mut().insert(
            header::LINK,
            link.parse()
                .expect("repository names are valid header text"),
        );
    }
    Ok(response)
}
