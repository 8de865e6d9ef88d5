//! Each master announces its API server with a Lease in `kube-system`
//! (`apiserver-<name>`, labelled `apiserver.kubernetes.io/identity=kube-apiserver`, as
//! Kubernetes does), renewed every few seconds and carrying the API's address. Nodes read the
//! live ones to know where their local API endpoint may forward.

use std::time::Duration;

use jiff::Timestamp;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use serde_json::{Value, json};
use shoal_core::client::call_ok;
use shoal_core::time::{format_micro_time, parse_time};
use shoal_core::{ApiError, ApiRequest, Verb};

/// The label every API server identity lease carries.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// The annotation holding the API server's address (host:port).
pub const ADDRESS_ANNOTATION: &str = "shoal.io/api-address";
/// How long an identity lease lasts without renewal.
pub const LEASE_SECONDS: i64 = 10;

/// The lease announcing master `name`'s API at `address`, renewed at `now`; keeps the
/// metadata (uid, resourceVersion) of `existing`.
pub fn identity_lease(
    name: &str,
    address: &str,
    now: Timestamp,
    existing: Option<&Value>,
) -> Value {
    let mut lease = existing.cloned().unwrap_or_else(|| {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": format!("apiserver-{name}"), "namespace": "kube-system"},
        })
    });
    lease["metadata"]["labels"] = json!({ IDENTITY_LABEL: "kube-apiserver" });
    lease["metadata"]["annotations"] = json!({ ADDRESS_ANNOTATION: address });
    lease["spec"] = json!({
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": format_micro_time(now),
    });
    lease
}

/// The API addresses of the leases in `list` that are live at `now`.
pub fn live_addresses(list: &Value, now: Timestamp) -> Vec<String> {
    let mut out: Vec<String> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|lease| {
                    let renewed = lease
                        .pointer("/spec/renewTime")
                        .and_then(Value::as_str)
                        .and_then(parse_time);
                    let duration = lease
                        .pointer("/spec/leaseDurationSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    renewed.is_some_and(|r| r.as_second() + duration >= now.as_second())
                })
                .filter_map(|lease| {
                    lease
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(ADDRESS_ANNOTATION))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// Lists the identity leases through the API.
pub async fn list_identities(timeout: Duration) -> Result<Value, ApiError> {
    let mut req = ApiRequest::new(
        Verb::List,
        "coordination.k8s.io",
        "v1",
        "leases",
        Some("kube-system"),
        None,
    );
    req.options.label_selector = Some(format!("{IDENTITY_LABEL}=kube-apiserver"));
    call_ok(req, timeout).await
}

/// Messages of the identity actor (local only).
#[derive(RactorMessage)]
pub enum IdentityMsg {
    Renew,
}

/// What the identity actor announces.
#[derive(Clone)]
pub struct IdentityArgs {
    pub name: String,
    pub address: String,
    pub period: Duration,
}

/// Keeps this master's identity lease renewed.
#[derive(Clone)]
pub struct ApiServerIdentity;

const CALL: Duration = Duration::from_secs(3);

async fn renew(args: &IdentityArgs) -> Result<(), ApiError> {
    let name = format!("apiserver-{}", args.name);
    let get = ApiRequest::new(
        Verb::Get,
        "coordination.k8s.io",
        "v1",
        "leases",
        Some("kube-system"),
        Some(&name),
    );
    let existing = match call_ok(get, CALL).await {
        Ok(v) => Some(v),
        Err(ApiError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let lease = identity_lease(
        &args.name,
        &args.address,
        Timestamp::now(),
        existing.as_ref(),
    );
    let req = match existing {
        Some(_) => ApiRequest::new(
            Verb::Update,
            "coordination.k8s.io",
            "v1",
            "leases",
            Some("kube-system"),
            Some(&name),
        ),
        None => ApiRequest::new(
            Verb::Create,
            "coordination.k8s.io",
            "v1",
            "leases",
            Some("kube-system"),
            None,
        ),
    };
    call_ok(req.with_body(&lease), CALL).await.map(|_| ())
}

impl Actor for ApiServerIdentity {
    type Msg = IdentityMsg;
    type State = IdentityArgs;
    type Arguments = IdentityArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<IdentityMsg>,
        args: IdentityArgs,
    ) -> Result<IdentityArgs, ActorProcessingErr> {
        myself.send_interval(args.period, || IdentityMsg::Renew);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<IdentityMsg>,
        _msg: IdentityMsg,
        state: &mut IdentityArgs,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(err) = renew(state).await {
            tracing::debug!(error = %err, "renewing the API server's identity lease failed; retrying");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_leases_with_an_address_count() {
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().expect("time");
        let fresh = identity_lease("m1", "10.0.0.1:6443", now, None);
        let stale = identity_lease(
            "m2",
            "10.0.0.2:6443",
            "2026-01-01T00:00:10Z".parse().expect("time"),
            None,
        );
        let mut bare = identity_lease("m3", "x", now, None);
        bare["metadata"]["annotations"] = json!({});
        let list = json!({"items": [fresh, stale, bare]});
        assert_eq!(live_addresses(&list, now), vec!["10.0.0.1:6443".to_owned()]);
    }

    #[test]
    fn renewing_keeps_the_object_identity() {
        let now: Timestamp = "2026-01-01T00:00:30Z".parse().expect("time");
        let mut first = identity_lease("m1", "a:1", now, None);
        first["metadata"]["resourceVersion"] = json!("7");
        let again = identity_lease("m1", "a:1", now, Some(&first));
        assert_eq!(again["metadata"]["resourceVersion"], "7");
        assert_eq!(again["spec"]["holderIdentity"], "m1");
    }
}
