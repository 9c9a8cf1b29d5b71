//! The HTTP vocabulary shared by the DSS API routers and the admin API: DSS error answers (status
//! and JSON body), gateway pages and dropped answers for faults, JSON answers, and the extraction of
//! path and query parameters with DSS-style rejections. A leaf module: it knows no handler and no
//! state.

use axum::{
    Json, Router,
    extract::{FromRequestParts, Path},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::MethodRouter,
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::faults::DropMode;

/// Marks a response that must not be sent: the connection is closed instead.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResetConnection;

/// Error types of DSS error bodies. The exact types and statuses real DSS uses are not verified;
/// these follow its Java exception naming and are documented in `docs/emulator.md`.
pub(crate) mod error_type {
    pub(crate) const UNAUTHORIZED: &str = "com.dataiku.dip.exceptions.UnauthorizedException";
    pub(crate) const FORBIDDEN: &str = "com.dataiku.dip.exceptions.ForbiddenException";
    pub(crate) const NOT_FOUND: &str = "com.dataiku.dip.server.controllers.NotFoundException";
    pub(crate) const BAD_REQUEST: &str = "com.dataiku.dip.exceptions.BadRequestException";
    pub(crate) const TOO_MANY_REQUESTS: &str = "com.dataiku.dip.exceptions.TooManyRequestsException";
    pub(crate) const INTERNAL: &str = "com.dataiku.dip.exceptions.DKUException";
    pub(crate) const CONFLICT: &str = "com.dataiku.dip.exceptions.ConflictException";
}

/// A DSS error answer: a status and a JSON body `{errorType, message, detailedMessage}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) error_type: &'static str,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            error_type,
            message: message.into(),
        }
    }
    pub(crate) fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, error_type::UNAUTHORIZED, message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, error_type::FORBIDDEN, message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, error_type::NOT_FOUND, message)
    }
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, error_type::BAD_REQUEST, message)
    }
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error_type::INTERNAL, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "errorType": self.error_type,
            "message": self.message,
            "detailedMessage": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

/// An HTML error page as a reverse proxy in front of DSS would send it.
pub(crate) fn gateway_page(status: StatusCode) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    (status, [(header::CONTENT_TYPE, "text/html")], body).into_response()
}

/// The answer to a call whose response is dropped.
pub(crate) fn dropped(mode: DropMode) -> Response {
    match mode {
        DropMode::Reset => {
            let mut r = StatusCode::BAD_GATEWAY.into_response();
            r.extensions_mut().insert(ResetConnection);
            r
        }
        DropMode::BadGateway => gateway_page(StatusCode::BAD_GATEWAY),
        DropMode::Unavailable => gateway_page(StatusCode::SERVICE_UNAVAILABLE),
        DropMode::GatewayTimeout => gateway_page(StatusCode::GATEWAY_TIMEOUT),
    }
}

/// Path parameters whose rejection is a DSS JSON error.
pub(crate) struct P<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| P(t))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// Query parameters, with repeated keys kept (`tags=a&tags=b`).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn new(raw: Option<String>) -> Query {
        Query(raw.map_or_else(Vec::new, |q| {
            url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()
        }))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A boolean as Python (`True`) or anyone else (`true`, `1`) sends it.
    pub(crate) fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!("Invalid boolean for {name}: {v}"))),
        }
    }
}

fn json_bytes(bytes: Vec<u8>) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        bytes,
    )
        .into_response()
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Response, ApiError> {
    serde_json::to_vec(value)
        .map(json_bytes)
        .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))
}

/// Registers a route under its canonical path and with the trailing slash toggled, because
/// clients differ (the official client uses `/jobs/{id}/` but `/log`; others use `/log/`).
pub(crate) fn both<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    path: &str,
    handler: MethodRouter<S>,
) -> Router<S> {
    router
        .route(path, handler.clone())
        .route(&toggle_slash(path), handler)
}

pub(crate) fn toggle_slash(path: &str) -> String {
    match path.strip_suffix('/') {
        Some(p) => p.to_owned(),
        None => format!("{path}/"),
    }
}
