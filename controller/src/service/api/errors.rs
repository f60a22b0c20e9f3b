//! The API's one error shape: a status and `{"error": "..."}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::error;

use crate::service::commands::CommandError;
use crate::service::db::DbError;
use crate::service::registry::RegistryError;
use crate::service::releases::UploadError;

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500, logged; the caller sees only that something failed inside.
    pub fn internal(e: &dyn std::error::Error) -> ApiError {
        error!(error = %e, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        if e.is_conflict() {
            return ApiError::new(
                StatusCode::CONFLICT,
                "a concurrent change got there first; retry",
            );
        }
        ApiError::internal(&e)
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::Exists(_)
            | RegistryError::KeyInUse { .. }
            | RegistryError::AlreadyRevoked(_) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            RegistryError::NotFound(_) => ApiError::not_found(e.to_string()),
            RegistryError::Db(e) => e.into(),
            RegistryError::Details(e) => ApiError::internal(&e),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        match e {
            CommandError::NotFound(_) => ApiError::not_found(e.to_string()),
            CommandError::Revoked(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            CommandError::Sign(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            CommandError::Bus(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            CommandError::Db(e) => e.into(),
            CommandError::Details(e) => ApiError::internal(&e),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        use swell_proto::Error as P;
        let status = match &e {
            UploadError::Manifest(P::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Manifest(P::Json(_) | P::Malformed { .. }) => StatusCode::BAD_REQUEST,
            UploadError::Manifest(_) | UploadError::Image(_) => StatusCode::UNPROCESSABLE_ENTITY,
            UploadError::WrongRelease { .. } | UploadError::Length { .. } => {
                StatusCode::BAD_REQUEST
            }
            UploadError::Exists { .. } => StatusCode::CONFLICT,
            UploadError::NotStaged(_) | UploadError::NoSuchTarget(_) => StatusCode::NOT_FOUND,
            UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Interrupted(_) => StatusCode::BAD_REQUEST,
            UploadError::Db(_) | UploadError::Details(_) | UploadError::Io { .. } => {
                return match e {
                    UploadError::Db(db) => db.into(),
                    other => ApiError::internal(&other),
                };
            }
        };
        ApiError::new(status, e.to_string())
    }
}
