//! API errors and their Kubernetes `Status` form (kubectl-contract §10).

use serde_json::{Value, json};

/// One field that failed validation, as a `Status` cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldCause {
    /// `FieldValueInvalid`, `FieldValueRequired`, …
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

/// What names the object an error is about: resource (plural) and group for most errors,
/// the kind for `Invalid`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    pub group: String,
    pub resource: String,
    pub kind: String,
    pub name: String,
}

impl Subject {
    /// `pods` or `deployments.apps`, as Kubernetes names a resource in messages.
    fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

/// Every way an API request can fail. Each maps to one `Status` code and reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{} \"{}\" not found", .0.qualified_resource(), .0.name)]
    NotFound(Subject),
    #[error("the server could not find the requested resource")]
    UnknownResource,
    #[error("{} \"{}\" already exists", .0.qualified_resource(), .0.name)]
    AlreadyExists(Subject),
    #[error("Operation cannot be fulfilled on {} \"{}\": {}", .0.qualified_resource(), .0.name, .1)]
    Conflict(Subject, String),
    #[error("{} \"{}\" is invalid: {}", .0.qualified_kind(), .0.name, causes_text(.1))]
    Invalid(Subject, Vec<FieldCause>),
    /// Server-side apply would change fields other managers own: each cause names a field
    /// and its manager.
    #[error("{message}")]
    ApplyConflict {
        message: String,
        causes: Vec<FieldCause>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{verb} is not supported on resources of kind {resource:?}")]
    MethodNotAllowed { verb: String, resource: String },
    #[error("{0}")]
    Gone(String),
    #[error("Timeout: {0}")]
    Timeout(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml"
    )]
    UnsupportedMediaType,
    #[error("the server is currently unable to handle the request ({0})")]
    Unavailable(String),
    /// Refused for now (an eviction a disruption budget forbids): each cause says why.
    #[error("{message}")]
    TooManyRequests {
        message: String,
        causes: Vec<FieldCause>,
    },
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

/// A cause as a `Status` carries it; one about no field in particular has no `field`.
fn cause_json(cause: &FieldCause) -> Value {
    let mut out = json!({"reason": cause.reason, "message": cause.message});
    if !cause.field.is_empty() {
        out["field"] = json!(cause.field);
    }
    out
}

fn causes_text(causes: &[FieldCause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound(_) | ApiError::UnknownResource => 404,
            ApiError::AlreadyExists(_) | ApiError::Conflict(..) => 409,
            ApiError::Invalid(..) => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Gone(_) => 410,
            ApiError::ApplyConflict { .. } => 409,
            ApiError::Timeout(_) => 504,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::NotAcceptable(_) => 406,
            ApiError::UnsupportedMediaType => 415,
            ApiError::Unavailable(_) => 503,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Internal(_) => 500,
        }
    }

    /// The machine-readable `reason` of the Status.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) | ApiError::UnknownResource => "NotFound",
            ApiError::AlreadyExists(_) => "AlreadyExists",
            ApiError::Conflict(..) | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid(..) => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed { .. } => "MethodNotAllowed",
            ApiError::Gone(_) => "Expired",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::UnsupportedMediaType => "UnsupportedMediaType",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// A stale-`resourceVersion` conflict on `subject`.
    pub fn stale(subject: Subject) -> ApiError {
        ApiError::Conflict(
            subject,
            "the object has been modified; please apply your changes to the latest version and try again".into(),
        )
    }

    /// One invalid field.
    pub fn invalid_field(subject: Subject, field: &str, value: &str, message: &str) -> ApiError {
        ApiError::Invalid(
            subject,
            vec![FieldCause {
                reason: "FieldValueInvalid",
                field: field.to_owned(),
                message: format!("Invalid value: {value:?}: {message}"),
            }],
        )
    }

    /// The `meta/v1 Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound(s) | ApiError::AlreadyExists(s) | ApiError::Conflict(s, _) => {
                Some(json!({"name": s.name, "group": s.group, "kind": s.resource}))
            }
            ApiError::Invalid(s, causes) => Some(json!({
                "name": s.name,
                "group": s.group,
                "kind": s.kind,
                "causes": causes.iter().map(cause_json).collect::<Vec<_>>(),
            })),
            ApiError::ApplyConflict { causes, .. } | ApiError::TooManyRequests { causes, .. } => {
                Some(json!({"causes": causes.iter().map(cause_json).collect::<Vec<_>>()}))
            }
            ApiError::MethodNotAllowed { resource, .. } => Some(json!({"kind": resource})),
            ApiError::Timeout(_) => Some(
                json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]}),
            ),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Subject {
        Subject {
            group: String::new(),
            resource: "pods".into(),
            kind: "Pod".into(),
            name: name.into(),
        }
    }

    #[test]
    fn not_found_names_the_resource_and_group() {
        let s = Subject {
            group: "apps".into(),
            resource: "deployments".into(),
            kind: "Deployment".into(),
            name: "x".into(),
        };
        let e = ApiError::NotFound(s);
        assert_eq!(e.to_string(), "deployments.apps \"x\" not found");
        let st = e.to_status();
        assert_eq!(st["code"], 404);
        assert_eq!(st["details"]["kind"], "deployments");
    }

    #[test]
    fn invalid_lists_every_field_cause() {
        let e = ApiError::invalid_field(
            pod("Bad_Name"),
            "metadata.name",
            "Bad_Name",
            "a lowercase RFC 1123 label",
        );
        let st = e.to_status();
        assert_eq!(st["code"], 422);
        assert_eq!(st["reason"], "Invalid");
        assert_eq!(st["details"]["kind"], "Pod");
        assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
        assert!(
            st["message"]
                .as_str()
                .unwrap_or_default()
                .starts_with("Pod \"Bad_Name\" is invalid: metadata.name")
        );
    }

    #[test]
    fn conflicts_use_the_kubernetes_wording() {
        let st = ApiError::stale(pod("p")).to_status();
        assert_eq!(st["code"], 409);
        assert_eq!(st["reason"], "Conflict");
        assert!(
            st["message"]
                .as_str()
                .unwrap_or_default()
                .contains("the object has been modified")
        );
    }
}
