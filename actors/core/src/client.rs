//! How actors reach the API: find an ApiServer through its process group (a local one first,
//! else a remote one over the cluster transport) and call it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::ActorRef;
use ractor::rpc::CallResult;
use serde_json::Value;

use crate::APISERVER_GROUP;
use crate::error::ApiError;
use crate::messages::{ApiReply, ApiRequest, ApiServerMsg};

/// Which remote API server callers in this process try first; it moves on when one fails,
/// so a dead master is skipped until the transport notices it is gone.
static PREFERRED: AtomicUsize = AtomicUsize::new(0);

/// The API servers to try, in order: a local one, then the remote ones starting from the
/// preferred one.
fn apiservers() -> Vec<ActorRef<ApiServerMsg>> {
    let local = ractor::pg::get_local_members(&APISERVER_GROUP.to_owned());
    if let Some(cell) = local.into_iter().next() {
        return vec![ActorRef::from(cell)];
    }
    let mut remote = ractor::pg::get_members(&APISERVER_GROUP.to_owned());
    remote.sort_by_key(|c| c.get_id().to_string());
    let n = remote.len();
    if n == 0 {
        return Vec::new();
    }
    let start = PREFERRED.load(Ordering::Relaxed) % n;
    remote.rotate_left(start);
    remote.into_iter().map(ActorRef::from).collect()
}

/// Sends `request` to an API server and waits up to `timeout` for the answer. When several
/// masters serve the API, one that does not answer within its share of the time is skipped
/// for the next.
pub async fn call(request: ApiRequest, timeout: Duration) -> Result<ApiReply, ApiError> {
    let servers = apiservers();
    if servers.is_empty() {
        return Err(ApiError::Unavailable("no API server is reachable".into()));
    }
    let share = if servers.len() > 1 {
        (timeout / servers.len() as u32).max(Duration::from_millis(500))
    } else {
        timeout
    };
    let mut last = ApiError::Unavailable("no API server is reachable".into());
    for server in servers {
        let request = request.clone();
        match server
            .call(|reply| ApiServerMsg::Call(request, reply), Some(share))
            .await
        {
            Ok(CallResult::Success(reply)) => return Ok(reply),
            Ok(CallResult::Timeout) => {
                last = ApiError::Unavailable("the API server did not answer in time".into());
            }
            Ok(CallResult::SenderError) | Err(_) => {
                last = ApiError::Unavailable("the API server went away".into());
            }
        }
        PREFERRED.fetch_add(1, Ordering::Relaxed);
    }
    Err(last)
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
