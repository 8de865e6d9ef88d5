//! Field management (`metadata.managedFields`) and server-side apply, as Kubernetes does
//! them. Every write records which fields its manager set: an update takes the fields it
//! changed from whoever had them; an apply owns exactly the fields of its configuration,
//! removes those it applied before and no longer does (unless another manager has them),
//! and refuses with 409 to change a field another manager owns unless forced. Pure: objects
//! and managers in, objects and managers out.

pub mod fieldset;
pub mod walk;

use serde_json::{Map, Value, json};
use shoal_core::ApiError;
use shoal_core::error::FieldCause;

pub use fieldset::FieldSet;
use fieldset::display;
pub use walk::Shape;
use walk::{WalkError, compare, merge, prune, to_set};

/// How long a manager's name may be.
pub const MANAGER_LIMIT: usize = 128;

/// How many update managers an object keeps before the oldest are folded together.
const MOST_UPDATE_MANAGERS: usize = 10;

/// The manager the oldest update managers are folded into.
const ANCIENT: &str = "ancient-changes";

/// The annotation client-side `kubectl apply` keeps its last configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// How a manager wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

/// Who is writing, and through which door.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    /// `status` or `scale` for a write through a subresource.
    pub subresource: Option<&'a str>,
    /// The time to stamp on the entries this write changes.
    pub now: &'a str,
}

impl Entry {
    /// Whether this entry is `writer`'s for `operation` (an applier's entry does not depend
    /// on the version it applied with).
    fn is(&self, writer: &Writer<'_>, operation: Operation) -> bool {
        self.manager == writer.manager
            && self.operation == operation
            && self.subresource.as_deref() == writer.subresource
            && (operation == Operation::Apply || self.api_version == writer.api_version)
    }

    /// The manager as Kubernetes names it in a conflict.
    fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            out.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
            if let Some(time) = &self.time {
                out.push_str(&format!(" at {time}"));
            }
        }
        out
    }
}

/// Every manager of an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Managers {
    pub entries: Vec<Entry>,
}

/// What a write's body says about `managedFields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Given {
    /// Nothing (absent or empty): the stored managers stand.
    Nothing,
    /// `[{}]`: the managers are to be dropped, and this write is not recorded.
    Reset,
    /// Managers to take as they are.
    Set(Managers),
}

/// Why a `managedFields` list does not read.
fn bad(index: usize, why: impl std::fmt::Display) -> String {
    format!("metadata.managedFields[{index}]: {why}")
}

impl Managers {
    /// Reads `metadata.managedFields`.
    pub fn decode(list: Option<&Value>) -> Result<Managers, String> {
        let Some(list) = list.filter(|v| !v.is_null()) else {
            return Ok(Managers::default());
        };
        let Value::Array(items) = list else {
            return Err("metadata.managedFields must be a list".into());
        };
        let mut entries = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let Value::Object(item) = item else {
                return Err(bad(i, "must be an object"));
            };
            let text = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_owned);
            let operation = match text("operation").as_deref() {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                other => {
                    return Err(bad(
                        i,
                        format!("operation {other:?} must be `Apply` or `Update`"),
                    ));
                }
            };
            if let Some(kind) = text("fieldsType").filter(|k| k != "FieldsV1") {
                return Err(bad(i, format!("fieldsType {kind:?} must be `FieldsV1`")));
            }
            let manager = text("manager").unwrap_or_default();
            check_manager(&manager).map_err(|why| bad(i, why))?;
            let fields = match item.get("fieldsV1") {
                Some(v) if !v.is_null() => FieldSet::from_json(v).map_err(|e| bad(i, e))?,
                _ => FieldSet::new(),
            };
            entries.push(Entry {
                manager,
                operation,
                api_version: text("apiVersion").unwrap_or_default(),
                time: text("time"),
                subresource: text("subresource").filter(|s| !s.is_empty()),
                fields,
            });
        }
        Ok(Managers { entries })
    }

    /// What a write's body says, from its `metadata.managedFields` (`None`: absent).
    pub fn given(list: Option<&Value>) -> Result<Given, String> {
        match list {
            None | Some(Value::Null) => Ok(Given::Nothing),
            Some(Value::Array(items)) if items.is_empty() => Ok(Given::Nothing),
            Some(Value::Array(items))
                if items.len() == 1 && items[0].as_object().is_some_and(Map::is_empty) =>
            {
                Ok(Given::Reset)
            }
            list => Managers::decode(list).map(Given::Set),
        }
    }

    /// The `managedFields` list, sorted as Kubernetes sorts it; `None` when no one manages
    /// anything.
    pub fn encode(&self) -> Option<Value> {
        let mut entries: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| !e.fields.is_empty())
            .collect();
        if entries.is_empty() {
            return None;
        }
        entries.sort_by(|a, b| {
            (
                a.operation,
                &a.time,
                &a.manager,
                &a.api_version,
                &a.subresource,
            )
                .cmp(&(
                    b.operation,
                    &b.time,
                    &b.manager,
                    &b.api_version,
                    &b.subresource,
                ))
        });
        let list = entries
            .into_iter()
            .map(|e| {
                let mut entry = json!({
                    "manager": e.manager,
                    "operation": e.operation.as_str(),
                    "apiVersion": e.api_version,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_json(),
                });
                if let Some(time) = &e.time {
                    entry["time"] = json!(time);
                }
                if let Some(sub) = &e.subresource {
                    entry["subresource"] = json!(sub);
                }
                entry
            })
            .collect();
        Some(Value::Array(list))
    }

    fn position(&self, writer: &Writer<'_>, operation: Operation) -> Option<usize> {
        self.entries.iter().position(|e| e.is(writer, operation))
    }

    /// The union of every manager's fields.
    fn owned(&self) -> FieldSet {
        self.entries
            .iter()
            .fold(FieldSet::new(), |all, e| all.union(&e.fields))
    }

    fn drop_empty(&mut self) {
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Folds the oldest update managers into one when there are too many.
    fn cap(&mut self) {
        let updates = |m: &Managers| {
            m.entries
                .iter()
                .filter(|e| e.operation == Operation::Update && e.manager != ANCIENT)
                .count()
        };
        while updates(self) > MOST_UPDATE_MANAGERS {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.operation == Operation::Update && e.manager != ANCIENT)
                .min_by(|(_, a), (_, b)| a.time.cmp(&b.time))
                .map(|(i, _)| i)
            else {
                return;
            };
            let folded = self.entries.remove(oldest);
            match self
                .entries
                .iter_mut()
                .find(|e| e.manager == ANCIENT && e.operation == Operation::Update)
            {
                Some(ancient) => ancient.fields = ancient.fields.union(&folded.fields),
                None => self.entries.push(Entry {
                    manager: ANCIENT.into(),
                    subresource: None,
                    ..folded
                }),
            }
        }
    }
}

