//! OpenAPI v3 (kubectl-contract §4), generated from the typed model: one document per served
//! group/version, with the kinds' schemas (from `k8s-openapi`'s schemas), the
//! `x-kubernetes-group-version-kind` of each kind, the strategic-merge-patch extensions
//! of each field (from the Go types' tags in the protobuf schema), and the operations of
//! each resource. Every PATCH, POST and PUT declares the `fieldValidation` query parameter,
//! so kubectl 1.32 leaves the checking of unknown fields to the server
//! ([`crate::fields`]) instead of downloading schemas to check them itself.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::protobuf::patch_field;
use crate::resources::{self, RESOURCES, ResourceInfo};

/// The Kubernetes version the model is (k8s-openapi's `v1_32`).
const MODEL_VERSION: &str = "v1.32.0";

/// One group/version's document and the hash that names its contents.
pub struct GroupVersionDoc {
    pub doc: Value,
    pub hash: String,
}

/// Every served group/version's document, by its path (`api/v1`, `apis/apps/v1`).
static DOCS: LazyLock<BTreeMap<String, GroupVersionDoc>> = LazyLock::new(build);

/// `GET /openapi/v3`: where each group/version's document is, with its hash.
pub fn root() -> Value {
    let paths: Map<String, Value> = DOCS
        .iter()
        .map(|(path, d)| {
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", d.hash)}),
            )
        })
        .collect();
    json!({ "paths": paths })
}

/// The document of `path` (`apis/apps/v1`), if that group/version is served.
pub fn document(path: &str) -> Option<&'static GroupVersionDoc> {
    DOCS.get(path.trim_matches('/'))
}

/// The OpenAPI v2 (Swagger 2.0) document of every served kind, as JSON and as the
/// protobuf kubectl 1.20 downloads: the same schemas under `definitions`.
pub struct SwaggerDoc {
    pub json: Value,
    pub protobuf: Vec<u8>,
}

static SWAGGER: LazyLock<SwaggerDoc> = LazyLock::new(|| {
    let mut definitions = Map::new();
    for d in DOCS.values() {
        if let Some(Value::Object(schemas)) = d.doc.pointer("/components/schemas") {
            for (name, schema) in schemas {
                definitions.insert(name.clone(), v2_refs(schema));
            }
        }
    }
    let mut paths = Map::new();
    for d in DOCS.values() {
        if let Some(Value::Object(items)) = d.doc.get("paths") {
            for (path, item) in items {
                paths.insert(path.clone(), v2_path_item(item));
            }
        }
    }
    let json = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": MODEL_VERSION},
        "paths": paths,
        "definitions": definitions,
    });
    let protobuf = crate::openapi_v2::encode(&json);
    SwaggerDoc { json, protobuf }
});

/// The v2 document.
pub fn swagger() -> &'static SwaggerDoc {
    &SWAGGER
}

/// A path's operations as v2 writes them: each with its id, its action and kind, and its
/// path and query parameters (kubectl 1.20 finds whether a kind's PATCH takes `dryRun`
/// there before it runs `diff`).
fn v2_path_item(item: &Value) -> Value {
    let shared: Vec<Value> = item
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut out = Map::new();
    for method in ["get", "put", "post", "delete", "patch"] {
        let Some(op) = item.get(method) else {
            continue;
        };
        let parameters: Vec<Value> = shared
            .iter()
            .chain(op.get("parameters").and_then(Value::as_array).into_iter().flatten())
            .map(|p| {
                let mut v2 = json!({"name": p["name"], "in": p["in"], "type": "string", "uniqueItems": true});
                if let Some(d) = p.get("description") {
                    v2["description"] = d.clone();
                }
                if p["required"] == true {
                    v2["required"] = json!(true);
                }
                v2
            })
            .collect();
        out.insert(
            method.into(),
            json!({
                "operationId": op["operationId"],
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": op["x-kubernetes-action"],
                "x-kubernetes-group-version-kind": op["x-kubernetes-group-version-kind"],
            }),
        );
    }
    Value::Object(out)
}

/// A schema as v2 writes it: references point at `definitions`, and a reference with a
/// description is a `$ref` beside it (v3 wraps it in a one-element `allOf`).
fn v2_refs(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .flat_map(|(k, v)| match (k.as_str(), v) {
                    ("allOf", Value::Array(one))
                        if one.len() == 1 && one[0].get("$ref").is_some() =>
                    {
                        one[0]
                            .as_object()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .collect::<Vec<_>>()
                    }
                    _ => vec![(k.clone(), v.clone())],
                })
                .map(|(k, v)| {
                    let v = match (k.as_str(), &v) {
                        ("$ref", Value::String(r)) => {
                            Value::String(r.replace("#/components/schemas/", "#/definitions/"))
                        }
                        _ => v2_refs(&v),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(v2_refs).collect()),
        other => other.clone(),
    }
}

/// FNV-1a over the document's bytes, in hex: it changes whenever the document does.
fn hash_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016X}")
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The schema name `k8s-openapi` gives a kind: `io.k8s.api.apps.v1.Deployment`.
fn schema_name(info: &ResourceInfo) -> String {
    let group = match info.group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("io.k8s.api.{group}.{}.{}", info.version, info.kind)
}

