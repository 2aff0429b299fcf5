//! The extractors every REST API handler reads its input with: [`Path`],
//! [`Query`], [`Json`], [`OptionalJson`] and [`Bytes`]. They read what axum's
//! do, but a refusal is an [`ApiError::Input`] in the API's JSON envelope,
//! saying where the problem is (`in`: path, query, header or body; `field`:
//! the parameter, or the body field as a path like `patterns[2]`), never
//! axum's plain-text rejection. `Json` is also the response type.
//!
//! Architecture invariant: `src/api` takes no input through axum's own
//! `Path`, `Query`, `Json` or `Bytes` (`tests/api_errors.rs` reads the
//! sources to check), so a route added later answers every malformed
//! request in the envelope without doing anything.

use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ApiError, Input, Part};

/// Path parameters (`/pipelines/{id}`): a value that does not parse is 400
/// `bad_parameter` naming the parameter.
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        let names: Vec<String> = RawPathParams::from_request_parts(parts, state)
            .await
            .map(|raw| raw.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default();
        let rejection = match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => return Ok(Path(value)),
            Err(rejection) => rejection,
        };
        let PathRejection::FailedToDeserializePathParams(failed) = rejection else {
            return Err(ApiError::Internal(format!("path parameters: {rejection}")));
        };
        let bad = |field: &str, value: &str, expected: &str| {
            Input::new(
                StatusCode::BAD_REQUEST,
                "bad_parameter",
                Part::Path,
                Some(field.to_owned()),
                format!("path parameter {field}: {value:?} is not {expected}"),
            )
        };
        let input = match failed.into_kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => bad(&key, &value, expected(expected_type)),
            ErrorKind::ParseErrorAtIndex {
                index,
                value,
                expected_type,
            } => {
                let key = names.get(index).map_or("?", String::as_str);
                bad(key, &value, expected(expected_type))
            }
            ErrorKind::ParseError {
                value,
                expected_type,
            } => {
                let key = names.first().map_or("?", String::as_str);
                bad(key, &value, expected(expected_type))
            }
            ErrorKind::InvalidUtf8InPathParam { key } => bad(&key, "…", "valid UTF-8"),
            ErrorKind::DeserializeError {
                key,
                value,
                message,
            } => bad(&key, &value, &message),
            other => return Err(ApiError::Internal(format!("path parameters: {other}"))),
        };
        Err(ApiError::Input(input))
    }
}

/// What a Rust type named in a parse error means to a client.
fn expected(type_name: &str) -> &str {
    match type_name {
        "i64" => "an integer from -9223372036854775808 to 9223372036854775807",
        "u64" | "usize" => "an integer from 0 to 18446744073709551615",
        "u32" => "an integer from 0 to 4294967295",
        "bool" => "true or false",
        other => other,
    }
}

/// The query string: a parameter that does not parse, a missing one or an
/// unknown one (where the type refuses unknown fields) is 400
/// `bad_parameter` naming it.
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let message = e.inner().to_string();
                let field = field_of(&e.path().to_string(), &message);
                ApiError::Input(Input::new(
                    StatusCode::BAD_REQUEST,
                    "bad_parameter",
                    Part::Query,
                    field.clone(),
                    match field {
                        Some(f) => format!("query parameter {f}: {message}"),
                        None => format!("query string: {message}"),
                    },
                ))
            })
    }
}

/// The field an error is about: the path serde_path_to_error tracked, or
/// for a missing, unknown or duplicate field (which serde reports at its
/// parent) the name serde quotes in the message.
fn field_of(path: &str, message: &str) -> Option<String> {
    let quoted = ["missing field `", "unknown field `", "duplicate field `"]
        .iter()
        .find_map(|start| message.strip_prefix(start))
        .and_then(|rest| rest.split('`').next());
    let path = (path != ".").then_some(path);
    match (path, quoted) {
        // An unknown field's path already ends with it.
        (Some(p), Some(q)) if p == q || p.ends_with(&format!(".{q}")) => Some(p.to_owned()),
        (Some(p), Some(q)) => Some(format!("{p}.{q}")),
        (Some(p), None) => Some(p.to_owned()),
        (None, Some(q)) => Some(q.to_owned()),
        (None, None) => None,
    }
}

/// A JSON object body (`Content-Type: application/json`): no or another
/// content type is 415, a body past the route's limit 413, text that is not
/// JSON 400 `malformed_json`, and JSON that is not the object the route
/// reads (not an object, a field of the wrong type, missing or unknown) 422
/// `invalid_body` naming the field. Every request body of the API is an
/// object, so `[]` is never read as an empty one.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        json_content_type(req.headers())?;
        let Bytes(body) = Bytes::from_request(req, state).await?;
        parse_object(&body).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// An optional JSON object body: nothing (or only white space) is
/// `T::default()`, whatever the content type; anything else is read as
/// [`Json`] reads it.
pub struct OptionalJson<T>(pub T);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers().clone();
        let Bytes(body) = Bytes::from_request(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        json_content_type(&headers)?;
        parse_object(&body).map(OptionalJson)
    }
}

/// `application/json` or another `application/…+json`, parameters allowed.
fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let json = value.as_deref().is_some_and(|v| {
        v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
    });
    if json {
        return Ok(());
    }
    Err(ApiError::Input(Input::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        Part::Header,
        Some("content-type".into()),
        match value {
            None => "the body must be JSON, sent with Content-Type: application/json".into(),
            Some(v) => format!(
                "Content-Type {v:?}: the body must be JSON, sent with Content-Type: \
                 application/json"
            ),
        },
    )))
}

fn parse_object<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::Input(Input::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            Part::Body,
            None,
            format!("the body is not JSON: {e}"),
        ))
    })?;
    if !value.is_object() {
        return Err(ApiError::Input(Input::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            Part::Body,
            None,
            "the body must be a JSON object".into(),
        )));
    }
    whole_numbers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        let field = field_of(&e.path().to_string(), &message);
        ApiError::Input(Input::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            Part::Body,
            field.clone(),
            match field {
                Some(f) => format!("body field {f}: {message}"),
                None => format!("body: {message}"),
            },
        ))
    })
}

/// A number without a fraction (`3.0`) is an integer, as JSON Schema has
/// it: made one, so that an integer field takes it.
fn whole_numbers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0) else {
                return;
            };
            // Within i64 (or u64 for large positive ones), which f64 reaches
            // exactly. Not -2^63 itself: serde_json reads an integer within
            // i64 as one, so an f64 of -2^63 is an integer beyond i64
            // (-9223372036854775809 rounds to it), which an i64 field refuses.
            if f > -9.223_372_036_854_775_808e18 && f < 9.223_372_036_854_775_808e18 {
                *n = (f as i64).into();
            } else if (0.0..1.844_674_407_370_955_2e19).contains(&f) {
                *n = (f as u64).into();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// The raw body, within the route's size limit (413 `too_large` past it; a
/// body that breaks off or stalls is 400 `unreadable_body`).
pub struct Bytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Bytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Bytes)
            .map_err(|rejection| {
                let (status, code) = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
                } else {
                    (StatusCode::BAD_REQUEST, "unreadable_body")
                };
                ApiError::Input(Input::new(
                    status,
                    code,
                    Part::Body,
                    None,
                    if status == StatusCode::PAYLOAD_TOO_LARGE {
                        "the body is larger than this route accepts".to_owned()
                    } else {
                        format!("the body could not be read: {}", rejection.body_text())
                    },
                ))
            })
    }
}