/// Why a manager's name is refused: the Status cause's reason, and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadManager {
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for BadManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks a manager's name as Kubernetes does.
pub fn check_manager(manager: &str) -> Result<(), BadManager> {
    if manager.len() > MANAGER_LIMIT {
        return Err(BadManager {
            reason: "FieldValueTooLong",
            message: format!("Too long: may not be more than {MANAGER_LIMIT} bytes"),
        });
    }
    if manager.chars().any(|c| c.is_control()) {
        return Err(BadManager {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {manager:?}: must consist of printable characters"),
        });
    }
    Ok(())
}

/// Which fields of an object its managers may own through a door: the fields the system sets
/// are nobody's, and status belongs to the status subresource alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything but the system's fields (a kind without a status subresource).
    Whole,
    /// The main resource of a kind whose status is written through its subresource.
    NotStatus,
    /// The status subresource.
    StatusOnly,
}

const SYSTEM_FIELDS: &[&str] = &[
    "f:name",
    "f:namespace",
    "f:uid",
    "f:resourceVersion",
    "f:generation",
    "f:creationTimestamp",
    "f:selfLink",
    "f:managedFields",
    "f:deletionTimestamp",
    "f:deletionGracePeriodSeconds",
];

fn scoped(set: &FieldSet, scope: Scope) -> FieldSet {
    let mut subtrees: Vec<&[&str]> = vec![&["f:apiVersion"], &["f:kind"]];
    let system: Vec<[&str; 2]> = SYSTEM_FIELDS.iter().map(|f| ["f:metadata", f]).collect();
    subtrees.extend(system.iter().map(|p| p.as_slice()));
    if scope == Scope::NotStatus {
        subtrees.push(&["f:status"]);
    }
    let out = set.without(&[&["f:metadata"]], &subtrees);
    if scope == Scope::StatusOnly {
        out.only(&["f:status"])
    } else {
        out
    }
}

/// Records an update (create, update, patch) by `writer`: the fields it added or changed
/// become its own and no one else's, and fields it removed are no one's.
pub fn track_update(
    mut managers: Managers,
    old: &Value,
    new: &Value,
    shape: Shape,
    scope: Scope,
    writer: &Writer<'_>,
) -> Managers {
    let diff = compare(old, new, shape);
    let changed = scoped(&diff.added.union(&diff.modified), scope);
    let removed = scoped(&diff.removed, scope);
    if changed.is_empty() && removed.is_empty() {
        return managers;
    }
    for entry in &mut managers.entries {
        entry.fields = entry.fields.difference(&changed).difference(&removed);
    }
    if !changed.is_empty() {
        match managers.position(writer, Operation::Update) {
            Some(i) => {
                let entry = &mut managers.entries[i];
                entry.fields = entry.fields.union(&changed);
                entry.time = Some(writer.now.to_owned());
            }
            None => managers.entries.push(Entry {
                manager: writer.manager.to_owned(),
                operation: Operation::Update,
                api_version: writer.api_version.to_owned(),
                time: Some(writer.now.to_owned()),
                subresource: writer.subresource.map(str::to_owned),
                fields: changed,
            }),
        }
    }
    managers.drop_empty();
    managers.cap();
    managers
}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The configuration does not read as its kind.
    Invalid(WalkError),
    /// Fields other managers own would change: each with the path and its manager.
    Conflicts(Vec<(String, String)>),
}

