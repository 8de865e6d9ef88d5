//! The OpenAPI v2 document as the protobuf kubectl 1.20 asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`): gnostic's
//! `openapi.v2.Document`. What is written: the version, the info, the paths (each operation
//! with its id, its path and query parameters and its vendor extensions), and the
//! definitions, each schema with its reference, type, format, description, bounds, required
//! fields, enum, items, properties, additional properties and vendor extensions (whose
//! values gnostic carries as YAML).

use serde_json::Value;

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        // The low seven bits; the narrowing keeps exactly them.
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

fn bytes(out: &mut Vec<u8>, tag: u32, value: &[u8]) {
    key(out, tag, 2);
    varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

fn string(out: &mut Vec<u8>, tag: u32, value: &str) {
    if !value.is_empty() {
        bytes(out, tag, value.as_bytes());
    }
}

fn boolean(out: &mut Vec<u8>, tag: u32, value: bool) {
    if value {
        key(out, tag, 0);
        varint(out, 1);
    }
}

fn double(out: &mut Vec<u8>, tag: u32, value: f64) {
    key(out, tag, 1);
    out.extend_from_slice(&value.to_le_bytes());
}

fn int64(out: &mut Vec<u8>, tag: u32, value: i64) {
    key(out, tag, 0);
    // Protobuf writes a negative int64 as its two's complement.
    varint(out, value as u64);
}

/// `openapi.v2.Any` holding `value` as YAML.
fn any(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let yaml = serde_yaml::to_string(value).unwrap_or_default();
    string(&mut out, 2, &yaml);
    out
}

/// `openapi.v2.NamedAny` / `NamedSchema`: a name and a value message.
fn named(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, 1, name);
    bytes(&mut out, 2, value);
    out
}

/// `openapi.v2.Schema`.
fn schema(value: &Value, depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let Value::Object(map) = value else {
        return out;
    };
    if depth > 64 {
        return out;
    }
    let text = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or_default();
    string(&mut out, 1, text("$ref"));
    string(&mut out, 2, text("format"));
    string(&mut out, 3, text("title"));
    string(&mut out, 4, text("description"));
    if let Some(d) = map.get("default") {
        bytes(&mut out, 5, &any(d));
    }
    for (name, tag) in [("maximum", 7), ("minimum", 9)] {
        if let Some(n) = map.get(name).and_then(Value::as_f64) {
            double(&mut out, tag, n);
        }
    }
    for (name, tag) in [
        ("maxLength", 11),
        ("minLength", 12),
        ("maxItems", 14),
        ("minItems", 15),
        ("maxProperties", 17),
        ("minProperties", 18),
    ] {
        if let Some(n) = map.get(name).and_then(Value::as_i64) {
            int64(&mut out, tag, n);
        }
    }
    string(&mut out, 13, text("pattern"));
    boolean(
        &mut out,
        16,
        map.get("uniqueItems") == Some(&Value::Bool(true)),
    );
    for r in map
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        string(&mut out, 19, r);
    }
    for e in map
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes(&mut out, 20, &any(e));
    }
    match map.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Vec::new();
            key(&mut item, 2, 0);
            varint(&mut item, u64::from(*b));
            bytes(&mut out, 21, &item);
        }
        Some(inner @ Value::Object(_)) => {
            let mut item = Vec::new();
            bytes(&mut item, 1, &schema(inner, depth + 1));
            bytes(&mut out, 21, &item);
        }
        _ => {}
    }
    let types: Vec<&str> = match map.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() {
        let mut item = Vec::new();
        for t in types {
            string(&mut item, 1, t);
        }
        bytes(&mut out, 22, &item);
    }
    match map.get("items") {
        Some(inner @ Value::Object(_)) => {
            let mut item = Vec::new();
            bytes(&mut item, 1, &schema(inner, depth + 1));
            bytes(&mut out, 23, &item);
        }
        Some(Value::Array(all)) => {
            let mut item = Vec::new();
            for inner in all {
                bytes(&mut item, 1, &schema(inner, depth + 1));
            }
            bytes(&mut out, 23, &item);
        }
        _ => {}
    }
    for inner in map
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes(&mut out, 24, &schema(inner, depth + 1));
    }
    if let Some(Value::Object(properties)) = map.get("properties") {
        let mut item = Vec::new();
        for (name, inner) in properties {
            bytes(&mut item, 1, &named(name, &schema(inner, depth + 1)));
        }
        bytes(&mut out, 25, &item);
    }
    boolean(
        &mut out,
        27,
        map.get("readOnly") == Some(&Value::Bool(true)),
    );
    extensions(&mut out, 31, map);
    out
}

