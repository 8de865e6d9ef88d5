//! Content negotiation (kubectl-contract §2): which representation a response takes, and how a
//! request body is read.

use shoal_core::{ApiError, PatchKind};

/// A response representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Representation {
    Json,
    Yaml,
    Table,
    /// Only each object's metadata (`as=PartialObjectMetadata` for an object or a watch,
    /// `as=PartialObjectMetadataList` for a list), as Kubernetes' metadata clients ask.
    Metadata(MetadataForm),
}

/// Which `PartialObjectMetadata` form a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataForm {
    Object,
    List,
}

fn params(entry: &str) -> (String, Vec<(String, String)>) {
    let mut parts = entry.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect();
    (media, params)
}

/// The value of the media-type parameter `key`, if given.
fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Picks the first entry of `Accept` that can be served. Never 406 when JSON is acceptable.
/// `metadata` is the `PartialObjectMetadata` form the request can be answered in, if any:
/// entries asking for another form are passed over.
pub fn choose(
    accept: Option<&str>,
    metadata: Option<MetadataForm>,
) -> Result<Representation, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(Representation::Json);
    };
    for entry in accept.split(',') {
        let (media, params) = params(entry);
        let get = |k: &str| param(&params, k);
        if let Some(as_) = get("as") {
            let is_table = as_ == "Table"
                && get("g") == Some("meta.k8s.io")
                && matches!(get("v"), Some("v1" | "v1beta1"));
            let is_meta =
                get("g") == Some("meta.k8s.io") && matches!(get("v"), Some("v1" | "v1beta1"));
            let form = match as_ {
                "PartialObjectMetadata" => Some(MetadataForm::Object),
                "PartialObjectMetadataList" => Some(MetadataForm::List),
                _ => None,
            };
            let json = matches!(media.as_str(), "application/json" | "*/*");
            if is_table && json {
                return Ok(Representation::Table);
            }
            if let Some(form) = form
                && is_meta
                && json
                && metadata == Some(form)
            {
                return Ok(Representation::Metadata(form));
            }
            // Another `as=` (aggregated discovery, another metadata form) is not served here.
            continue;
        }
        match media.as_str() {
            "application/json" | "*/*" | "application/*" => return Ok(Representation::Json),
            "application/yaml" => return Ok(Representation::Yaml),
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable(format!(
        "none of the media types in {accept:?} can be served; application/json is available"
    )))
}

