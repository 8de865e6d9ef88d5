//! The admin endpoints every process serves: list its actors, kill one by name. Tests and
//! operators use them to kill actors on purpose; only `system:masters` may call them.

use axum::Json;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use shoal_core::ApiError;
use shoal_core::faults::{Faults, PeerFault};

use crate::tls::Identity;

fn status_response(err: &ApiError) -> Response {
    let code = StatusCode::from_u16(err.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(err.to_status())).into_response()
}

fn require_admin(identity: &Identity) -> Result<(), Response> {
    if identity.user.is_none() {
        return Err(status_response(&ApiError::Unauthorized));
    }
    if !identity.is_admin() {
        return Err(status_response(&ApiError::Forbidden(format!(
            "User \"{}\" cannot use the admin endpoints",
            identity.user.clone().unwrap_or_default()
        ))));
    }
    Ok(())
}

async fn list_actors(Extension(identity): Extension<Identity>) -> Response {
    if let Err(resp) = require_admin(&identity) {
        return resp;
    }
    let mut names: Vec<String> = ractor::registry::registered()
        .into_iter()
        .map(|n| n.to_string())
        .collect();
    names.sort();
    Json(json!({"actors": names})).into_response()
}

async fn kill_actor(
    Extension(identity): Extension<Identity>,
    Path(name): Path<String>,
) -> Response {
    if let Err(resp) = require_admin(&identity) {
        return resp;
    }
    match ractor::registry::where_is(name.clone()) {
        Some(cell) => {
            tracing::warn!(actor = %name, "killed through the admin endpoint");
            cell.kill();
            Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "message": format!("actor {name} killed"), "code": 200}))
                .into_response()
        }
        None => status_response(&ApiError::NotFound(shoal_core::error::Subject {
            group: String::new(),
            resource: "actors".into(),
            kind: "Actor".into(),
            name,
        })),
    }
}

async fn list_faults(Extension(identity): Extension<Identity>) -> Response {
    if let Err(resp) = require_admin(&identity) {
        return resp;
    }
    Json(json!({"faults": Faults::global().snapshot()})).into_response()
}

async fn set_fault(
    Extension(identity): Extension<Identity>,
    Path(peer): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Err(resp) = require_admin(&identity) {
        return resp;
    }
    let fault: PeerFault = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return status_response(&ApiError::BadRequest(format!(
                "a fault is {{\"partitioned\": bool, \"delay_ms\": n}}: {e}"
            )));
        }
    };
    tracing::warn!(%peer, ?fault, "fault set through the admin endpoint");
    Faults::global().set(&peer, fault);
    Json(json!({"faults": Faults::global().snapshot()})).into_response()
}

/// The `/debug/actors` and `/debug/faults` routes.
pub fn router() -> axum::Router {
    axum::Router::new()
        .route("/debug/actors", get(list_actors))
        .route("/debug/actors/{name}/kill", post(kill_actor))
        .route("/debug/faults", get(list_faults))
        .route("/debug/faults/{peer}", post(set_fault))
}
