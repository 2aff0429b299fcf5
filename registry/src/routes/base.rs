//! `GET /v2/`: the API version check, and where Docker clients learn how to log in.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::access::CallerKind;
use crate::error::RegistryError;
use crate::Registry;

pub async fn get(State(registry): State<Registry>, headers: HeaderMap) -> Response {
    let mut response = match registry.auth.authenticate(&headers).await {
        // Anonymous callers are always challenged here, even with anonymous pull on:
        // clients decide whether to log in from this answer, and a 200 would make
        // them push without the credentials they have.
        Ok(caller) if caller.kind != CallerKind::Anonymous && caller.may_use_registry() => {
            axum::Json(serde_json::json!({})).into_response()
        }
        Ok(_) => RegistryError::Unauthorized {
            challenge: registry.auth.challenge(&headers, None, false),
        }
        .into_response(),
        Err(e) => e.into_response(),
    };
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    response.extensions_mut().insert(super::RouteLabel("/v2/"));
    response
}
