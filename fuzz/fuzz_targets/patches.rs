//! Patches of every type applied to a stored Deployment, then the check of unknown fields
//! the update path makes: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_apiserver::fields::enforce;
use shoal_apiserver::patch::apply;
use shoal_apiserver::resources::find;
use shoal_core::{FieldValidation, PatchKind};

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
    let kind = match first % 3 {
        0 => PatchKind::Json,
        1 => PatchKind::Merge,
        _ => PatchKind::Strategic,
    };
    if let Ok(mut patched) = apply(info, "web", &stored, kind, patch) {
        let _ = enforce(info, &mut patched, FieldValidation::Warn);
    }
});
