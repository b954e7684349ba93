//! axum's `Path` and `Query`, refusing with the host's JSON errors: axum's own
//! rejections are plain text, and every error the host answers is JSON (the
//! inference protocol's `{"error": "..."}` shape under `/v2`). Done in the
//! extractors rather than in a middleware, so requests that succeed pay nothing.

use super::{oip::OipError, ApiError};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// A refusal in the shape of the route's protocol.
pub(crate) fn reject(
    path: &str,
    status: StatusCode,
    code: &'static str,
    message: String,
) -> Response {
    let e = ApiError::new(status, code, message);
    match path.starts_with("/v2") {
        true => OipError(e).into_response(),
        false => e.into_response(),
    }
}

pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(reject(
                parts.uri.path(),
                e.status(),
                "bad_request",
                e.body_text(),
            )),
        }
    }
}

pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(reject(
                parts.uri.path(),
                e.status(),
                "bad_request",
                e.body_text(),
            )),
        }
    }
}

/// A JSON object as `T`. Only an object: serde would otherwise read a struct from
/// an array by position (`[1, 2]` as a struct's first two fields).
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    use serde_json::Value;
    match serde_json::from_slice(bytes).map_err(|e| e.to_string())? {
        v @ Value::Object(_) => serde_json::from_value(v).map_err(|e| e.to_string()),
        Value::Array(_) => Err("expected a JSON object, got an array".into()),
        Value::String(_) => Err("expected a JSON object, got a string".into()),
        Value::Number(_) => Err("expected a JSON object, got a number".into()),
        Value::Bool(_) => Err("expected a JSON object, got a boolean".into()),
        Value::Null => Err("expected a JSON object, got null".into()),
    }
}
