//! How actors reach the API: find an ApiServer through its process group (a local one first,
//! else a remote one over the cluster transport) and call it.

use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde_json::Value;

use crate::APISERVER_GROUP;
use crate::error::ApiError;
use crate::messages::{ApiReply, ApiRequest, ApiServerMsg};

fn apiserver() -> Option<ActorRef<ApiServerMsg>> {
    let local = ractor::pg::get_local_members(&APISERVER_GROUP.to_owned());
    let cell = local.into_iter().next().or_else(|| {
        ractor::pg::get_members(&APISERVER_GROUP.to_owned())
            .into_iter()
            .next()
    })?;
    Some(ActorRef::from(cell))
}

/// Sends `request` to an API server and waits up to `timeout` for the answer.
pub async fn call(request: ApiRequest, timeout: Duration) -> Result<ApiReply, ApiError> {
    let server =
        apiserver().ok_or_else(|| ApiError::Unavailable("no API server is reachable".into()))?;
    match server
        .call(|reply| ApiServerMsg::Call(request, reply), Some(timeout))
        .await
    {
        Ok(CallResult::Success(reply)) => Ok(reply),
        Ok(CallResult::Timeout) => Err(ApiError::Unavailable(
            "the API server did not answer in time".into(),
        )),
        Ok(CallResult::SenderError) | Err(_) => {
            Err(ApiError::Unavailable("the API server went away".into()))
        }
    }
}

/// Like [`call`], but a non-2xx answer becomes the error it carries.
pub async fn call_ok(request: ApiRequest, timeout: Duration) -> Result<Value, ApiError> {
    let reply = call(request, timeout).await?;
    if reply.is_success() {
        return Ok(reply.json());
    }
    Err(error_from_status(reply.code, &reply.json()))
}

/// Rebuilds an error from a `Status` body, keeping the code's meaning.
pub fn error_from_status(code: u16, status: &Value) -> ApiError {
    let message = status["message"].as_str().unwrap_or_default().to_owned();
    let subject = crate::error::Subject {
        group: status
            .pointer("/details/group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        resource: status
            .pointer("/details/kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        kind: String::new(),
        name: status
            .pointer("/details/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    match code {
        404 => ApiError::NotFound(subject),
        409 if status["reason"] == "AlreadyExists" => ApiError::AlreadyExists(subject),
        409 => ApiError::Conflict(subject, message),
        400 => ApiError::BadRequest(message),
        401 => ApiError::Unauthorized,
        403 => ApiError::Forbidden(message),
        410 => ApiError::Gone(message),
        503 => ApiError::Unavailable(message),
        _ => ApiError::Internal(message),
    }
}
