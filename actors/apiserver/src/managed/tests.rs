use serde_json::json;

use super::*;

const NOW: &str = "2026-01-01T00:00:00Z";
const LATER: &str = "2026-01-01T00:01:00Z";

fn writer<'a>(manager: &'a str, now: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version: "v1",
        subresource: None,
        now,
    }
}

/// Applies `config` to a ConfigMap for `manager`.
fn apply_as(
    live: &Value,
    config: &Value,
    managers: Managers,
    manager: &str,
    now: &str,
    force: bool,
) -> Result<Applied, ApplyError> {
    apply(
        live,
        config,
        configmap(),
        Scope::Whole,
        managers,
        &writer(manager, now),
        Claim {
            force,
            allowed: None,
        },
    )
}

fn configmap() -> Shape {
    walk::root("v1", "ConfigMap")
}

fn paths(managers: &Managers, manager: &str, operation: Operation) -> Vec<String> {
    managers
        .entries
        .iter()
        .find(|e| e.manager == manager && e.operation == operation)
        .map(|e| e.fields.paths().iter().map(|p| display(p)).collect())
        .unwrap_or_default()
}

fn live(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "uid": "u"}, "data": data})
}

#[test]
fn a_create_records_every_field_but_the_system_ones() {
    let created = track_update(
        Managers::default(),
        &json!({}),
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "uid": "u", "labels": {"a": "1"}}, "data": {"k": "v"}}),
        configmap(),
        Scope::Whole,
        &writer("kubectl-create", NOW),
    );
    assert_eq!(
        paths(&created, "kubectl-create", Operation::Update),
        vec![".data", ".data.k", ".metadata.labels", ".metadata.labels.a"]
    );
    let encoded = created.encode().expect("one manager");
    assert_eq!(
        encoded,
        json!([{
            "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
            "time": NOW, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}}
        }])
    );
    assert_eq!(Managers::decode(Some(&encoded)), Ok(created));
}

#[test]
fn an_update_takes_the_fields_it_changes_and_no_write_changes_nothing() {
    let old = live(json!({"a": "1", "b": "2"}));
    let managers = track_update(
        Managers::default(),
        &json!({}),
        &old,
        configmap(),
        Scope::Whole,
        &writer("first", NOW),
    );
    let new = live(json!({"a": "9", "b": "2"}));
    let after = track_update(
        managers.clone(),
        &old,
        &new,
        configmap(),
        Scope::Whole,
        &writer("second", LATER),
    );
    assert_eq!(
        paths(&after, "first", Operation::Update),
        vec![".data", ".data.b"]
    );
    assert_eq!(paths(&after, "second", Operation::Update), vec![".data.a"]);
    let same = track_update(
        managers.clone(),
        &old,
        &old,
        configmap(),
        Scope::Whole,
        &writer("second", LATER),
    );
    assert_eq!(
        same, managers,
        "an update that changes nothing records nothing"
    );
}

#[test]
fn apply_conflicts_with_other_managers_unless_forced() {
    let old = live(json!({"a": "1"}));
    let managers = track_update(
        Managers::default(),
        &json!({}),
        &old,
        configmap(),
        Scope::Whole,
        &writer("kubectl-create", NOW),
    );
    let same_value = json!({"data": {"a": "1"}});
    let shared = apply_as(&old, &same_value, managers.clone(), "applier", LATER, false)
        .expect("the same value is no conflict");
    assert_eq!(
        paths(&shared.managers, "applier", Operation::Apply),
        vec![".data.a"]
    );
    assert_eq!(
        paths(&shared.managers, "kubectl-create", Operation::Update),
        vec![".data", ".data.a"],
        "both own it"
    );
    let change = json!({"data": {"a": "2"}});
    let err =
        apply_as(&old, &change, managers.clone(), "applier", LATER, false).expect_err("conflict");
    assert_eq!(
        err,
        ApplyError::Conflicts(vec![(
            ".data.a".into(),
            format!("\"kubectl-create\" using v1 at {NOW}")
        )])
    );
    let ApiError::ApplyConflict { message, causes } = err.into_api(Default::default()) else {
        panic!("an apply conflict");
    };
    assert_eq!(
        message,
        format!(
            "Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1 at {NOW}: .data.a"
        )
    );
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    let forced = apply_as(&old, &change, managers, "applier", LATER, true).expect("forced");
    assert_eq!(forced.object["data"], json!({"a": "2"}));
    assert_eq!(
        paths(&forced.managers, "kubectl-create", Operation::Update),
        vec![".data"]
    );
    assert_eq!(
        forced
            .managers
            .entries
            .iter()
            .find(|e| e.manager == "applier")
            .and_then(|e| e.time.clone()),
        Some(LATER.into())
    );
}