/// The vendor extensions (`x-…`) of a JSON object, as `NamedAny`s in field `tag`.
fn extensions(out: &mut Vec<u8>, tag: u32, map: &serde_json::Map<String, Value>) {
    for (name, v) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        bytes(out, tag, &named(name, &any(v)));
    }
}

/// `openapi.v2.ParametersItem` of a path or query parameter.
fn parameter(p: &Value) -> Vec<u8> {
    let text = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or_default();
    // Query and path sub-schemas share their first four fields; `type` is 6 and 5.
    let (kind, type_tag) = match text("in") {
        "path" => (4, 5),
        _ => (3, 6),
    };
    let mut sub = Vec::new();
    boolean(&mut sub, 1, p.get("required") == Some(&Value::Bool(true)));
    string(&mut sub, 2, text("in"));
    string(&mut sub, 3, text("description"));
    string(&mut sub, 4, text("name"));
    string(&mut sub, type_tag, text("type"));
    let mut non_body = Vec::new();
    bytes(&mut non_body, kind, &sub);
    let mut parameter = Vec::new();
    bytes(&mut parameter, 2, &non_body);
    let mut item = Vec::new();
    bytes(&mut item, 1, &parameter);
    item
}

/// `openapi.v2.Operation`.
fn operation(op: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(
        &mut out,
        5,
        op.get("operationId")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes(&mut out, 8, &parameter(p));
    }
    if let Value::Object(map) = op {
        extensions(&mut out, 13, map);
    }
    out
}

/// `openapi.v2.Paths`.
fn paths(paths: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, item) in paths {
        let mut value = Vec::new();
        for (method, tag) in [
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("patch", 8),
        ] {
            if let Some(op) = item.get(method) {
                bytes(&mut value, tag, &operation(op));
            }
        }
        let mut named_item = Vec::new();
        string(&mut named_item, 1, path);
        bytes(&mut named_item, 2, &value);
        bytes(&mut out, 2, &named_item);
    }
    out
}

