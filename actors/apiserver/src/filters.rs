//! List and watch filters: a request's label and field selectors, checked against what the
//! resource supports.

use serde_json::Value;
use shoal_core::selector::{FieldSelector, LabelSelector};
use shoal_core::{ApiError, RequestOptions};

use crate::resources::ResourceInfo;

/// Parsed list filters.
pub struct Filters {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filters {
    /// From a request's options; malformed or unsupported selectors are 400s.
    pub fn parse(info: &ResourceInfo, options: &RequestOptions) -> Result<Filters, ApiError> {
        let labels = LabelSelector::parse(options.label_selector.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelector::parse(options.field_selector.as_deref().unwrap_or_default())
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        if let Some(bad) = fields.fields().find(|f| !info.supports_field(f)) {
            return Err(ApiError::BadRequest(format!(
                "field label not supported: {bad}"
            )));
        }
        Ok(Filters { labels, fields })
    }

    /// Filters that every object passes.
    pub fn everything() -> Filters {
        Filters {
            labels: LabelSelector::default(),
            fields: FieldSelector::default(),
        }
    }

    /// Copies of the objects that pass both selectors.
    pub fn keep(&self, objects: &[std::sync::Arc<crate::core::cache::Item>]) -> Vec<Value> {
        objects
            .iter()
            .filter(|o| self.matches(o))
            .map(|o| Value::clone(o))
            .collect()
    }

    /// Whether an object passes both selectors.
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object)
            && self.fields.matches(|field| {
                // An event's `source` selects on its component, as Kubernetes does.
                let pointer = if field == "source" {
                    "/source/component".to_owned()
                } else {
                    format!("/{}", field.replace('.', "/"))
                };
                match object.pointer(&pointer) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Bool(b)) => b.to_string(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        resources::find("", "v1", "pods").expect("served")
    }

    #[test]
    fn filters_read_fields_and_labels() {
        let opts = RequestOptions {
            label_selector: Some("app in (web)".into()),
            field_selector: Some("spec.nodeName=n1,status.phase!=Failed".into()),
            ..Default::default()
        };
        let f = Filters::parse(pods(), &opts).expect("valid");
        assert!(f.matches(&json!({"metadata": {"labels": {"app": "web"}}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})));
        assert!(
            !f.matches(
                &json!({"metadata": {"labels": {"app": "web"}}, "spec": {"nodeName": "n2"}})
            )
        );
        let bad = RequestOptions {
            field_selector: Some("spec.bogus=1".into()),
            ..Default::default()
        };
        assert!(matches!(
            Filters::parse(pods(), &bad),
            Err(ApiError::BadRequest(_))
        ));
    }
}
