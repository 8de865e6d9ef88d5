//! Evictions (`POST pods/{name}/eviction`): a pod's deletion asked for through the policy
//! API, allowed only as far as the PodDisruptionBudget that covers it lets it go.

use jiff::Timestamp;

use super::*;

impl ApiCore {
    /// `POST pods/{name}/eviction`: deletes the pod with the Eviction's `deleteOptions` once
    /// the disruption budget that covers it allows (see [`Self::take_disruption`]). A pod on
    /// its way already is left to go; a pod that has not started or has finished goes
    /// whatever the budgets say, as in Kubernetes.
    pub(super) async fn evict(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let eviction = Value::Object(parse_object(body)?);
        let api_version = eviction.get("apiVersion").and_then(Value::as_str);
        if !matches!(api_version, None | Some("policy/v1" | "policy/v1beta1"))
            || !matches!(
                eviction.get("kind").and_then(Value::as_str),
                None | Some("Eviction")
            )
        {
            return Err(ApiError::BadRequest(format!(
                "the body of an eviction must be a policy/v1 Eviction, not {} {}",
                api_version.unwrap_or_default(),
                eviction
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            )));
        }
        // policy/v1beta1's Eviction (kubectl before 1.22 sends it) has the same fields.
        let mut typed = eviction.clone();
        typed["apiVersion"] = json!("policy/v1");
        if let Some(Err(e)) = crate::kinds::roundtrip("Eviction", &typed) {
            return Err(ApiError::BadRequest(format!(
                "the body of an eviction could not be read: {e}"
            )));
        }
        if eviction.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            return Err(ApiError::BadRequest(
                "name in URL does not match name in Eviction object".into(),
            ));
        }
        if let (Some(ns), Some(body_ns)) = (
            namespace,
            eviction
                .pointer("/metadata/namespace")
                .and_then(Value::as_str),
        ) && ns != body_ns
        {
            return Err(ApiError::BadRequest(
                "namespace in URL does not match namespace in Eviction object".into(),
            ));
        }
        let (_, current) = self.load(info, namespace, name).await?;
        let pod: Value = serde_json::from_slice(&current.value)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !is_deleting(&pod) {
            let phase = pod
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("Pending");
            if !matches!(phase, "Pending" | "Succeeded" | "Failed") {
                self.take_disruption(namespace.unwrap_or_default(), name, &pod, ctx)
                    .await?;
            }
            let options = eviction
                .get("deleteOptions")
                .filter(|o| !o.is_null())
                .map(|o| serde_json::to_vec(o).unwrap_or_default())
                .unwrap_or_default();
            self.delete(info, namespace, name, &options, ctx).await?;
        }
        Ok(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "code": 201,
        }))
    }

    /// Asks the one PodDisruptionBudget covering `pod` (if any) for leave to evict it, and
    /// records the disruption in the budget's status when it is granted, against the revision
    /// the list showed. Two budgets over one pod are an internal error, as in Kubernetes; a
    /// budget changed meanwhile is listed again.
    async fn take_disruption(
        &self,
        namespace: &str,
        pod_name: &str,
        pod: &Value,
        ctx: &WriteCtx,
    ) -> Result<(), ApiError> {
        use crate::kinds::policy::{EvictionCheck, check_eviction};
        const ATTEMPTS: usize = 5;
        let budgets = resources::find("policy", "v1", "poddisruptionbudgets")
            .ok_or_else(|| ApiError::Internal("poddisruptionbudgets are not served".into()))?;
        for _ in 0..ATTEMPTS {
            let (all, _) = self
                .list(budgets, Some(namespace), &RequestOptions::default())
                .await?;
            let mut covering = all
                .into_iter()
                .filter(|b| shoal_core::disruption::budget_covers(b, pod));
            let budget = match (covering.next(), covering.next()) {
                (None, _) => return Ok(()),
                (Some(one), None) => one,
                (Some(_), Some(_)) => {
                    return Err(ApiError::Internal(
                        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
                    ));
                }
            };
            let name = budget
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            // The listed budget carries the revision its status is written against.
            let rev = budget
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::Internal(format!("budget {name} has no version")))?;
            let mut taken = match check_eviction(&budget, pod_name, pod, Timestamp::now()) {
                EvictionCheck::Allow => return Ok(()),
                EvictionCheck::Refuse(err) => return Err(err),
                EvictionCheck::Take(taken) => taken,
            };
            if ctx.dry_run {
                return Ok(());
            }
            if let Some(map) = taken.as_object_mut() {
                metadata_mut(map).remove("resourceVersion");
            }
            let value =
                serde_json::to_vec(&taken).map_err(|e| ApiError::Internal(e.to_string()))?;
            match self
                .commit(
                    WriteOp::Update {
                        key: Self::key(budgets, Some(namespace), &name),
                        value,
                        expected: Some(rev),
                    },
                    ctx,
                )
                .await
            {
                Ok(_) => return Ok(()),
                // Changed or deleted since the list: look again.
                Err(
                    shoal_store::StoreError::Conflict { .. } | shoal_store::StoreError::NotFound(_),
                ) => continue,
                Err(err) => return Err(map_store_error(budgets, &name, err)),
            }
        }
        Err(ApiError::Conflict(
            subject(budgets, pod_name),
            "the disruption budget kept changing; please try again".into(),
        ))
    }
}
