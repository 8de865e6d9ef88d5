//! The admin endpoints every process serves: list its actors, kill one by name. Tests and
//! operators use them to kill actors on purpose; only `system:masters` may call them. Masters
//! also serve their control plane's membership, and remove a master from it
//! (`kubectl delete --raw /debug/control-plane/members/NAME`).

use axum::Json;
use axum::extract::{Extension, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use shoal_core::ApiError;
use shoal_core::faults::{Faults, PeerFault};
use shoal_store::raft::{GroupView, MemberChange, MemberView, RaftHost};

use crate::tls::Identity;

pub(crate) fn status_response(err: &ApiError) -> Response {
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

/// The control plane's membership, per shard group, as this master's replicas see it.
async fn control_plane(
    Extension(identity): Extension<Identity>,
    Extension(host): Extension<RaftHost>,
) -> Response {
    if let Err(resp) = require_admin(&identity) {
        return resp;
    }
    let mut views: Vec<GroupView> = host.all().iter().map(|(_, r)| r.view()).collect();
    views.sort_by_key(|v| v.group);
    let groups: Vec<serde_json::Value> = views
        .iter()
        .map(|view| {
            let members: Vec<serde_json::Value> = view
                .members
                .iter()
                .map(|m| {
                    json!({
                        "name": m.member.name,
                        "address": m.member.addr,
                        "voter": m.voter,
                        "leader": m.leader,
                    })
                })
                .collect();
            json!({"group": view.group, "term": view.term, "members": members})
        })
        .collect();
    Json(json!({"groups": groups})).into_response()
}

/// Removes a master from every shard group (joint consensus through each group's leader).
/// The removed master's replicas stop receiving the log; to bring it back, wipe its data
/// directory and join it again.
async fn remove_member(
    Extension(identity): Extension<Identity>,
    Extension(host): Extension<RaftHost>,
    Path(name): Path<String>,
) -> Response {
    if let Err(resp) = require_admin(&identity) {
        return resp;
    }
    let replicas = host.all();
    let views: Vec<GroupView> = replicas.iter().map(|(_, r)| r.view()).collect();
    let subject = || shoal_core::error::Subject {
        group: String::new(),
        resource: "members".into(),
        kind: "Member".into(),
        name: name.clone(),
    };
    if !views
        .iter()
        .any(|v| v.members.iter().any(|m| m.member.name == name))
    {
        return status_response(&ApiError::NotFound(subject()));
    }
    let last_voter = views.iter().any(|v| {
        let voters: Vec<&MemberView> = v.members.iter().filter(|m| m.voter).collect();
        voters.len() == 1 && voters[0].member.name == name
    });
    if last_voter {
        return status_response(&ApiError::Conflict(
            subject(),
            "it is the only voting member left".into(),
        ));
    }
    tracing::warn!(member = %name, "removing a master from the control plane");
    let changes = replicas.into_iter().map(|(_, replica)| {
        let change = MemberChange::Remove { name: name.clone() };
        async move { replica.change_members(change, 2).await }
    });
    let failures: Vec<String> = futures::future::join_all(changes)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if !failures.is_empty() {
        return status_response(&ApiError::Unavailable(failures.join("; ")));
    }
    Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "message": format!("master {name} removed from every shard group"), "code": 200}))
        .into_response()
}

/// The control-plane membership routes, on masters.
pub fn control_plane_router(host: RaftHost) -> axum::Router {
    axum::Router::new()
        .route("/debug/control-plane", get(control_plane))
        .route(
            "/debug/control-plane/members/{name}",
            axum::routing::delete(remove_member),
        )
        .layer(Extension(host))
}
