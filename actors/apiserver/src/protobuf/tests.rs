//! Objects encoded by the `k8s-pb` bindings (as client-go encodes them), read back as JSON.

use std::collections::BTreeMap;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::json;

use super::*;

fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn named(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.into()),
        // client-go always writes the (zero) creation time.
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    })
}

fn int(v: i32) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(0),
        int_val: Some(v),
        str_val: None,
    })
}

fn text(v: &str) -> Option<IntOrString> {
    Some(IntOrString {
        r#type: Some(1),
        int_val: None,
        str_val: Some(v.into()),
    })
}

#[test]
fn a_configmap_as_kubectl_create_sends_it() {
    let cm = core::ConfigMap {
        metadata: named("settings"),
        data: BTreeMap::from([("mode".to_owned(), "fast".to_owned())]),
        binary_data: BTreeMap::from([("blob".to_owned(), vec![0u8, 1, 255])]),
        immutable: None,
    };
    let value = decode_object(&envelope("v1", "ConfigMap", &cm)).expect("decoded");
    assert_eq!(
        value,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "creationTimestamp": null},
            "data": {"mode": "fast"},
            "binaryData": {"blob": "AAH/"},
        })
    );
}

#[test]
fn a_deployment_keeps_its_numbers_quantities_int_or_strings_and_inline_structs() {
    let container = core::Container {
        name: Some("web".into()),
        image: Some("busybox".into()),
        command: vec!["sleep".into(), "3600".into()],
        ports: vec![core::ContainerPort {
            container_port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }],
        env: vec![core::EnvVar {
            name: Some("MODE".into()),
            value: None,
            value_from: Some(core::EnvVarSource {
                config_map_key_ref: Some(core::ConfigMapKeySelector {
                    local_object_reference: Some(core::LocalObjectReference {
                        name: Some("settings".into()),
                    }),
                    key: Some("mode".into()),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
        }],
        resources: Some(core::ResourceRequirements {
            limits: BTreeMap::from([(
                "memory".to_owned(),
                Quantity {
                    string: Some("64Mi".into()),
                },
            )]),
            ..Default::default()
        }),
        readiness_probe: Some(core::Probe {
            handler: Some(core::ProbeHandler {
                http_get: Some(core::HttpGetAction {
                    path: Some("/healthz".into()),
                    port: text("http"),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            period_seconds: Some(5),
            termination_grace_period_seconds: Some(-1),
            ..Default::default()
        }),
        ..Default::default()
    };
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            selector: Some(meta::LabelSelector {
                match_labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![container],
                    volumes: vec![core::Volume {
                        name: Some("scratch".into()),
                        volume_source: Some(core::VolumeSource {
                            empty_dir: Some(core::EmptyDirVolumeSource::default()),
                            ..Default::default()
                        }),
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some("RollingUpdate".into()),
                rolling_update: Some(apps::RollingUpdateDeployment {
                    max_surge: text("25%"),
                    max_unavailable: int(1),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let value = decode_object(&envelope("apps/v1", "Deployment", &deployment)).expect("decoded");
    let spec = &value["spec"];
    assert_eq!(value["apiVersion"], "apps/v1");
    assert_eq!(spec["replicas"], 0, "a zero that was sent is kept");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 1);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["volumes"], json!([{"name": "scratch", "emptyDir": {}}]));
    let c = &pod["containers"][0];
    assert_eq!(c["command"], json!(["sleep", "3600"]));
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["env"][0]["valueFrom"]["configMapKeyRef"],
        json!({"name": "settings", "key": "mode", "optional": false})
    );
    assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(
        c["readinessProbe"],
        json!({
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 5,
            "terminationGracePeriodSeconds": -1,
        })
    );
    // And the typed model reads it.
    let typed: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(value).expect("a valid Deployment");
    assert_eq!(typed.spec.and_then(|s| s.replicas), Some(0));
}

#[test]
fn secrets_services_and_leases_read_their_special_fields() {
    let secret = core::Secret {
        metadata: named("token"),
        data: BTreeMap::from([("key".to_owned(), b"s3cr3t".to_vec())]),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let value = decode_object(&envelope("v1", "Secret", &secret)).expect("decoded");
    assert_eq!(value["data"]["key"], "czNjcjN0");
    assert_eq!(value["type"], "Opaque");

    let service = core::Service {
        metadata: named("web"),
        spec: Some(core::ServiceSpec {
            ports: vec![core::ServicePort {
                name: Some("80-8080".into()),
                port: Some(80),
                target_port: int(8080),
                protocol: Some("TCP".into()),
                ..Default::default()
            }],
            cluster_ips: vec!["10.96.0.10".into()],
            r#type: Some("ClusterIP".into()),
            ..Default::default()
        }),
        status: None,
    };
    let value = decode_object(&envelope("v1", "Service", &service)).expect("decoded");
    assert_eq!(value["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(value["spec"]["clusterIPs"], json!(["10.96.0.10"]));

    let lease = coordination::Lease {
        metadata: Some(meta::ObjectMeta {
            name: Some("holder".into()),
            creation_timestamp: Some(meta::Time {
                seconds: Some(1_700_000_000),
                nanos: Some(999),
            }),
            ..Default::default()
        }),
        spec: Some(coordination::LeaseSpec {
            holder_identity: Some("m1".into()),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_700_000_000),
                nanos: Some(123_456_000),
            }),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let value =
        decode_object(&envelope("coordination.k8s.io/v1", "Lease", &lease)).expect("decoded");
    assert_eq!(
        value["metadata"]["creationTimestamp"],
        "2023-11-14T22:13:20Z"
    );
    assert_eq!(value["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");
    assert_eq!(value["spec"]["leaseDurationSeconds"], 15);
}

#[test]
fn bodies_that_are_not_objects_are_refused_with_a_reason() {
    assert_eq!(
        decode_object(b"{\"kind\":\"Pod\"}"),
        Err(ProtobufError::NoMagic)
    );
    let cm = core::ConfigMap {
        metadata: named("settings"),
        ..Default::default()
    };
    let body = envelope("v1", "ConfigMap", &cm);
    // Cut anywhere, a body is read or refused, never a panic; cut inside the object, it
    // is refused.
    for cut in MAGIC.len()..body.len() {
        let _ = decode_object(&body[..cut]);
    }
    assert!(matches!(
        decode_object(&body[..body.len() - 1]),
        Err(ProtobufError::Malformed(_))
    ));
    assert!(matches!(
        decode_object(&envelope("example.com/v1", "Widget", &cm)),
        Err(ProtobufError::UnknownKind(_))
    ));
    let mut no_kind = MAGIC.to_vec();
    no_kind.extend(
        Unknown {
            raw: Some(cm.encode_to_vec()),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    assert!(matches!(
        decode_object(&no_kind),
        Err(ProtobufError::Malformed(_))
    ));
    // A string field that holds bytes which are not UTF-8.
    let bad = cm.clone();
    let mut raw = bad.encode_to_vec();
    // A `data` entry whose key is the byte 0xff.
    raw.extend([0x12, 0x03, 0x0a, 0x01, 0xff]);
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        }),
        raw: Some(raw),
        ..Default::default()
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    assert!(matches!(
        decode_object(&body),
        Err(ProtobufError::Malformed(_))
    ));
}

#[test]
fn random_bytes_never_panic() {
    // A fixed xorshift sequence: every run reads the same bodies.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let cm = core::ConfigMap {
        metadata: named("settings"),
        data: BTreeMap::from([("mode".to_owned(), "fast".to_owned())]),
        ..Default::default()
    };
    let valid = envelope("v1", "ConfigMap", &cm);
    for _ in 0..5000 {
        let mut body = valid.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let at = MAGIC.len() + (next() as usize) % (body.len() - MAGIC.len());
            body[at] = next() as u8;
        }
        let _ = decode_object(&body);
        let len = (next() % 64) as usize;
        let mut noise = MAGIC.to_vec();
        noise.extend((0..len).map(|_| next() as u8));
        let _ = decode_object(&noise);
    }
}

#[test]
fn the_schema_reads_whole_and_refers_only_to_known_messages() {
    let text = include_str!("schema.txt");
    let field_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("message ") && !l.is_empty())
        .count();
    let parsed: usize = SCHEMA.values().map(HashMap::len).sum();
    assert_eq!(parsed, field_lines, "every field line is read");
    for (name, fields) in SCHEMA.iter() {
        for field in fields.values() {
            if field.typ.contains('.') {
                assert!(
                    SCHEMA.contains_key(field.typ),
                    "{name}.{} refers to {}",
                    field.json,
                    field.typ
                );
            }
        }
    }
    for kind in [
        "k8s.io.api.core.v1.Pod",
        "k8s.io.api.apps.v1.Deployment",
        "k8s.io.api.batch.v1.CronJob",
        "k8s.io.api.discovery.v1.EndpointSlice",
        "k8s.io.api.policy.v1.Eviction",
        "k8s.io.api.autoscaling.v1.Scale",
        "k8s.io.api.events.v1.Event",
    ] {
        assert!(SCHEMA.contains_key(kind), "{kind}");
    }
}

#[test]
fn durations_read_as_go_writes_them() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1_500), "1.5µs");
    assert_eq!(go_duration(150_000_000), "150ms");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
    assert_eq!(go_duration(-2_000_000_000), "-2s");
}

#[test]
fn zero_values_go_writes_for_its_value_fields_are_left_out() {
    // Go's encoder writes every field that is not a pointer, zero or not; kubectl 1.32's
    // `create deployment` body is full of them. Pointers keep their zeros.
    let deployment = apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: Some("web".into()),
            generate_name: Some(String::new()),
            generation: Some(0),
            ..Default::default()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            min_ready_seconds: Some(0),
            paused: Some(false),
            strategy: Some(apps::DeploymentStrategy {
                r#type: Some(String::new()),
                rolling_update: None,
            }),
            template: Some(core::PodTemplateSpec {
                metadata: None,
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("web".into()),
                        image: Some("busybox".into()),
                        image_pull_policy: Some(String::new()),
                        stdin: Some(false),
                        ..Default::default()
                    }],
                    restart_policy: Some(String::new()),
                    termination_grace_period_seconds: Some(0),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
        status: None,
    };
    let value = decode_object(&envelope("apps/v1", "Deployment", &deployment)).expect("decoded");
    assert_eq!(value["metadata"], json!({"name": "web"}));
    let spec = &value["spec"];
    assert_eq!(spec["replicas"], 0, "a pointer's zero is kept");
    assert!(spec.get("minReadySeconds").is_none(), "{spec}");
    assert!(spec.get("paused").is_none(), "{spec}");
    assert_eq!(spec["strategy"], json!({}));
    let pod = &spec["template"]["spec"];
    assert!(pod.get("restartPolicy").is_none(), "{pod}");
    assert_eq!(
        pod["terminationGracePeriodSeconds"], 0,
        "a pointer's zero is kept"
    );
    assert_eq!(
        pod["containers"][0],
        json!({"name": "web", "image": "busybox"})
    );
}