#[test]
fn apply_removes_what_it_stopped_applying_unless_someone_else_owns_it() {
    let empty = live(json!({}));
    let first = apply_as(
        &empty,
        &json!({"data": {"a": "1", "b": "2", "c": "3"}}),
        Managers::default(),
        "applier",
        NOW,
        false,
    )
    .expect("applies");
    // Someone else takes `c` with the same value: both own it.
    let other = apply_as(
        &first.object,
        &json!({"data": {"c": "3"}}),
        first.managers.clone(),
        "other",
        NOW,
        false,
    )
    .expect("shared");
    let second = apply_as(
        &other.object,
        &json!({"data": {"a": "1"}}),
        other.managers.clone(),
        "applier",
        LATER,
        false,
    )
    .expect("applies");
    assert_eq!(second.object["data"], json!({"a": "1", "c": "3"}));
    assert_eq!(
        paths(&second.managers, "applier", Operation::Apply),
        vec![".data.a"]
    );
    let last = apply_as(
        &second.object,
        &json!({}),
        second.managers,
        "applier",
        LATER,
        false,
    )
    .expect("applies");
    assert_eq!(last.object["data"], json!({"c": "3"}));
    assert!(paths(&last.managers, "applier", Operation::Apply).is_empty());
}

#[test]
fn an_apply_that_changes_nothing_keeps_its_time() {
    let empty = live(json!({}));
    let config = json!({"data": {"a": "1"}});
    let first = apply_as(&empty, &config, Managers::default(), "m", NOW, false).expect("applies");
    let mut stored = first.object.clone();
    stored["metadata"]["managedFields"] = first.managers.encode().expect("managed");
    let again =
        apply_as(&stored, &config, first.managers.clone(), "m", LATER, false).expect("applies");
    assert_eq!(again.managers, first.managers);
    assert_eq!(again.object, stored);
}

#[test]
fn status_is_owned_only_through_its_subresource() {
    let shape = walk::root("apps/v1", "Deployment");
    let old = json!({"spec": {"replicas": 1}, "status": {"replicas": 0}});
    let new = json!({"spec": {"replicas": 2}, "status": {"replicas": 2}});
    let main = track_update(
        Managers::default(),
        &old,
        &new,
        shape,
        Scope::NotStatus,
        &writer("m", NOW),
    );
    assert_eq!(paths(&main, "m", Operation::Update), vec![".spec.replicas"]);
    let status = track_update(
        Managers::default(),
        &old,
        &new,
        shape,
        Scope::StatusOnly,
        &writer("m", NOW),
    );
    assert_eq!(
        paths(&status, "m", Operation::Update),
        vec![".status.replicas"]
    );
}

#[test]
fn the_body_may_replace_or_reset_the_managers() {
    assert_eq!(Managers::given(None), Ok(Given::Nothing));
    assert_eq!(Managers::given(Some(&json!([]))), Ok(Given::Nothing));
    assert_eq!(Managers::given(Some(&json!([{}]))), Ok(Given::Reset));
    assert!(Managers::given(Some(&json!([{"operation": "Delete"}]))).is_err());
    assert!(
        Managers::given(Some(
            &json!([{"operation": "Apply", "fieldsType": "FieldsV2"}])
        ))
        .is_err()
    );
    assert!(
        Managers::given(Some(
            &json!([{"operation": "Apply", "manager": "x".repeat(200)}])
        ))
        .is_err()
    );
}

#[test]
fn the_oldest_update_managers_are_folded_together() {
    let mut managers = Managers::default();
    let mut old = live(json!({}));
    for i in 0..12 {
        let mut new = old.clone();
        new["data"][format!("k{i}")] = json!("v");
        let now = format!("2026-01-01T00:00:{i:02}Z");
        managers = track_update(
            managers,
            &old,
            &new,
            configmap(),
            Scope::Whole,
            &writer(&format!("m{i}"), &now),
        );
        old = new;
    }
    assert_eq!(managers.entries.len(), 11);
    assert!(paths(&managers, ANCIENT, Operation::Update).contains(&".data.k0".to_owned()));
    assert!(paths(&managers, ANCIENT, Operation::Update).contains(&".data.k1".to_owned()));
    assert!(paths(&managers, "m0", Operation::Update).is_empty());
}

#[test]
fn fields_client_side_apply_left_as_it_applied_them_may_be_taken_over() {
    let mut object = live(json!({"a": "1", "b": "changed"}));
    object["metadata"]["annotations"] = json!({LAST_APPLIED: r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"a":"1","b":"2"}}"#});
    let allowed = allowed_from_last_applied(&object, configmap()).expect("annotated");
    assert!(allowed.contains(&["f:data".to_owned(), "f:a".to_owned()]));
    assert!(!allowed.contains(&["f:data".to_owned(), "f:b".to_owned()]));
}
