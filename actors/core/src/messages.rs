//! The messages that cross processes. Kept small on purpose (DESIGN §2): the API door is the
//! only remotable actor interface; everything else is local.
//!
//! Bodies travel as JSON bytes inside bincode-encoded envelopes (bincode cannot carry a
//! self-describing `serde_json::Value`).

use ractor::{BytesConvertable, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// What an API request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    Get,
    List,
    Create,
    Update,
    Delete,
    /// Change part of an object; `RequestOptions::patch` says how the body reads.
    Patch,
    /// A request whose envelope could not be decoded; answered with 400.
    Malformed,
    /// Delete every object of a list (with its selectors).
    DeleteCollection,
}

impl Verb {
    /// The verb's name as Kubernetes spells it in discovery and errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Patch => "patch",
            Verb::Malformed => "malformed",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

/// How a PATCH body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatchKind {
    /// RFC 6902, `application/json-patch+json`.
    Json,
    /// RFC 7396, `application/merge-patch+json`.
    Merge,
    /// Kubernetes' strategic merge patch, `application/strategic-merge-patch+json`.
    Strategic,
    /// Server-side apply, `application/apply-patch+yaml`: the body is the fields its
    /// manager wants, as JSON.
    Apply,
}

/// Query options that shape a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestOptions {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    /// For `Verb::List`: how `resource_version` bounds the list (`NotOlderThan`, `Exact`).
    pub resource_version_match: Option<String>,
    pub dry_run: bool,
    /// For `Verb::Patch`: the patch's format.
    pub patch: Option<PatchKind>,
    /// What a write does with fields its kind does not have.
    pub field_validation: FieldValidation,
    /// `?fieldManager=`: who the write's fields are recorded as managed by.
    pub field_manager: Option<String>,
    /// `?force=`: for server-side apply, take fields other managers own.
    pub force: Option<bool>,
    /// The manager a write with no `fieldManager` is recorded as: the client's
    /// `User-Agent` up to its first `/`.
    pub agent: Option<String>,
    /// For `Verb::List`: at most this many items per page (`?limit=`; 0 is no limit).
    pub limit: Option<u64>,
    /// For `Verb::List`: the token of the page to continue with (`?continue=`).
    pub continue_token: Option<String>,
    /// For a watch (`?sendInitialEvents=`): whether it begins with the current objects as
    /// ADDED events, then a bookmark marking their end; `false` starts with changes only.
    pub send_initial_events: Option<bool>,
    /// For `Verb::Get` and `Verb::List`: the reply holds only each object's metadata, as a
    /// `PartialObjectMetadata` (a `PartialObjectMetadataList` for a list).
    #[serde(default)]
    pub metadata_only: bool,
}

/// What a write does with fields its kind does not have (`?fieldValidation=`); they are
/// never stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FieldValidation {
    /// The write fails with 400, naming them.
    Strict,
    /// The write succeeds with a warning naming each (the default, as in Kubernetes).
    #[default]
    Warn,
    /// They are dropped silently.
    Ignore,
}

impl std::str::FromStr for FieldValidation {
    type Err = String;

    fn from_str(text: &str) -> Result<FieldValidation, String> {
        match text {
            "Strict" => Ok(FieldValidation::Strict),
            "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            other => Err(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\" or \"Strict\", not {other:?}"
            )),
        }
    }
}

/// A leadership term that fences writes: a component that holds a leader lease stamps every
/// write with the lease's name and its term, and the store refuses a write whose term is older
/// than the newest one it has seen for that name — a deposed leader's late writes fail.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The lease, e.g. `kube-system/kube-controller-manager`.
    pub name: String,
    /// The holder's term: the lease's `leaseTransitions` when it was acquired.
    pub token: u64,
}

impl std::fmt::Display for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} term {}", self.name, self.token)
    }
}

/// One request to the API, from HTTP or from an actor: the single door to cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiRequest {
    pub verb: Verb,
    /// API group; empty for the core group.
    pub group: String,
    pub version: String,
    /// Plural resource name, e.g. `pods`.
    pub resource: String,
    /// `status` for the status subresource.
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The JSON body of create and update.
    pub body: Vec<u8>,
    pub options: RequestOptions,
    /// Who asks (certificate CN or token user).
    pub user: String,
    /// For writes by a leader-elected component: its term. Never taken from HTTP.
    pub fence: Option<Fence>,
}

impl ApiRequest {
    /// A request with no body and default options.
    pub fn new(
        verb: Verb,
        group: &str,
        version: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        ApiRequest {
            verb,
            group: group.to_owned(),
            version: version.to_owned(),
            resource: resource.to_owned(),
            subresource: None,
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            body: Vec::new(),
            options: RequestOptions::default(),
            user: String::new(),
            fence: None,
        }
    }

    /// The same request fenced by a leadership term.
    pub fn fenced(mut self, fence: Option<Fence>) -> Self {
        self.fence = fence;
        self
    }

    /// The same request with a JSON body.
    pub fn with_body(mut self, body: &serde_json::Value) -> Self {
        self.body = serde_json::to_vec(body).unwrap_or_default();
        self
    }
}

/// The answer to an [`ApiRequest`]: an HTTP status code and a JSON body (an object, a list, or
/// a `Status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiReply {
    pub code: u16,
    pub body: Vec<u8>,
    /// Warnings for the client (HTTP `Warning: 299` headers).
    pub warnings: Vec<String>,
}

impl ApiReply {
    /// A success with a JSON value.
    pub fn ok(code: u16, value: &serde_json::Value) -> ApiReply {
        ApiReply {
            code,
            body: serde_json::to_vec(value).unwrap_or_default(),
            warnings: Vec::new(),
        }
    }

    /// An error as a `Status` body.
    pub fn error(err: &ApiError) -> ApiReply {
        ApiReply::ok(err.code(), &err.to_status())
    }

    /// Whether the code is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs of strings, numbers and byte vectors into a Vec cannot fail.
    bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .ok()
        .map(|(v, _)| v)
}

impl BytesConvertable for ApiRequest {
    fn into_bytes(self) -> Vec<u8> {
        encode(&self)
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        decode(&bytes).unwrap_or_else(|| ApiRequest::new(Verb::Malformed, "", "", "", None, None))
    }
}

impl BytesConvertable for ApiReply {
    fn into_bytes(self) -> Vec<u8> {
        encode(&self)
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        decode(&bytes)
            .unwrap_or_else(|| ApiReply::error(&ApiError::Internal("undecodable reply".into())))
    }
}

/// The messages of the ApiServer actor, the API's door for other actors, local or remote.
#[derive(RactorClusterMessage)]
pub enum ApiServerMsg {
    /// Carry out one request and answer it.
    #[rpc]
    Call(ApiRequest, RpcReplyPort<ApiReply>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_survive_the_wire() {
        let mut req = ApiRequest::new(
            Verb::Update,
            "coordination.k8s.io",
            "v1",
            "leases",
            Some("kube-node-lease"),
            Some("n1"),
        )
        .with_body(&serde_json::json!({"spec": {"holderIdentity": "n1"}}));
        req.options.resource_version = Some("5".into());
        let back = ApiRequest::from_bytes(req.clone().into_bytes());
        assert_eq!(back, req);
    }

    #[test]
    fn garbage_decodes_to_a_malformed_request_not_a_panic() {
        let back = ApiRequest::from_bytes(vec![0xff, 0x00, 0x13]);
        assert_eq!(back.verb, Verb::Malformed);
        let reply = ApiReply::from_bytes(vec![0xff]);
        assert_eq!(reply.code, 500);
    }
}
