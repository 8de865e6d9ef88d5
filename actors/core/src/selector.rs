//! Label and field selectors (kubectl-contract §7): parsing and matching, and the
//! `metav1.LabelSelector` objects workloads and budgets carry.

use std::collections::BTreeMap;

use serde_json::Value;

/// A selector that could not be parsed; the message is shown to the client as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(pub String);

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<LabelRequirement>,
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    name_ok && prefix_ok
}

fn valid_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn parse_set(key: &str, rest: &str, whole: &str) -> Result<Vec<String>, SelectorError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            SelectorError(format!(
                "{whole}: expected a parenthesised set of values for {key}"
            ))
        })?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    if let Some(bad) = values.iter().find(|v| !valid_label_value(v)) {
        return Err(SelectorError(format!(
            "{whole}: invalid label value {bad:?}"
        )));
    }
    Ok(values)
}

fn parse_label_requirement(part: &str) -> Result<LabelRequirement, SelectorError> {
    let p = part.trim();
    let err = |why: &str| SelectorError(format!("{p}: {why}"));
    let check_key = |k: &str| {
        if valid_label_key(k) {
            Ok(k.to_owned())
        } else {
            Err(err("invalid label key"))
        }
    };
    if let Some(key) = p.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(check_key(key.trim())?));
    }
    for (op, ctor) in [("!=", 1), ("==", 0), ("=", 0)] {
        if let Some((k, v)) = p.split_once(op) {
            let key = check_key(k.trim())?;
            let value = v.trim();
            if !valid_label_value(value) {
                return Err(err("invalid label value"));
            }
            return Ok(if ctor == 1 {
                LabelRequirement::NotEquals(key, value.to_owned())
            } else {
                LabelRequirement::Equals(key, value.to_owned())
            });
        }
    }
    let mut words = p.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    match words.next().map(str::trim_start) {
        None => Ok(LabelRequirement::Exists(check_key(key)?)),
        Some(rest) => {
            if let Some(set) = rest.strip_prefix("notin") {
                Ok(LabelRequirement::NotIn(
                    check_key(key)?,
                    parse_set(key, set, p)?,
                ))
            } else if let Some(set) = rest.strip_prefix("in") {
                Ok(LabelRequirement::In(
                    check_key(key)?,
                    parse_set(key, set, p)?,
                ))
            } else {
                Err(err("expected one of =, ==, !=, in, notin"))
            }
        }
    }
}

impl LabelSelector {
    /// Parses `k=v,k!=v,k in (a,b),k notin (a),k,!k`. An empty string selects everything.
    pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
        if text.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        let requirements = split_top_level(text)
            .into_iter()
            .map(parse_label_requirement)
            .collect::<Result<_, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|k| labels.get(k).map(String::as_str))
    }

    /// Whether `object` is selected, read from its `metadata.labels` in place (a list checks
    /// every object it holds: nothing is copied).
    pub fn matches_object(&self, object: &Value) -> bool {
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object);
        self.matches_with(|k| labels?.get(k)?.as_str())
    }

    /// Whether the labels `label` gives (`None`: not set) are selected.
    fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelRequirement::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            LabelRequirement::Exists(k) => label(k).is_some(),
            LabelRequirement::DoesNotExist(k) => label(k).is_none(),
        })
    }
}

/// One requirement of a field selector: `field=value` or `field!=value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub negated: bool,
}

