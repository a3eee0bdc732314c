//! `ApiError`: the one way errors leave cratedock, as cargo's `{"errors":[{"detail":...}]}`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::names::NameError;
use crate::proxy::ProxyError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.to_string())
    }
}

impl From<ProxyError> for ApiError {
    fn from(e: ProxyError) -> Self {
        let status = match &e {
            ProxyError::NotFound(_) => StatusCode::NOT_FOUND,
            ProxyError::Upstream(u) if u.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::WaitTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            // Logged once, here, where it is turned into a response.
            tracing::warn!(status = self.status.as_u16(), detail = %self.detail, "request failed");
        }
        let body = serde_json::json!({ "errors": [{ "detail": self.detail }] }).to_string();
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

pub async fn unknown_route(uri: http::Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!(
        "no such route: {path} (index files are under /{{registry}}/index/, downloads under /{{registry}}/api/v1/crates/)"
    ))
}

pub async fn method_not_allowed(method: http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method {method} is not allowed on this route"),
    )
}
