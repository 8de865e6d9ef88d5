//! Patches of every type applied to a stored Deployment, then the check of unknown fields
//! the update path makes; server-side apply of the bytes as a configuration, with the
//! managers of an earlier write; and the bytes read as a managedFields list: errors are
//! fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_apiserver::fields::enforce;
use shoal_apiserver::managed::{self, Claim, Managers, Scope, Writer, walk};
use shoal_apiserver::patch::apply;
use shoal_apiserver::resources::find;
use shoal_core::{FieldValidation, PatchKind};

fn server_side_apply(stored: &serde_json::Value, config: &[u8], force: bool) {
    let Ok(config) = serde_yaml::from_slice::<serde_json::Value>(config) else {
        return;
    };
    let shape = walk::root("apps/v1", "Deployment");
    let writer = |manager| Writer {
        manager,
        api_version: "apps/v1",
        subresource: None,
        now: "2026-01-01T00:00:00Z",
    };
    let created = managed::track_update(
        Managers::default(),
        &serde_json::json!({}),
        stored,
        shape,
        Scope::NotStatus,
        &writer("creator"),
    );
    let first = managed::apply(
        stored,
        &config,
        shape,
        Scope::NotStatus,
        created,
        &writer("a"),
        Claim {
            force,
            allowed: None,
        },
    );
    if let Ok(applied) = first {
        let _ = managed::apply(
            &applied.object,
            &serde_json::json!({"spec": {"replicas": 1}}),
            shape,
            Scope::NotStatus,
            applied.managers,
            &writer("a"),
            Claim {
                force: true,
                allowed: None,
            },
        );
    }
    let _ = managed::allowed_from_last_applied(stored, shape);
}

fuzz_target!(|data: &[u8]| {
    let Some((first, patch)) = data.split_first() else {
        return;
    };
    let Some(info) = find("apps", "v1", "deployments") else {
        return;
    };
    let stored = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "containers": [{"name": "web", "image": "busybox", "env": [{"name": "A", "value": "1"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]}}},
    });
    let kind = match first % 5 {
        0 => PatchKind::Json,
        1 => PatchKind::Merge,
        2 => PatchKind::Strategic,
        3 => return server_side_apply(&stored, patch, first & 0x80 != 0),
        _ => {
            if let Ok(list) = serde_json::from_slice::<serde_json::Value>(patch) {
                let _ = managed::Managers::decode(Some(&list)).map(|m| m.encode());
            }
            return;
        }
    };
    if let Ok(mut patched) = apply(info, "web", &stored, kind, patch) {
        let _ = enforce(info, &mut patched, FieldValidation::Warn);
    }
});
