//! `ApiError`: the one way errors leave cratedock, as cargo's `{"errors":[{"detail":...}]}`.
//!
//! The rule this module keeps: the client gets a message it can act on; internal details (I/O
//! errors, connection error chains, paths) travel with the response to the observing
//! middleware, which logs them once, in the request's span, and never sends them.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::mirror::MirrorError;
use crate::names::NameError;
use crate::registry::{RegistryError, Status};

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// 401 with `WWW-Authenticate: Cargo login_url="..."`, so cargo prints the login hint.
    Unauthorized {
        detail: String,
        login_url: String,
    },
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(String),
    Conflict(String),
    PayloadTooLarge(String),
    /// A check cannot be made now; a retry later may pass.
    Unavailable(String),
    UriTooLong(String),
    /// The upstream failed; `cause` (for the log) may hold internals that `detail` leaves out.
    BadGateway {
        detail: String,
        cause: String,
    },
    GatewayTimeout {
        detail: String,
        cause: String,
    },
    /// cratedock itself failed; the client learns only that, the log learns `cause`.
    Internal {
        cause: String,
    },
}

/// The cause of a failed request, handed to the observing middleware in the response's
/// extensions to be logged once.
#[derive(Debug, Clone)]
pub(super) struct ErrorCause(pub String);

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest(detail.into())
    }

    pub fn unauthorized(detail: impl Into<String>, login_url: impl Into<String>) -> Self {
        Self::Unauthorized {
            detail: detail.into(),
            login_url: login_url.into(),
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden(detail.into())
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound(detail.into())
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict(detail.into())
    }

    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::PayloadTooLarge(detail.into())
    }

    pub fn bad_gateway(detail: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::BadGateway {
            detail: detail.into(),
            cause: cause.into(),
        }
    }

    pub fn gateway_timeout(detail: impl Into<String>, cause: impl Into<String>) -> Self {
        Self::GatewayTimeout {
            detail: detail.into(),
            cause: cause.into(),
        }
    }

    pub fn internal(cause: impl Into<String>) -> Self {
        Self::Internal {
            cause: cause.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client is told.
    pub fn detail(&self) -> &str {
        match self {
            Self::BadRequest(d)
            | Self::Forbidden(d)
            | Self::NotFound(d)
            | Self::MethodNotAllowed(d)
            | Self::Conflict(d)
            | Self::PayloadTooLarge(d)
            | Self::Unavailable(d)
            | Self::UriTooLong(d)
            | Self::Unauthorized { detail: d, .. }
            | Self::BadGateway { detail: d, .. }
            | Self::GatewayTimeout { detail: d, .. } => d,
            Self::Internal { .. } => {
                "cratedock failed to serve this request; its log has the cause (search for this response's x-request-id)"
            }
        }
    }

    fn cause(&self) -> Option<&str> {
        match self {
            Self::BadGateway { cause, .. }
            | Self::GatewayTimeout { cause, .. }
            | Self::Internal { cause } => Some(cause),
            _ => None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status(), self.detail())
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<MirrorError> for ApiError {
    fn from(e: MirrorError) -> Self {
        match e {
            MirrorError::NotFound(d) => Self::not_found(d),
            MirrorError::Refused(d) => Self::Forbidden(d),
            MirrorError::Offline(d) => Self::not_found(d),
            MirrorError::Upstream(u) if u.is_timeout() => {
                Self::gateway_timeout(u.message(), u.to_string())
            }
            MirrorError::Upstream(u) => Self::bad_gateway(u.message(), u.to_string()),
            e @ MirrorError::WaitTimeout { .. } => {
                Self::gateway_timeout(e.to_string(), e.to_string())
            }
            MirrorError::Store(cause) => Self::internal(cause),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e.status {
            Status::BadRequest => Self::BadRequest(e.detail),
            Status::Forbidden => Self::Forbidden(e.detail),
            Status::NotFound => Self::NotFound(e.detail),
            Status::Conflict => Self::Conflict(e.detail),
            Status::TooLarge => Self::PayloadTooLarge(e.detail),
            Status::Unavailable => Self::Unavailable(e.detail),
            Status::Internal => Self::internal(e.detail),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errors": [{ "detail": self.detail() }] }).to_string();
        let mut resp = (self.status(), body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Self::Unauthorized { login_url, .. } = &self {
            let value = match login_url.as_str() {
                "" => "Bearer realm=\"cratedock\"".to_owned(),
                url => format!("Cargo login_url=\"{}\"", url.replace('"', "%22")),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        let cause = self.cause().unwrap_or(self.detail()).to_owned();
        resp.extensions_mut().insert(ErrorCause(cause));
        resp
    }
}

pub(super) async fn unknown_route(uri: http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!(
        "no such route: {path} (index files are under /{{registry}}/index/, downloads under /{{registry}}/api/v1/crates/)"
    ))
}

pub(super) async fn method_not_allowed(method: http::Method) -> ApiError {
    ApiError::MethodNotAllowed(format!("method {method} is not allowed on this route"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::RegistryName;
    use crate::upstream::{Failure, UpstreamError};

    async fn body_of(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn internals_go_to_the_log_not_to_the_client() {
        let r = RegistryName::new("up").unwrap();
        let e = UpstreamError::new(
            &r,
            "index file 3/s/syn",
            Failure::Connect("dns error: /etc/resolv.conf".into()),
        );
        let resp = ApiError::from(MirrorError::Upstream(e)).into_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let cause = resp.extensions().get::<ErrorCause>().unwrap().0.clone();
        assert!(cause.contains("resolv.conf"), "{cause}");
        let body = body_of(resp).await;
        let detail = body["errors"][0]["detail"].as_str().unwrap();
        assert_eq!(
            detail,
            "cannot reach the upstream of `up` for index file 3/s/syn"
        );

        let resp =
            ApiError::from(MirrorError::Store("disk: /var/lib/x: EIO".into())).into_response();
        assert_eq!(resp.status(), 500);
        assert!(!body_of(resp).await.to_string().contains("/var/lib"));
    }

    #[tokio::test]
    async fn unauthorized_carries_the_login_hint() {
        let resp = ApiError::unauthorized("a token is needed", "https://cd.example/-/login")
            .into_response();
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.headers()[header::WWW_AUTHENTICATE],
            "Cargo login_url=\"https://cd.example/-/login\""
        );
        for (e, status) in [
            (ApiError::bad_request("x"), 400),
            (ApiError::forbidden("x"), 403),
            (ApiError::not_found("x"), 404),
            (ApiError::conflict("x"), 409),
            (ApiError::too_large("x"), 413),
            (ApiError::gateway_timeout("x", "y"), 504),
        ] {
            let resp = e.into_response();
            assert_eq!(resp.status(), status);
            assert_eq!(body_of(resp).await["errors"][0]["detail"], "x");
        }
    }
}
