//! The API's errors: a status and a JSON body naming the problem.

use std::fmt;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::Error;
use crate::storage::StoreError;

/// An error answer: `{"error": {"code": "…", "message": "…"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, `not_found`, `invalid_request`, `conflict`,
    /// `unavailable`, ...
    code: String,
    /// For people: what is wrong and, where it helps, what to do.
    message: String,
}

impl ApiError {
    /// An error with this status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl fmt::Display) -> Self {
        Self { status, code, message: message.to_string() }
    }

    /// 400: the request itself is wrong.
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: valid credentials without the needed scope.
    pub fn forbidden(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl fmt::Display) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Store(StoreError::PreconditionFailed) => {
                Self::conflict("the object changed while this request was applied; try again")
            }
            Error::Store(StoreError::InvalidKey(key)) => {
                tracing::warn!(%key, "a request named an object that cannot exist");
                Self::invalid("an identifier in the request cannot name a stored object")
            }
            Error::Store(error) => {
                tracing::error!(%error, "store unavailable");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "storage is unavailable; try again")
            }
            Error::Config(error) => {
                tracing::error!(%error, "stored configuration is invalid");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "invalid_configuration", error)
            }
            Error::Corrupt(error) => {
                tracing::error!(%error, "stored state is corrupt");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "stored state could not be read")
            }
            Error::Machine(error) => {
                tracing::error!(%error, "this instance failed");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "this instance failed; try again")
            }
            Error::Invalid(error) => Self::invalid(error),
            Error::Internal(error) => {
                tracing::error!(%error, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl From<crate::definitions::Refused> for ApiError {
    fn from(refused: crate::definitions::Refused) -> Self {
        use crate::definitions::Refused;
        match refused {
            Refused::Invalid(problem) => Self::invalid(problem),
            Refused::NotFound(problem) => Self::not_found(problem),
            Refused::InUse(_) | Refused::Exists(_) => Self::conflict(refused.to_string()),
            Refused::Failed(error) => error.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Error::Store(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, super::json_body(&body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