/// Adds the schema of the kind `info` serves to `generator`'s definitions.
fn add_kind(generator: &mut schemars::SchemaGenerator, info: &ResourceInfo) {
    use k8s_openapi::api::apps::v1 as apps;
    use k8s_openapi::api::batch::v1 as batch;
    use k8s_openapi::api::coordination::v1 as coordination;
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    use k8s_openapi::api::policy::v1 as policy;
    if info.view == Some(resources::View::EventsV1) {
        generator.subschema_for::<k8s_openapi::api::events::v1::Event>();
        return;
    }
    let _ = match info.kind {
        "Namespace" => generator.subschema_for::<core::Namespace>(),
        "Node" => generator.subschema_for::<core::Node>(),
        "Pod" => generator.subschema_for::<core::Pod>(),
        "ConfigMap" => generator.subschema_for::<core::ConfigMap>(),
        "Secret" => generator.subschema_for::<core::Secret>(),
        "ServiceAccount" => generator.subschema_for::<core::ServiceAccount>(),
        "Event" => generator.subschema_for::<core::Event>(),
        "Service" => generator.subschema_for::<core::Service>(),
        "Endpoints" => generator.subschema_for::<core::Endpoints>(),
        "ReplicationController" => generator.subschema_for::<core::ReplicationController>(),
        "Deployment" => generator.subschema_for::<apps::Deployment>(),
        "ReplicaSet" => generator.subschema_for::<apps::ReplicaSet>(),
        "DaemonSet" => generator.subschema_for::<apps::DaemonSet>(),
        "StatefulSet" => generator.subschema_for::<apps::StatefulSet>(),
        "ControllerRevision" => generator.subschema_for::<apps::ControllerRevision>(),
        "Job" => generator.subschema_for::<batch::Job>(),
        "CronJob" => generator.subschema_for::<batch::CronJob>(),
        "Lease" => generator.subschema_for::<coordination::Lease>(),
        "EndpointSlice" => generator.subschema_for::<discovery::EndpointSlice>(),
        "PodDisruptionBudget" => generator.subschema_for::<policy::PodDisruptionBudget>(),
        _ => return,
    };
}

/// The strategic-merge-patch extensions of every property whose Go field has them, and the
/// server-side apply ones (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
/// `x-kubernetes-map-type`) of every property whose Go markers give them.
fn annotate_patch_strategies(name: &str, schema: &mut Value) {
    // `io.k8s.api.core.v1.PodSpec` is the protobuf message `k8s.io.api.core.v1.PodSpec`.
    let Some(message) = name.strip_prefix("io.k8s.").map(|m| format!("k8s.io.{m}")) else {
        return;
    };
    let Some(Value::Object(properties)) = schema.get_mut("properties") else {
        return;
    };
    for (property, value) in properties.iter_mut() {
        let Some(field) = patch_field(&message, property) else {
            continue;
        };
        let Value::Object(value) = value else {
            continue;
        };
        if let Some(strategy) = field.strategy {
            value.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        }
        if let Some(key) = field.merge_key {
            value.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        match field.apply {
            Some(keys) if keys.starts_with("map:") => {
                value.insert("x-kubernetes-list-type".into(), json!("map"));
                let keys: Vec<&str> = keys[4..].split(',').collect();
                value.insert("x-kubernetes-list-map-keys".into(), json!(keys));
            }
            Some(kind @ ("set" | "atomic")) if field.list => {
                value.insert("x-kubernetes-list-type".into(), json!(kind));
            }
            Some("atomic") => {
                value.insert("x-kubernetes-map-type".into(), json!("atomic"));
            }
            _ => {}
        }
    }
}

fn gvk(info: &ResourceInfo) -> Value {
    json!({"group": info.group, "version": info.version, "kind": info.kind})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

const FIELD_VALIDATION: &str = "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: ignores unknown fields. - Warn: responds with a warning for each unknown field, but serves the request. - Strict: fails the request on unknown fields.";

fn content(schema: &Value, types: &[&str]) -> Value {
    let map: Map<String, Value> = types
        .iter()
        .map(|t| ((*t).to_owned(), json!({"schema": schema})))
        .collect();
    Value::Object(map)
}

/// The operations of one resource: on the collection, on one object, and on its status and
/// scale subresources.
fn operations(info: &ResourceInfo, paths: &mut Map<String, Value>) {
    let base = format!("/{}", group_version_path(info.group, info.version));
    let (collection, mut params) = if info.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", info.resource),
            vec![path_param("namespace")],
        )
    } else {
        (format!("{base}/{}", info.resource), Vec::new())
    };
    let object_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(info))});
    let json_types = ["application/json", "application/yaml"];
    let write_params = |extra: &[Value]| -> Value {
        let mut p = vec![
            query(
                "dryRun",
                "When present, indicates that modifications should not be persisted.",
            ),
            query(
                "fieldManager",
                "fieldManager is a name associated with the actor or entity that is making these changes.",
            ),
            query("fieldValidation", FIELD_VALIDATION),
        ];
        p.extend_from_slice(extra);
        Value::Array(p)
    };
    let op = |action: &str, id: &str, params: Value, body: Option<Value>| -> Value {
        let mut op = json!({
            "operationId": id,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk(info),
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": content(&object_ref, &json_types)}},
        });
        if let Some(body) = body {
            op["requestBody"] = json!({"required": true, "content": body});
        }
        op
    };
    let kind = info.kind;
    let list = json!({"type": "object"});
    paths.insert(
        collection.clone(),
        json!({
            "parameters": params.clone(),
            "get": op("list", &format!("list{kind}"), json!([]), None),
            "post": op("post", &format!("create{kind}"), write_params(&[]), Some(content(&object_ref, &json_types))),
        }),
    );
    if let Some(get) = paths[&collection].get_mut("get") {
        get["responses"]["200"]["content"] = content(&list, &json_types);
    }
    if info.verbs().contains(&"deletecollection") {
        paths[&collection]["delete"] = op(
            "deletecollection",
            &format!("deleteCollection{kind}"),
            write_params(&[]),
            None,
        );
    }
    params.push(path_param("name"));
    let patch_body = content(
        &json!({"type": "object"}),
        &[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/apply-patch+yaml",
        ],
    );
    let mut object_path = |suffix: &str, id_suffix: &str| {
        paths.insert(
            format!("{collection}/{{name}}{suffix}"),
            json!({
                "parameters": params.clone(),
                "get": op("get", &format!("read{kind}{id_suffix}"), json!([]), None),
                "put": op("put", &format!("replace{kind}{id_suffix}"), write_params(&[]), Some(content(&object_ref, &json_types))),
                "patch": op("patch", &format!("patch{kind}{id_suffix}"), write_params(&[query("force", "Force is going to \"force\" Apply requests.")]), Some(patch_body.clone())),
            }),
        );
    };
    object_path("", "");
    if info.has_status {
        object_path("/status", "Status");
    }
    if let Some(delete) = paths
        .get_mut(&format!("{collection}/{{name}}"))
        .and_then(Value::as_object_mut)
    {
        delete.insert(
            "delete".into(),
            op("delete", &format!("delete{kind}"), json!([]), None),
        );
    }
}