impl ApplyError {
    /// The API's answer.
    pub fn into_api(self, subject: shoal_core::error::Subject) -> ApiError {
        match self {
            ApplyError::Invalid(e) => ApiError::Invalid(
                subject,
                vec![FieldCause {
                    reason: "FieldValueInvalid",
                    field: e.path.trim_start_matches('.').to_owned(),
                    message: e.message,
                }],
            ),
            ApplyError::Conflicts(conflicts) => conflict_error(&conflicts),
        }
    }
}

/// A 409 naming every conflicting field and its manager, worded as Kubernetes words it.
fn conflict_error(conflicts: &[(String, String)]) -> ApiError {
    let causes = conflicts
        .iter()
        .map(|(path, manager)| FieldCause {
            reason: "FieldManagerConflict",
            field: path.clone(),
            message: format!("conflict with {manager}"),
        })
        .collect();
    let message = match conflicts {
        [(path, manager)] => {
            format!("Apply failed with 1 conflict: conflict with {manager}: {path}")
        }
        _ => {
            let mut managers: Vec<&String> = conflicts.iter().map(|(_, m)| m).collect();
            managers.sort();
            managers.dedup();
            let mut lines = Vec::new();
            for manager in managers {
                lines.push(format!("conflicts with {manager}:"));
                for (path, _) in conflicts.iter().filter(|(_, m)| m == manager) {
                    lines.push(format!("- {path}"));
                }
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    ApiError::ApplyConflict { message, causes }
}

/// What an apply produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub object: Value,
    pub managers: Managers,
}

/// How an apply treats other managers' fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct Claim<'a> {
    /// Take them instead of failing.
    pub force: bool,
    /// Fields whose conflicts are not conflicts (those client-side apply set to the values
    /// it last applied).
    pub allowed: Option<&'a FieldSet>,
}

/// Applies `config` to `live` for `writer`.
pub fn apply(
    live: &Value,
    config: &Value,
    shape: Shape,
    scope: Scope,
    mut managers: Managers,
    writer: &Writer<'_>,
    claim: Claim<'_>,
) -> Result<Applied, ApplyError> {
    let Claim { force, allowed } = claim;
    let set = scoped(&to_set(config, shape).map_err(ApplyError::Invalid)?, scope);
    let mut object = merge(Some(live), config, shape);
    let own = managers.position(writer, Operation::Apply);
    let last = own.map(|i| managers.entries[i].fields.clone());
    match own {
        Some(i) => managers.entries[i].fields = set.clone(),
        None => managers.entries.push(Entry {
            manager: writer.manager.to_owned(),
            operation: Operation::Apply,
            api_version: writer.api_version.to_owned(),
            time: None,
            subresource: writer.subresource.map(str::to_owned),
            fields: set.clone(),
        }),
    }
    if let Some(last) = &last {
        prune(&mut object, last, &managers.owned(), shape);
    }
    let diff = compare(live, &object, shape);
    let changed = scoped(&diff.added.union(&diff.modified), scope);
    let removed = scoped(&diff.removed, scope);
    let mut conflicts = Vec::new();
    for entry in &managers.entries {
        if entry.is(writer, Operation::Apply) {
            continue;
        }
        let mut clash = entry.fields.intersection(&changed);
        if let Some(allowed) = allowed {
            clash = clash.difference(allowed);
        }
        for path in clash.paths() {
            conflicts.push((display(&path), entry.describe()));
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for entry in &mut managers.entries {
        if !entry.is(writer, Operation::Apply) {
            entry.fields = entry.fields.difference(&changed).difference(&removed);
        }
    }
    let unchanged = changed.is_empty() && removed.is_empty() && last.as_ref() == Some(&set);
    if !unchanged && let Some(i) = managers.position(writer, Operation::Apply) {
        managers.entries[i].time = Some(writer.now.to_owned());
        managers.entries[i].api_version = writer.api_version.to_owned();
    }
    managers.drop_empty();
    managers.cap();
    Ok(Applied { object, managers })
}

/// The fields a client-side apply left as it last applied them: the annotation's fields
/// whose live values still match it. A server-side apply by `kubectl` may take them over
/// without a conflict, which is how an object moves from client-side to server-side apply.
pub fn allowed_from_last_applied(live: &Value, shape: Shape) -> Option<FieldSet> {
    let text = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)?;
    let last: Value = serde_json::from_str(text).ok()?;
    let set = to_set(&last, shape).ok()?;
    let diff = compare(live, &merge(Some(live), &last, shape), shape);
    Some(set.difference(&diff.modified).difference(&diff.added))
}

#[cfg(test)]
mod tests;
