//! Who is calling: the API key taken from the request's credentials, and the permission checks of
//! the DSS API routers.

use std::sync::Arc;

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};
use base64::Engine;

use super::{catalog::ApiKey, state::AppState, wire::ApiError};

/// The authenticated caller.
pub(crate) struct Caller {
    pub(crate) key: ApiKey,
    pub(crate) source: &'static str,
}

impl Caller {
    pub(crate) fn require(&self, project: &str, perm: &str) -> Result<(), ApiError> {
        if self.key.can(project, perm) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "Action forbidden: API key {} lacks the {perm} permission on project {project}",
                self.key.config.id
            )))
        }
    }

    pub(crate) fn require_any(&self, project: &str, perms: &[&str]) -> Result<(), ApiError> {
        if perms.iter().any(|p| self.key.can(project, p)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "Action forbidden: API key {} lacks the {} permission on project {project}",
                self.key.config.id,
                perms.join(" or ")
            )))
        }
    }
}

/// Takes the API key from, in order: `Authorization: Basic base64(key:)` (the official client),
/// `Authorization: Bearer key`, then `X-DKU-APITicket: key`.
fn credentials(headers: &HeaderMap) -> Result<Option<(String, &'static str)>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("Invalid Authorization header"))?;
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::unauthorized("Invalid Authorization header: bad Basic credentials")
                })?;
            // The key is the user name; the password is ignored.
            let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
            return Ok(Some((user.to_owned(), "API_KEY")));
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Some((rest.to_owned(), "API_KEY")));
        }
        return Err(ApiError::unauthorized(format!(
            "Unsupported authorization scheme {scheme}"
        )));
    }
    if let Some(value) = headers.get("x-dku-apiticket") {
        let value = value
            .to_str()
            .map_err(|_| ApiError::unauthorized("Invalid X-DKU-APITicket header"))?;
        return Ok(Some((value.trim().to_owned(), "TICKET")));
    }
    Ok(None)
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let Some((secret, source)) = credentials(&parts.headers)? else {
            return Err(ApiError::unauthorized(
                "No API key provided: use HTTP Basic authentication with the API key as user name",
            ));
        };
        let key = state
            .key(&secret)
            .ok_or_else(|| ApiError::unauthorized("Invalid API key"))?;
        Ok(Caller { key, source })
    }
}