/// A field selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `a=b,c==d,e!=f`. Which fields exist is the caller's business (see [`Self::fields`]).
    pub fn parse(text: &str) -> Result<FieldSelector, SelectorError> {
        if text.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut requirements = Vec::new();
        for part in text.split(',') {
            let p = part.trim();
            let (field, value, negated) = if let Some((f, v)) = p.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = p.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = p.split_once('=') {
                (f, v, false)
            } else {
                return Err(SelectorError(format!(
                    "{p}: expected field=value or field!=value"
                )));
            };
            if field.trim().is_empty() {
                return Err(SelectorError(format!("{p}: empty field name")));
            }
            requirements.push(FieldRequirement {
                field: field.trim().to_owned(),
                value: value.trim().to_owned(),
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The fields this selector names.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.requirements.iter().map(|r| r.field.as_str())
    }

    /// Whether an object is selected; `value_of` gives a field's value (missing fields are "").
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.requirements
            .iter()
            .all(|r| (value_of(&r.field) == r.value) != r.negated)
    }
}

/// The object's labels.
pub fn labels_of(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `labels` satisfy a `metav1.LabelSelector` object: every `matchLabels` pair and
/// every `matchExpressions` requirement (an empty selector matches everything; an unknown
/// operator nothing).
pub fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let expressions_ok = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let mut values = e
                .get("values")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str);
            match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => labels.get(key).is_some_and(|v| values.any(|x| x == v)),
                "NotIn" => labels.get(key).is_none_or(|v| !values.any(|x| x == v)),
                "Exists" => labels.contains_key(key),
                "DoesNotExist" => !labels.contains_key(key),
                _ => false,
            }
        });
    labels_ok && expressions_ok
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn equality_and_set_based_requirements_combine() {
        let s = LabelSelector::parse("app=web,tier in (front, back),!legacy,env notin (prod),team")
            .expect("valid");
        assert_eq!(s.requirements.len(), 5);
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front"), ("team", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("team", "a"),
            ("legacy", "")
        ])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db"), ("team", "a")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("team", "a"),
            ("env", "prod")
        ])));
    }

    #[test]
    fn an_object_is_matched_on_its_labels_in_place() {
        let s = LabelSelector::parse("app=web,tier in (front),!legacy").expect("valid");
        let object = |labels: Value| json!({"metadata": {"name": "o", "labels": labels}});
        assert!(s.matches_object(&object(json!({"app": "web", "tier": "front"}))));
        assert!(!s.matches_object(&object(json!({"app": "web", "tier": "back"}))));
        assert!(!s.matches_object(&object(
            json!({"app": "web", "tier": "front", "legacy": ""})
        )));
        // No labels, or labels that are not strings, are labels not set.
        assert!(!s.matches_object(&json!({"metadata": {"name": "o"}})));
        assert!(!s.matches_object(&object(json!({"app": 1, "tier": "front"}))));
        assert!(
            LabelSelector::parse("!app")
                .expect("valid")
                .matches_object(&json!({}))
        );
        // Everything passes an empty selector.
        assert!(LabelSelector::default().matches_object(&json!(null)));
    }

    #[test]
    fn double_equals_and_not_equals() {
        let s = LabelSelector::parse("a==1,b!=2").expect("valid");
        assert!(s.matches(&labels(&[("a", "1")])));
        assert!(!s.matches(&labels(&[("a", "1"), ("b", "2")])));
    }

    #[test]
    fn prefixed_keys_are_accepted() {
        let s = LabelSelector::parse("kubernetes.io/hostname=n1").expect("valid");
        assert!(s.matches(&labels(&[("kubernetes.io/hostname", "n1")])));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("=x").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn field_selectors_match_like_describe_node_needs() {
        let s =
            FieldSelector::parse("spec.nodeName=n,status.phase!=Succeeded,status.phase!=Failed")
                .expect("valid");
        let running = |f: &str| match f {
            "spec.nodeName" => "n".to_owned(),
            "status.phase" => "Running".to_owned(),
            _ => String::new(),
        };
        assert!(s.matches(running));
        assert!(!s.matches(|f: &str| if f == "status.phase" {
            "Failed".into()
        } else {
            "n".into()
        }));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert!(label_selector_matches(&json!({}), &labels));
        assert!(label_selector_matches(
            &json!({"matchLabels": {"app": "web"}}),
            &labels
        ));
        assert!(!label_selector_matches(
            &json!({"matchLabels": {"app": "db"}}),
            &labels
        ));
        let expr = |op: &str, values: Value| json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]});
        assert!(label_selector_matches(
            &expr("In", json!(["front", "x"])),
            &labels
        ));
        assert!(!label_selector_matches(
            &expr("NotIn", json!(["front"])),
            &labels
        ));
        assert!(label_selector_matches(
            &expr("Exists", Value::Null),
            &labels
        ));
        assert!(!label_selector_matches(
            &expr("DoesNotExist", Value::Null),
            &labels
        ));
        assert!(!label_selector_matches(&expr("Near", Value::Null), &labels));
    }
}