fn build() -> BTreeMap<String, GroupVersionDoc> {
    let mut served: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !served.contains(&(r.group, r.version)) {
            served.push((r.group, r.version));
        }
    }
    let mut docs = BTreeMap::new();
    for (group, version) in served {
        let infos = resources::of_group_version(group, version);
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        for info in &infos {
            add_kind(&mut generator, info);
        }
        let mut schemas = generator.take_definitions(true);
        for (name, schema) in schemas.iter_mut() {
            annotate_patch_strategies(name, schema);
        }
        for info in &infos {
            if let Some(Value::Object(schema)) = schemas.get_mut(&schema_name(info)) {
                schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk(info)]));
            }
        }
        let mut paths = Map::new();
        for info in &infos {
            operations(info, &mut paths);
        }
        let doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": MODEL_VERSION},
            "paths": paths,
            "components": {"schemas": schemas},
        });
        let hash = hash_of(doc.to_string().as_bytes());
        docs.insert(
            group_version_path(group, version),
            GroupVersionDoc { doc, hash },
        );
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_group_version_has_a_document_the_root_points_at() {
        let root = root();
        for r in RESOURCES {
            let path = group_version_path(r.group, r.version);
            let url = root["paths"][&path]["serverRelativeURL"]
                .as_str()
                .unwrap_or_default();
            let doc = document(&path).expect("a document");
            assert_eq!(url, format!("/openapi/v3/{path}?hash={}", doc.hash));
            assert!(
                doc.doc["components"]["schemas"]
                    .get(schema_name(r))
                    .is_some(),
                "{}",
                r.kind
            );
        }
    }

    #[test]
    fn patch_operations_declare_field_validation_for_their_kind() {
        let doc = &document("apis/apps/v1").expect("served").doc;
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        let params = patch["parameters"].as_array().expect("parameters");
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
        );
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
        );
        let nodes = &document("api/v1").expect("served").doc["paths"]["/api/v1/nodes/{name}"];
        assert!(nodes["patch"].is_object());
    }

    #[test]
    fn schemas_carry_the_kind_and_the_merge_keys() {
        let doc = &document("apis/apps/v1").expect("served").doc;
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        let strategy = &schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        // References resolve within the document.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(
                schemas.get(name).is_some(),
                "{name} is referred to but missing"
            );
        }
    }

    #[test]
    fn the_v2_document_has_every_definition_with_plain_references() {
        let doc = &swagger().json;
        let definitions = &doc["definitions"];
        let meta = &definitions["io.k8s.api.apps.v1.Deployment"]["properties"]["metadata"];
        assert_eq!(
            meta["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(meta.get("allOf").is_none(), "{meta}");
        let text = doc.to_string();
        assert!(!text.contains("#/components/"));
        for reference in text.split("\"$ref\":\"#/definitions/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(
                definitions.get(name).is_some(),
                "{name} is referred to but missing"
            );
        }
        assert!(!swagger().protobuf.is_empty());
    }
}
