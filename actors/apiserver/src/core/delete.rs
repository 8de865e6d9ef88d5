//! Deletion as Kubernetes does it. An object without finalizers goes at once. One with
//! finalizers is only marked (`deletionTimestamp`) and stays until the last finalizer is
//! removed, which deletes it. The propagation policy picks the garbage collector's finalizer:
//! `Orphan` adds `orphan` (its dependents lose their owner reference first), `Foreground` adds
//! `foregroundDeletion` (its blocking dependents go first), `Background` adds none (the
//! dependents go after it). A pod on a node is deleted gracefully: marked with the end of
//! its grace period, it stays until its kubelet confirms that its containers stopped (a
//! delete with no grace period left); a second delete may only shorten the period.

use jiff::Timestamp;
use shoal_core::deletion::finalizers_of;
pub use shoal_core::deletion::{FOREGROUND, ORPHAN, is_deleting};

use super::*;

/// What happens to an owner's dependents when it is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// `DeleteOptions`, from the body and the query together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    /// `None`: whatever the object's finalizers already say (Background if nothing).
    pub propagation: Option<Propagation>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

fn options_subject() -> shoal_core::error::Subject {
    shoal_core::error::Subject {
        group: String::new(),
        resource: String::new(),
        kind: "DeleteOptions".into(),
        name: String::new(),
    }
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` object (an empty map: none given).
    pub fn parse(body: &Map<String, Value>) -> Result<DeleteOptions, ApiError> {
        let invalid = |field: &str, value: &Value, why: &str| {
            ApiError::invalid_field(options_subject(), field, &value.to_string(), why)
        };
        let grace_period = match body.get("gracePeriodSeconds") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .ok_or_else(|| invalid("gracePeriodSeconds", v, "must be an integer"))?,
            ),
        };
        let orphan = match body.get("orphanDependents") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_bool()
                    .ok_or_else(|| invalid("orphanDependents", v, "must be a boolean"))?,
            ),
        };
        let policy = match body.get("propagationPolicy") {
            None | Some(Value::Null) => None,
            Some(v) => Some(match v.as_str() {
                Some("Orphan") => Propagation::Orphan,
                Some("Background") => Propagation::Background,
                Some("Foreground") => Propagation::Foreground,
                _ => {
                    return Err(ApiError::Invalid(
                        options_subject(),
                        vec![shoal_core::error::FieldCause {
                            reason: "FieldValueNotSupported",
                            field: "propagationPolicy".into(),
                            message: format!(
                                "Unsupported value: {v}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                            ),
                        }],
                    ));
                }
            }),
        };
        let propagation = match (orphan, policy) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "propagationPolicy",
                    &body["propagationPolicy"],
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
            (Some(true), None) => Some(Propagation::Orphan),
            (Some(false), None) => Some(Propagation::Background),
            (None, policy) => policy,
        };
        let preconditions = body.get("preconditions").filter(|p| !p.is_null());
        if let Some(p) = preconditions
            && !p.is_object()
        {
            return Err(invalid("preconditions", p, "must be an object"));
        }
        let precondition = |field: &str| -> Result<Option<String>, ApiError> {
            match preconditions.and_then(|p| p.get(field)) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(invalid(
                    &format!("preconditions.{field}"),
                    other,
                    "must be a string",
                )),
            }
        };
        Ok(DeleteOptions {
            grace_period,
            propagation,
            uid: precondition("uid")?,
            resource_version: precondition("resourceVersion")?,
        })
    }
}

/// What a delete does to the stored object.
#[derive(Clone, Debug, PartialEq)]
pub enum DeletePlan {
    /// Remove it now.
    Remove,
    /// Store it as given (marked for deletion, with the finalizers that hold it).
    Mark(Value),
    /// It is marked already and nothing changes.
    Pending,
}

/// The grace period the deletion of `object` gets, for a kind deleted gracefully (pods, as
/// Kubernetes' pod strategy gives it): the one asked for, else the pod's own; none for a pod
/// on no node or one that has finished; a negative one is a second. `None` for other kinds.
pub fn grace_of(info: &ResourceInfo, object: &Value, options: &DeleteOptions) -> Option<i64> {
    if info.kind != "Pod" {
        return None;
    }
    let mut period = options.grace_period.unwrap_or_else(|| {
        object
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    });
    let node = object.pointer("/spec/nodeName").and_then(Value::as_str);
    let phase = object.pointer("/status/phase").and_then(Value::as_str);
    if node.is_none_or(str::is_empty) || matches!(phase, Some("Succeeded" | "Failed")) {
        period = 0;
    }
    Some(if period < 0 { 1 } else { period })
}

/// The pure core of a delete: given the stored object, the options, the grace period its
/// kind gives it ([`grace_of`]) and the time, what to do.
pub fn plan(
    object: &Value,
    options: &DeleteOptions,
    grace: Option<i64>,
    now: Timestamp,
) -> DeletePlan {
    let old = finalizers_of(object);
    let deleting = is_deleting(object);
    // An explicit policy replaces the collector's finalizer; none keeps what is there.
    let mut finalizers = old.clone();
    if let Some(policy) = options.propagation {
        finalizers.retain(|f| f != ORPHAN && f != FOREGROUND);
        match policy {
            Propagation::Orphan => finalizers.push(ORPHAN.into()),
            Propagation::Foreground => finalizers.push(FOREGROUND.into()),
            Propagation::Background => {}
        }
    }
    // A graceful deletion under way may only be shortened.
    let pending = object
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .filter(|_| deleting);
    let period = match (grace, pending) {
        (Some(asked), Some(pending)) => asked.min(pending),
        (Some(asked), None) => asked,
        (None, _) => 0,
    };
    if finalizers.is_empty() && period == 0 {
        return DeletePlan::Remove;
    }
    if deleting && finalizers == old && period == pending.unwrap_or(0) {
        return DeletePlan::Pending;
    }
    let mut marked = object.clone();
    let meta = match marked.as_object_mut() {
        Some(map) => metadata_mut(map),
        None => return DeletePlan::Remove,
    };
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".into(), json!(finalizers));
    }
    let period_secs = jiff::SignedDuration::from_secs(period);
    if !deleting {
        let at = now.checked_add(period_secs).unwrap_or(now);
        meta.insert("deletionTimestamp".into(), json!(format_time(at)));
        meta.insert("deletionGracePeriodSeconds".into(), json!(period));
        if let Some(generation) = meta.get("generation").and_then(Value::as_i64)
            && generation > 0
        {
            meta.insert("generation".into(), json!(generation + 1));
        }
    } else if let Some(pending) = pending
        && period < pending
    {
        // The end moves as much earlier as the period is shorter.
        let end = meta
            .get("deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or(now);
        let sooner = end
            .checked_sub(jiff::SignedDuration::from_secs(pending - period))
            .unwrap_or(end);
        meta.insert("deletionTimestamp".into(), json!(format_time(sooner)));
        meta.insert("deletionGracePeriodSeconds".into(), json!(period));
    }
    meta.remove("resourceVersion");
    DeletePlan::Mark(marked)
}

/// What an update of an object marked for deletion may not do, and whether it frees it: new
/// finalizers are refused; without any left, the object goes.
pub fn check_finalizers(
    info: &ResourceInfo,
    name: &str,
    old: &Value,
    new: &Value,
) -> Result<bool, ApiError> {
    if !is_deleting(old) {
        return Ok(false);
    }
    let before = finalizers_of(old);
    let after = finalizers_of(new);
    let added: Vec<&String> = after.iter().filter(|f| !before.contains(f)).collect();
    if !added.is_empty() {
        return Err(ApiError::Invalid(
            subject(info, name),
            vec![shoal_core::error::FieldCause {
                reason: "FieldValueForbidden",
                field: "metadata.finalizers".into(),
                message: format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
            }],
        ));
    }
    // A graceful deletion still under way ends by a delete, not by an update.
    let graceful = new
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|g| g > 0);
    Ok(after.is_empty() && !graceful)
}

/// What a delete that removed the object answers: the object itself for pods (as Kubernetes
/// does), a `Success` status naming it for everything else.
pub fn removed_reply(info: &ResourceInfo, object: &Value) -> Value {
    if info.kind == "Pod" {
        return object.clone();
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": object.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
            "group": info.group,
            "kind": info.resource,
            "uid": object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        },
    })
}

impl ApiCore {
    pub(super) async fn delete(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let body = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            parse_object(body)?
        };
        let options = DeleteOptions::parse(&body)?;
        if info.resource == "namespaces" && SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        let (key, current) = self.load(info, namespace, name).await?;
        let old = with_version(&current.value, &current.rev.to_string())?;
        if let Some(uid) = &options.uid
            && old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid.as_str())
        {
            return Err(ApiError::Conflict(
                subject(info, name),
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    old.pointer("/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            ));
        }
        let expected = self
            .precondition(info, name, &key, options.resource_version.as_deref())?
            .unwrap_or(current.rev);
        if expected != current.rev {
            return Err(ApiError::Conflict(
                subject(info, name),
                format!(
                    "Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}",
                    options.resource_version.as_deref().unwrap_or_default(),
                    current.rev
                ),
            ));
        }
        // Namespaces empty themselves as they go (the namespace's own finalizer is the
        // server's to run), so they are removed outright.
        let plan = if info.resource == "namespaces" {
            DeletePlan::Remove
        } else {
            plan(
                &old,
                &options,
                grace_of(info, &old, &options),
                Timestamp::now(),
            )
        };
        match plan {
            DeletePlan::Pending => Ok(old),
            DeletePlan::Mark(marked) => {
                if ctx.dry_run {
                    return Ok(marked);
                }
                let bytes =
                    serde_json::to_vec(&marked).map_err(|e| ApiError::Internal(e.to_string()))?;
                let outcome = self
                    .commit(
                        WriteOp::Update {
                            key,
                            value: Self::stored_form(info, &bytes)?,
                            expected: Some(expected),
                        },
                        ctx,
                    )
                    .await
                    .map_err(|e| map_store_error(info, name, e))?;
                with_version(&bytes, &outcome.rev.to_string())
            }
            DeletePlan::Remove => {
                if ctx.dry_run {
                    return Ok(removed_reply(info, &old));
                }
                if info.resource == "namespaces" {
                    self.empty_namespace(name, ctx).await?;
                }
                self.remove(info, name, key, expected, &old, ctx).await?;
                Ok(removed_reply(info, &old))
            }
        }
    }

    /// Deletes every object the list with `options` would return, each as its own delete;
    /// answers the list of what was deleted or marked.
    pub(super) async fn delete_collection(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        options: &RequestOptions,
        body: &[u8],
        ctx: &WriteCtx,
    ) -> Result<Value, ApiError> {
        let (items, version) = self.list(info, namespace, options).await?;
        let mut deleted = Vec::with_capacity(items.len());
        for item in items {
            let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else {
                continue;
            };
            let ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
            match self.delete(info, ns, name, body, ctx).await {
                Ok(reply) if reply["kind"] == "Status" => deleted.push(item),
                Ok(marked) => deleted.push(marked),
                // Deleted meanwhile by someone else.
                Err(ApiError::NotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(list_object(info, deleted, &version))
    }

    /// Removes the stored object at `key` (at revision `expected`) and frees what it held.
    pub(super) async fn remove(
        &self,
        info: &ResourceInfo,
        name: &str,
        key: String,
        expected: u64,
        old: &Value,
        ctx: &WriteCtx,
    ) -> Result<(), ApiError> {
        self.commit(
            WriteOp::Delete {
                key,
                expected: Some(expected),
            },
            ctx,
        )
        .await
        .map_err(|e| map_store_error(info, name, e))?;
        if info.kind == "Service" {
            self.release_service(old, ctx).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("valid")
    }

    fn options(body: Value) -> Result<DeleteOptions, ApiError> {
        DeleteOptions::parse(body.as_object().expect("an object"))
    }

    fn object(finalizers: &[&str], deleting: bool) -> Value {
        let mut o = json!({"metadata": {"name": "a", "uid": "u", "generation": 2, "resourceVersion": "7", "finalizers": finalizers}});
        if deleting {
            o["metadata"]["deletionTimestamp"] = json!("2023-11-14T22:00:00Z");
        }
        o
    }

    #[test]
    fn options_read_the_policy_the_old_flag_and_preconditions() {
        assert_eq!(options(json!({})).expect("ok"), DeleteOptions::default());
        let o = options(json!({"propagationPolicy": "Foreground", "gracePeriodSeconds": 5, "preconditions": {"uid": "u1", "resourceVersion": "9"}})).expect("ok");
        assert_eq!(o.propagation, Some(Propagation::Foreground));
        assert_eq!(o.grace_period, Some(5));
        assert_eq!(o.uid.as_deref(), Some("u1"));
        assert_eq!(o.resource_version.as_deref(), Some("9"));
        assert_eq!(
            options(json!({"orphanDependents": true}))
                .expect("ok")
                .propagation,
            Some(Propagation::Orphan)
        );
    }

    #[test]
    fn bad_options_are_invalid_with_the_field_named() {
        for (body, field) in [
            (
                json!({"propagationPolicy": "Sideways"}),
                "propagationPolicy",
            ),
            (
                json!({"propagationPolicy": "Orphan", "orphanDependents": false}),
                "propagationPolicy",
            ),
            (json!({"gracePeriodSeconds": "soon"}), "gracePeriodSeconds"),
            (json!({"preconditions": {"uid": 7}}), "preconditions.uid"),
            (json!({"preconditions": []}), "preconditions"),
        ] {
            match options(body.clone()) {
                Err(ApiError::Invalid(_, causes)) => {
                    assert_eq!(causes[0].field, field, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_object_without_finalizers_goes_at_once_unless_a_policy_holds_it() {
        let none = object(&[], false);
        assert_eq!(
            plan(&none, &DeleteOptions::default(), None, now()),
            DeletePlan::Remove
        );
        let background = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..Default::default()
        };
        assert_eq!(plan(&none, &background, None, now()), DeletePlan::Remove);
        let orphan = DeleteOptions {
            propagation: Some(Propagation::Orphan),
            ..Default::default()
        };
        let DeletePlan::Mark(marked) = plan(&none, &orphan, None, now()) else {
            panic!("not marked")
        };
        assert_eq!(marked["metadata"]["finalizers"], json!(["orphan"]));
        assert_eq!(
            marked["metadata"]["deletionTimestamp"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_eq!(marked["metadata"]["generation"], 3);
        assert!(marked["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn finalizers_hold_an_object_and_a_second_delete_changes_only_the_policy() {
        let held = object(&["example.com/keep"], false);
        let DeletePlan::Mark(marked) = plan(&held, &DeleteOptions::default(), None, now()) else {
            panic!("not marked")
        };
        assert_eq!(
            marked["metadata"]["finalizers"],
            json!(["example.com/keep"])
        );
        // Marked already: nothing to do, unless the policy changes.
        let again = object(&["example.com/keep"], true);
        assert_eq!(
            plan(&again, &DeleteOptions::default(), None, now()),
            DeletePlan::Pending
        );
        let foreground = DeleteOptions {
            propagation: Some(Propagation::Foreground),
            ..Default::default()
        };
        let orphaning = object(&["example.com/keep", ORPHAN], true);
        let DeletePlan::Mark(switched) = plan(&orphaning, &foreground, None, now()) else {
            panic!("not changed")
        };
        assert_eq!(
            switched["metadata"]["finalizers"],
            json!(["example.com/keep", FOREGROUND])
        );
        // The original mark stays.
        assert_eq!(
            switched["metadata"]["deletionTimestamp"],
            "2023-11-14T22:00:00Z"
        );
        assert_eq!(switched["metadata"]["generation"], 2);
        // Background on an owner held only by the collector's finalizer frees it.
        let background = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..Default::default()
        };
        assert_eq!(
            plan(&object(&[ORPHAN], true), &background, None, now()),
            DeletePlan::Remove
        );
    }

    fn pod(node: &str, phase: &str) -> Value {
        json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 30},
            "status": {"phase": phase}})
    }

    fn grace(pod: &Value, asked: Option<i64>) -> Option<i64> {
        let pods = resources::find("", "v1", "pods").expect("served");
        let options = DeleteOptions {
            grace_period: asked,
            ..Default::default()
        };
        grace_of(pods, pod, &options)
    }

    #[test]
    fn pods_get_the_grace_period_kubernetes_gives_them() {
        let running = pod("n1", "Running");
        assert_eq!(grace(&running, None), Some(30));
        assert_eq!(grace(&running, Some(5)), Some(5));
        assert_eq!(grace(&running, Some(-3)), Some(1));
        assert_eq!(grace(&pod("", "Pending"), Some(5)), Some(0));
        assert_eq!(grace(&pod("n1", "Succeeded"), None), Some(0));
        assert_eq!(grace(&pod("n1", "Failed"), None), Some(0));
        let cm = resources::find("", "v1", "configmaps").expect("served");
        assert_eq!(grace_of(cm, &running, &DeleteOptions::default()), None);
    }

    #[test]
    fn a_pod_on_a_node_is_marked_and_its_grace_period_only_shortens() {
        let DeletePlan::Mark(marked) = plan(
            &pod("n1", "Running"),
            &DeleteOptions::default(),
            Some(30),
            now(),
        ) else {
            panic!("not marked")
        };
        // 2023-11-14T22:13:20Z and thirty seconds.
        assert_eq!(
            marked["metadata"]["deletionTimestamp"],
            "2023-11-14T22:13:50Z"
        );
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        assert!(marked["metadata"].get("finalizers").is_none());
        // Asked again for as long or longer: nothing changes.
        assert_eq!(
            plan(&marked, &DeleteOptions::default(), Some(30), now()),
            DeletePlan::Pending
        );
        assert_eq!(
            plan(&marked, &DeleteOptions::default(), Some(60), now()),
            DeletePlan::Pending
        );
        // Shorter: the end moves as much earlier.
        let DeletePlan::Mark(sooner) = plan(&marked, &DeleteOptions::default(), Some(10), now())
        else {
            panic!("not shortened")
        };
        assert_eq!(
            sooner["metadata"]["deletionTimestamp"],
            "2023-11-14T22:13:30Z"
        );
        assert_eq!(sooner["metadata"]["deletionGracePeriodSeconds"], 10);
        // None left (the kubelet's final delete, or a forced one): gone.
        assert_eq!(
            plan(&sooner, &DeleteOptions::default(), Some(0), now()),
            DeletePlan::Remove
        );
        // A pod on no node goes at once.
        assert_eq!(
            plan(
                &pod("", "Pending"),
                &DeleteOptions::default(),
                Some(0),
                now()
            ),
            DeletePlan::Remove
        );
        // An update does not end a graceful deletion; a finalizer's removal after its
        // grace period has been cut to nothing does.
        let pods = resources::find("", "v1", "pods").expect("served");
        assert!(!check_finalizers(pods, "p", &marked, &marked).expect("ok"));
        let mut held = marked.clone();
        held["metadata"]["finalizers"] = json!(["a.io/x"]);
        let mut ended = marked.clone();
        ended["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        assert!(check_finalizers(pods, "p", &held, &ended).expect("ok"));
    }

    #[test]
    fn a_marked_object_takes_no_new_finalizers_and_goes_with_its_last() {
        let info = resources::find("", "v1", "configmaps").expect("served");
        let old = object(&["a.io/x", "b.io/y"], true);
        assert!(!check_finalizers(info, "a", &old, &object(&["a.io/x"], true)).expect("ok"));
        assert!(check_finalizers(info, "a", &old, &object(&[], true)).expect("ok"));
        match check_finalizers(info, "a", &old, &object(&["a.io/x", "c.io/z"], true)) {
            Err(ApiError::Invalid(_, causes)) => {
                assert_eq!(causes[0].field, "metadata.finalizers");
                assert!(
                    causes[0].message.contains("c.io/z"),
                    "{}",
                    causes[0].message
                );
            }
            other => panic!("{other:?}"),
        }
        // Objects not being deleted take any.
        let live = object(&[], false);
        assert!(!check_finalizers(info, "a", &live, &object(&["c.io/z"], false)).expect("ok"));
    }

    #[test]
    fn removal_answers_a_status_except_for_pods() {
        let cm = resources::find("", "v1", "configmaps").expect("served");
        let pods = resources::find("", "v1", "pods").expect("served");
        let o = object(&[], false);
        let status = removed_reply(cm, &o);
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["details"]["kind"], "configmaps");
        assert_eq!(status["details"]["uid"], "u");
        assert_eq!(removed_reply(pods, &o), o);
    }
}