/// The aggregated discovery document `Accept` asks for before anything else it takes:
/// `None` when the legacy documents (plain JSON) come first.
pub fn aggregated_discovery(accept: Option<&str>) -> Option<crate::discovery::Aggregated> {
    use crate::discovery::Aggregated;
    for entry in accept?.split(',') {
        let (media, params) = params(entry);
        let get = |k: &str| param(&params, k);
        match (get("as"), get("g"), get("v")) {
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2"))
                if media == "application/json" =>
            {
                return Some(Aggregated::V2);
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2beta1"))
                if media == "application/json" =>
            {
                return Some(Aggregated::V2Beta1);
            }
            // Another view (a Table, metadata only) is not for discovery.
            (Some(_), _, _) => continue,
            (None, _, _) => {
                if matches!(
                    media.as_str(),
                    "application/json" | "application/yaml" | "*/*" | "application/*"
                ) {
                    return None;
                }
            }
        }
    }
    None
}

/// Reads a request body as JSON bytes, converting YAML and Kubernetes protobuf.
pub fn body_to_json(content_type: Option<&str>, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let media = content_type.map(|c| params(c).0).unwrap_or_default();
    match media.as_str() {
        "" | "application/json" => Ok(body.to_vec()),
        "application/vnd.kubernetes.protobuf" => {
            let value = crate::protobuf::decode_object(body)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            serde_json::to_vec(&value).map_err(|e| ApiError::BadRequest(e.to_string()))
        }
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let value: serde_json::Value = serde_yaml::from_slice(body).map_err(|e| {
                ApiError::BadRequest(format!("the request body is not valid YAML: {e}"))
            })?;
            serde_json::to_vec(&value).map_err(|e| ApiError::BadRequest(e.to_string()))
        }
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// The patch format a PATCH's `Content-Type` names.
pub fn patch_kind(content_type: Option<&str>) -> Result<PatchKind, ApiError> {
    match content_type
        .map(|c| params(c).0)
        .unwrap_or_default()
        .as_str()
    {
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/apply-patch+yaml" => Ok(PatchKind::Apply),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

#[cfg(test)]
mod tests {
    use crate::discovery::Aggregated;

    #[test]
    fn aggregated_discovery_is_served_when_asked_for_first() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            super::aggregated_discovery(Some(kubectl)),
            Some(Aggregated::V2)
        );
        let older = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(
            super::aggregated_discovery(Some(older)),
            Some(Aggregated::V2Beta1)
        );
        for legacy in [
            "application/json",
            "application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            "*/*",
            "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList, application/json",
        ] {
            assert_eq!(super::aggregated_discovery(Some(legacy)), None, "{legacy}");
        }
        assert_eq!(super::aggregated_discovery(None), None);
    }

    use super::*;

    #[test]
    fn kubectl_get_asks_for_a_table() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(choose(Some(accept), None), Ok(Representation::Table));
    }

    #[test]
    fn metadata_is_served_in_the_form_the_request_can_take() {
        // As client-go's metadata client asks.
        let list = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
        assert_eq!(
            choose(Some(list), Some(MetadataForm::List)),
            Ok(Representation::Metadata(MetadataForm::List))
        );
        // A get or a watch cannot answer with a list: the next entry is taken.
        assert_eq!(
            choose(Some(list), Some(MetadataForm::Object)),
            Ok(Representation::Json)
        );
        let object = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
        assert_eq!(
            choose(Some(object), Some(MetadataForm::Object)),
            Ok(Representation::Metadata(MetadataForm::Object))
        );
        // Only that form was asked for, and a list cannot be it.
        assert_eq!(
            choose(Some(object), Some(MetadataForm::List)).map_err(|e| e.code()),
            Err(406)
        );
        assert_eq!(choose(Some(object), None).map_err(|e| e.code()), Err(406));
    }

    #[test]
    fn aggregated_discovery_falls_back_to_json() {
        let accept =
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
        assert_eq!(choose(Some(accept), None), Ok(Representation::Json));
    }

    #[test]
    fn protobuf_first_still_gets_json() {
        assert_eq!(
            choose(
                Some("application/vnd.kubernetes.protobuf,application/json"),
                None
            ),
            Ok(Representation::Json)
        );
        assert_eq!(
            choose(Some("application/vnd.kubernetes.protobuf"), None).map_err(|e| e.code()),
            Err(406)
        );
        assert_eq!(choose(None, None), Ok(Representation::Json));
    }

    #[test]
    fn patch_types_are_read_from_the_content_type() {
        assert_eq!(
            patch_kind(Some("application/merge-patch+json")),
            Ok(PatchKind::Merge)
        );
        assert_eq!(
            patch_kind(Some("application/json-patch+json; charset=utf-8")),
            Ok(PatchKind::Json)
        );
        assert_eq!(
            patch_kind(Some("application/strategic-merge-patch+json")),
            Ok(PatchKind::Strategic)
        );
        assert_eq!(
            patch_kind(Some("application/apply-patch+yaml")),
            Ok(PatchKind::Apply)
        );
        assert_eq!(
            patch_kind(Some("application/apply-patch+cbor")).map_err(|e| e.code()),
            Err(415)
        );
        assert_eq!(patch_kind(None).map_err(|e| e.code()), Err(415));
    }

    #[test]
    fn yaml_bodies_become_json_and_garbage_is_refused() {
        let json = body_to_json(Some("application/yaml"), b"metadata:\n  name: x\n").expect("yaml");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&json).expect("json")["metadata"]["name"],
            "x"
        );
        assert_eq!(
            body_to_json(Some("application/yaml"), b"a: [1,\n").map_err(|e| e.code()),
            Err(400)
        );
        assert_eq!(
            body_to_json(Some("application/vnd.kubernetes.protobuf"), b"k8s\0")
                .map_err(|e| e.code()),
            Err(400)
        );
        assert_eq!(
            body_to_json(Some("application/x-protobuf"), b"k8s\0").map_err(|e| e.code()),
            Err(415)
        );
    }
}