/// `openapi.v2.Document` of a Swagger 2.0 JSON document.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, 1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Vec::new();
    string(
        &mut info,
        1,
        doc["info"]["title"].as_str().unwrap_or_default(),
    );
    string(
        &mut info,
        2,
        doc["info"]["version"].as_str().unwrap_or_default(),
    );
    bytes(&mut out, 2, &info);
    match doc.get("paths") {
        Some(Value::Object(map)) => bytes(&mut out, 8, &paths(map)),
        _ => bytes(&mut out, 8, &[]),
    }
    if let Some(Value::Object(definitions)) = doc.get("definitions") {
        let mut item = Vec::new();
        for (name, s) in definitions {
            bytes(&mut item, 1, &named(name, &schema(s, 0)));
        }
        bytes(&mut out, 9, &item);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Reads one level of a message: (tag, wire type, payload) for every field.
    fn fields(mut bytes: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
        fn varint(b: &mut &[u8]) -> u64 {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            v
        }
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let k = varint(&mut bytes);
            let wire = (k & 7) as u8;
            let payload = match wire {
                0 => varint(&mut bytes).to_le_bytes().to_vec(),
                1 => {
                    let p = bytes[..8].to_vec();
                    bytes = &bytes[8..];
                    p
                }
                _ => {
                    let n = varint(&mut bytes) as usize;
                    let p = bytes[..n].to_vec();
                    bytes = &bytes[n..];
                    p
                }
            };
            out.push((k >> 3, wire, payload));
        }
        out
    }

    fn one(bytes: &[u8], tag: u64) -> Vec<u8> {
        fields(bytes)
            .into_iter()
            .find(|(t, _, _)| *t == tag)
            .map(|(_, _, p)| p)
            .unwrap_or_else(|| panic!("no field {tag}"))
    }

    #[test]
    fn a_document_reads_back_as_gnostic_lays_it_out() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "definitions": {"io.k8s.api.apps.v1.Deployment": {
                "description": "a deployment",
                "type": "object",
                "required": ["spec"],
                "properties": {"spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"}},
                "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}],
            }},
        });
        let bytes = encode(&doc);
        assert_eq!(one(&bytes, 1), b"2.0");
        assert_eq!(one(&one(&bytes, 2), 2), b"v1.32.0");
        let named = one(&one(&bytes, 9), 1);
        assert_eq!(one(&named, 1), b"io.k8s.api.apps.v1.Deployment");
        let s = one(&named, 2);
        assert_eq!(one(&s, 4), b"a deployment");
        assert_eq!(one(&one(&s, 22), 1), b"object");
        assert_eq!(one(&s, 19), b"spec");
        let spec = one(&one(&s, 25), 1);
        assert_eq!(one(&spec, 1), b"spec");
        assert_eq!(
            one(&one(&spec, 2), 1),
            b"#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let extension = one(&s, 31);
        assert_eq!(one(&extension, 1), b"x-kubernetes-group-version-kind");
        let yaml = String::from_utf8(one(&one(&extension, 2), 2)).expect("text");
        let back: Value = serde_yaml::from_str(&yaml).expect("yaml");
        assert_eq!(
            back,
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
    }

    #[test]
    fn a_patch_operation_carries_its_kind_and_its_dry_run_parameter() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": {"/api/v1/namespaces/{namespace}/configmaps/{name}": {"patch": {
                "operationId": "patchConfigMap",
                "parameters": [
                    {"name": "name", "in": "path", "required": true, "type": "string"},
                    {"name": "dryRun", "in": "query", "description": "no writes", "type": "string"},
                ],
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": "", "kind": "ConfigMap", "version": "v1"},
            }}},
        });
        let bytes = encode(&doc);
        let item = one(&one(&bytes, 8), 2);
        assert_eq!(
            one(&item, 1),
            b"/api/v1/namespaces/{namespace}/configmaps/{name}"
        );
        let patch = one(&one(&item, 2), 8);
        assert_eq!(one(&patch, 5), b"patchConfigMap");
        let params: Vec<Vec<u8>> = fields(&patch)
            .into_iter()
            .filter(|(t, _, _)| *t == 8)
            .map(|(_, _, p)| one(&one(&p, 1), 2))
            .collect();
        let path = one(&params[0], 4);
        assert_eq!(
            (one(&path, 4), one(&path, 5)),
            (b"name".to_vec(), b"string".to_vec())
        );
        let query = one(&params[1], 3);
        assert_eq!(
            (one(&query, 2), one(&query, 4)),
            (b"query".to_vec(), b"dryRun".to_vec())
        );
        assert_eq!(one(&query, 6), b"string");
        let extension = fields(&patch)
            .into_iter()
            .filter(|(t, _, _)| *t == 13)
            .map(|(_, _, p)| p)
            .find(|e| one(e, 1) == b"x-kubernetes-group-version-kind")
            .expect("the kind");
        let yaml = String::from_utf8(one(&one(&extension, 2), 2)).expect("text");
        let back: Value = serde_yaml::from_str(&yaml).expect("yaml");
        assert_eq!(
            back,
            json!({"group": "", "kind": "ConfigMap", "version": "v1"})
        );
    }
}
