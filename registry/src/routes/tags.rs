//! `GET /v2/<name>/tags/list` with `n`/`last` pagination and `Link` headers.

use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{authorize, pagination, Params};
use crate::access::Action;
use crate::error::Result;
use crate::{tag, Registry};

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: Vec<String>,
}

pub async fn get(
    registry: &Registry,
    headers: &HeaderMap,
    name: &str,
    params: &Params,
) -> Result<Response> {
    authorize(registry, headers, name, Action::Pull).await?;
    let (n, last) = pagination(params)?;
    let mut tags = tag::list(registry, name, last, n + 1).await?;
    let more = tags.len() as i64 > n;
    tags.truncate(n as usize);
    let link = match (more, tags.last()) {
        (true, Some(last)) => Some(format!(
            "</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""
        )),
        _ => None,
    };
    let mut response = axum::Json(TagList { name, tags }).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(
            header::LINK,
            link.parse().expect("tag names are valid header text"),
        );
    }
    Ok(response)
}
