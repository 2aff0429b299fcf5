//! Registry errors and their one mapping to the spec's codes, statuses and bodies.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::digest::DigestError;

/// Everything a registry route can fail with. Each variant names the input that was
/// wrong; internal failures keep their source for the log and show the client only a
/// generic message.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    #[error("{0}")]
    BlobUploadInvalid(String),
    #[error("blob upload unknown to registry: {0}")]
    BlobUploadUnknown(String),
    #[error("{0}")]
    DigestInvalid(String),
    #[error("manifest references a blob or manifest unknown to this repository: {0}")]
    ManifestBlobUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("{0}")]
    SizeInvalid(String),
    #[error("{0}")]
    TagInvalid(String),
    /// Not authenticated, or a bearer token lacking the scope: the client should
    /// fetch a (new) token using the challenge.
    #[error("authentication required")]
    Unauthorized { challenge: String },
    /// A valid bearer token without the scope the request needs. RFC 6750 §3.1:
    /// 403 with the challenge naming the scope, so clients fetch a better token.
    #[error("the token does not grant {needed}")]
    InsufficientScope { challenge: String, needed: String },
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unsupported(String),
    /// A bad or out-of-order `Range`/`Content-Range`. `upload_offset` is set for
    /// upload sessions so the client learns where to resume.
    #[error("{message}")]
    RangeInvalid {
        message: String,
        upload_offset: Option<u64>,
        blob_size: Option<u64>,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PaginationInvalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<DigestError> for RegistryError {
    fn from(e: DigestError) -> Self {
        RegistryError::DigestInvalid(e.to_string())
    }
}

impl RegistryError {
    pub fn code(&self) -> &'static str {
        use RegistryError::*;
        match self {
            BlobUnknown(_) => "BLOB_UNKNOWN",
            BlobUploadInvalid(_) => "BLOB_UPLOAD_INVALID",
            BlobUploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            DigestInvalid(_) => "DIGEST_INVALID",
            ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            ManifestInvalid(_) => "MANIFEST_INVALID",
            ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            NameInvalid(_) => "NAME_INVALID",
            NameUnknown(_) => "NAME_UNKNOWN",
            SizeInvalid(_) => "SIZE_INVALID",
            TagInvalid(_) => "TAG_INVALID",
            Unauthorized { .. } => "UNAUTHORIZED",
            InsufficientScope { .. } => "DENIED",
            Denied(_) => "DENIED",
            Unsupported(_) => "UNSUPPORTED",
            RangeInvalid { .. } => "RANGE_INVALID",
            Conflict(_) => "DENIED",
            PaginationInvalid(_) => "PAGINATION_NUMBER_INVALID",
            TooLarge(_) => "SIZE_INVALID",
            Io(_) | Database(_) => "UNKNOWN",
        }
    }

    pub fn status(&self) -> StatusCode {
        use RegistryError::*;
        match self {
            BlobUnknown(_) | BlobUploadUnknown(_) | ManifestUnknown(_) | NameUnknown(_) => {
                StatusCode::NOT_FOUND
            }
            BlobUploadInvalid(_)
            | DigestInvalid(_)
            | ManifestBlobUnknown(_)
            | ManifestInvalid(_)
            | NameInvalid(_)
            | SizeInvalid(_)
            | TagInvalid(_)
            | PaginationInvalid(_) => StatusCode::BAD_REQUEST,
            TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Denied(_) | InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Unsupported(_) => StatusCode::METHOD_NOT_ALLOWED,
            RangeInvalid { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Conflict(_) => StatusCode::CONFLICT,
            Io(_) | Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn client_message(&self) -> String {
        match self {
            RegistryError::Io(_) | RegistryError::Database(_) => "internal server error".to_owned(),
            other => other.to_string(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: [ErrorEntry<'a>; 1],
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "registry request failed");
        }
        let body = ErrorBody {
            errors: [ErrorEntry {
                code: self.code(),
                message: self.client_message(),
                detail: None,
            }],
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            RegistryError::Unauthorized { challenge }
            | RegistryError::InsufficientScope { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            RegistryError::RangeInvalid {
                upload_offset,
                blob_size,
                ..
            } => {
                if let Some(offset) = upload_offset {
                    headers.insert(header::RANGE, crate::routes::range_header(*offset));
                }
                if let Some(size) = blob_size {
                    headers.insert(
                        header::CONTENT_RANGE,
                        HeaderValue::from_str(&format!("bytes */{size}")).unwrap(),
                    );
                }
            }
            _ => {}
        }
        headers.insert(
            "Docker-Distribution-API-Version",
            HeaderValue::from_static("registry/2.0"),
        );
        response
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
