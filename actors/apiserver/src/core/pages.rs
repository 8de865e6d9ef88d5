//! Lists in pages (`limit` and `continue`), consistent across pages: the first page's request
//! reads the whole list once, and the pages after it are served from that same result, so
//! every page shows the list at one resource version, as Kubernetes guarantees. A list is
//! kept for a while and a bounded number are kept at once; a `continue` token whose list is
//! gone is 410 Gone, and the client starts a new list.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use shoal_core::version::{CompositeVersion, Version};
use shoal_core::{ApiError, RequestOptions};

use super::cache::Item;
use crate::resources::ResourceInfo;

/// How long the rest of a list is kept for its next page (Kubernetes' compaction interval).
const KEPT_FOR: Duration = Duration::from_secs(300);

/// How many lists are kept at once; the oldest goes first.
const MOST_LISTS: usize = 16;

/// How long a list waits for the store to reach a version from the future before it is
/// answered 504 (Kubernetes waits three seconds for its watch cache).
pub const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// What state a list may show, from its `resourceVersion` and `resourceVersionMatch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListAt {
    /// The most recent (no version).
    Latest,
    /// Any state (`0`): the watch cache's.
    Any,
    /// At least as new as this version.
    NotOlderThan(Version),
    /// Exactly this version.
    Exact(Version),
}

fn list_options_invalid(field: &str, reason: &'static str, message: String) -> ApiError {
    ApiError::Invalid(
        shoal_core::error::Subject {
            group: "meta.k8s.io".into(),
            kind: "ListOptions".into(),
            ..Default::default()
        },
        vec![shoal_core::error::FieldCause {
            reason,
            field: field.into(),
            message,
        }],
    )
}

fn forbidden(field: &str, why: &str) -> ApiError {
    list_options_invalid(field, "FieldValueForbidden", format!("Forbidden: {why}"))
}

/// Checks a watch's version options as Kubernetes does: a `resourceVersionMatch` only with
/// `sendInitialEvents`, and then only `NotOlderThan`.
pub fn check_watch_options(options: &RequestOptions) -> Result<(), ApiError> {
    let rv_match = options
        .resource_version_match
        .as_deref()
        .unwrap_or_default();
    if options.send_initial_events.is_some() && rv_match != "NotOlderThan" {
        return Err(forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if rv_match.is_empty() {
        return Ok(());
    }
    if options.send_initial_events.is_none() {
        return Err(forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    if options.continue_token.is_some() {
        return Err(forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden when continue is provided",
        ));
    }
    Ok(())
}

/// Reads a list's version options as Kubernetes validates them: a match needs a version,
/// `Exact` cannot be `0`, and a `continue` token carries its own version.
pub fn list_at(options: &RequestOptions, shards: usize) -> Result<ListAt, ApiError> {
    let rv = options.resource_version.as_deref().unwrap_or_default();
    let rv_match = options
        .resource_version_match
        .as_deref()
        .unwrap_or_default();
    if options.continue_token.is_some() && !rv.is_empty() && rv != "0" {
        return Err(ApiError::BadRequest(
            "specifying resource version is not allowed when using continue".into(),
        ));
    }
    if options.send_initial_events.is_some() {
        return Err(forbidden(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    if !rv_match.is_empty() && options.continue_token.is_some() {
        return Err(forbidden(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden when continue is provided",
        ));
    }
    if !matches!(rv_match, "" | "NotOlderThan" | "Exact") {
        return Err(list_options_invalid(
            "resourceVersionMatch",
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {rv_match:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
            ),
        ));
    }
    if !rv_match.is_empty() && rv.is_empty() {
        return Err(list_options_invalid(
            "resourceVersionMatch",
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
                .into(),
        ));
    }
    if rv_match == "Exact" && rv == "0" {
        return Err(list_options_invalid(
            "resourceVersionMatch",
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
                .into(),
        ));
    }
    let version = Version::parse(rv, shards).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(match (version, rv_match) {
        (Version::Latest, _) => ListAt::Latest,
        (Version::Any, _) => ListAt::Any,
        (v, "Exact") => ListAt::Exact(v),
        (v, _) => ListAt::NotOlderThan(v),
    })
}

/// Whether a list read at `current` (a composite version) may answer a request for `at`:
/// 504 while the version asked for is ahead of the store (no shard has reached a single
/// revision, or some shard is behind a composite one); for `Exact`, 410 for any other
/// version, since earlier states of a list are not kept.
pub fn check_list_version(at: &ListAt, current: &CompositeVersion) -> Result<(), ApiError> {
    let revisions = &current.revisions;
    let (wanted, exact) = match at {
        ListAt::Latest | ListAt::Any => return Ok(()),
        ListAt::NotOlderThan(v) => (v, false),
        ListAt::Exact(v) => (v, true),
    };
    let ahead = match wanted {
        Version::Revision(r) => revisions.iter().all(|c| c < r),
        Version::Composite(c) => c
            .revisions
            .iter()
            .zip(revisions)
            .any(|(want, have)| want > have),
        Version::Latest | Version::Any => false,
    };
    let shown = match wanted {
        Version::Revision(r) => r.to_string(),
        Version::Composite(c) => c.encode(),
        Version::Latest | Version::Any => String::new(),
    };
    let current = current.encode();
    if ahead {
        return Err(ApiError::Timeout(format!(
            "Too large resource version: {shown}, current: {current}"
        )));
    }
    if exact && shown != current {
        return Err(ApiError::Gone(format!(
            "too old resource version: {shown} ({current})"
        )));
    }
    Ok(())
}

/// What a `continue` token carries.
#[derive(Serialize, Deserialize)]
struct Token {
    /// The kept list.
    id: u64,
    /// Where the next page starts.
    at: usize,
    /// The list's resource version.
    rv: String,
}

#[derive(Debug)]
struct Kept {
    id: u64,
    made: Instant,
    /// The request the list answers: the same resource, namespace and selectors.
    query: String,
    items: Arc<Vec<Arc<Item>>>,
    version: String,
}

/// The lists kept for their next pages.
#[derive(Debug, Default)]
pub struct Pages {
    next: u64,
    kept: VecDeque<Kept>,
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Arc<Item>>,
    pub version: String,
    /// The token for the next page, when there is one.
    pub next: Option<String>,
    /// How many items follow this page.
    pub remaining: usize,
}

fn gone() -> ApiError {
    ApiError::Gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into())
}

/// What identifies the list a request asks for.
pub fn query_of(info: &ResourceInfo, namespace: Option<&str>, options: &RequestOptions) -> String {
    format!(
        "{}/{}/{}\n{}\n{}\n{}",
        info.group,
        info.version,
        info.resource,
        namespace.unwrap_or_default(),
        options.label_selector.as_deref().unwrap_or_default(),
        options.field_selector.as_deref().unwrap_or_default()
    )
}

fn decode(token: &str) -> Result<Token, ApiError> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            ApiError::BadRequest("the continue token is not one this server issued".into())
        })
}

fn encode(token: &Token) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(token).unwrap_or_default())
}

impl Pages {
    fn expire(&mut self, now: Instant) {
        self.kept.retain(|k| now.duration_since(k.made) < KEPT_FOR);
    }

    /// The page a `continue` token names, for the list `query`.
    pub fn next_page(
        &mut self,
        token: &str,
        query: &str,
        limit: Option<usize>,
        now: Instant,
    ) -> Result<Page, ApiError> {
        let token = decode(token)?;
        self.expire(now);
        let Some(kept) = self.kept.iter().find(|k| k.id == token.id) else {
            return Err(gone());
        };
        if kept.query != query || kept.version != token.rv {
            return Err(ApiError::BadRequest(
                "the continue token belongs to another list: repeat the first request's selectors"
                    .into(),
            ));
        }
        let (items, version, id) = (Arc::clone(&kept.items), kept.version.clone(), kept.id);
        let page = Self::cut(&items, token.at, limit, id, &version);
        if page.next.is_none() {
            self.kept.retain(|k| k.id != id);
        }
        Ok(page)
    }

    /// The first page of `items`, keeping the rest when there is more than `limit`.
    pub fn first_page(
        &mut self,
        items: Vec<Arc<Item>>,
        version: String,
        query: String,
        limit: Option<usize>,
        now: Instant,
    ) -> Page {
        match limit {
            Some(limit) if items.len() > limit => {
                self.expire(now);
                if self.kept.len() >= MOST_LISTS {
                    self.kept.pop_front();
                }
                self.next += 1;
                let id = self.next;
                let items = Arc::new(items);
                let page = Self::cut(&items, 0, Some(limit), id, &version);
                self.kept.push_back(Kept {
                    id,
                    made: now,
                    query,
                    items,
                    version,
                });
                page
            }
            _ => Page {
                items,
                version,
                next: None,
                remaining: 0,
            },
        }
    }

    fn cut(items: &[Arc<Item>], at: usize, limit: Option<usize>, id: u64, version: &str) -> Page {
        let start = at.min(items.len());
        let end = limit.map_or(items.len(), |l| {
            start.saturating_add(l.max(1)).min(items.len())
        });
        let next = (end < items.len()).then(|| {
            encode(&Token {
                id,
                at: end,
                rv: version.to_owned(),
            })
        });
        Page {
            items: items[start..end].to_vec(),
            version: version.to_owned(),
            next,
            remaining: items.len() - end,
        }
    }
}

/// The lists kept by one API server, shared by its request handlers.
pub type SharedPages = Arc<Mutex<Pages>>;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn items(n: usize) -> Vec<Arc<Item>> {
        (0..n)
            .map(|i| Arc::new(Item::new(json!({"metadata": {"name": format!("i{i}")}}))))
            .collect()
    }

    fn names(page: &Page) -> Vec<String> {
        page.items
            .iter()
            .map(|i| {
                i["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn pages_walk_one_list_and_end_without_a_token() {
        let mut pages = Pages::default();
        let now = Instant::now();
        let first = pages.first_page(items(5), "7".into(), "q".into(), Some(2), now);
        assert_eq!(names(&first), ["i0", "i1"]);
        assert_eq!(first.remaining, 3);
        let token = first.next.expect("more");
        let second = pages.next_page(&token, "q", Some(2), now).expect("kept");
        assert_eq!(names(&second), ["i2", "i3"]);
        assert_eq!(second.version, "7");
        let last = pages
            .next_page(&second.next.expect("more"), "q", Some(2), now)
            .expect("kept");
        assert_eq!(names(&last), ["i4"]);
        assert!(last.next.is_none());
        assert_eq!(last.remaining, 0);
        // The list is let go after its last page.
        assert_eq!(
            pages
                .next_page(&token, "q", Some(2), now)
                .map_err(|e| e.code())
                .err(),
            Some(410)
        );
    }

    #[test]
    fn a_list_that_fits_is_not_kept_and_old_tokens_are_gone() {
        let mut pages = Pages::default();
        let now = Instant::now();
        let whole = pages.first_page(items(2), "1".into(), "q".into(), Some(2), now);
        assert!(whole.next.is_none());
        assert!(pages.kept.is_empty());
        let first = pages.first_page(items(3), "1".into(), "q".into(), Some(1), now);
        let token = first.next.expect("more");
        assert_eq!(
            pages
                .next_page(&token, "other", Some(1), now)
                .map_err(|e| e.code())
                .err(),
            Some(400)
        );
        let later = now + KEPT_FOR + Duration::from_secs(1);
        assert_eq!(
            pages
                .next_page(&token, "q", Some(1), later)
                .map_err(|e| e.code())
                .err(),
            Some(410)
        );
        assert_eq!(
            pages
                .next_page("garbage!", "q", Some(1), now)
                .map_err(|e| e.code())
                .err(),
            Some(400)
        );
    }

    #[test]
    fn at_most_so_many_lists_are_kept() {
        let mut pages = Pages::default();
        let now = Instant::now();
        let first = pages
            .first_page(items(3), "1".into(), "q".into(), Some(1), now)
            .next
            .expect("more");
        for _ in 0..MOST_LISTS {
            pages.first_page(items(3), "1".into(), "q".into(), Some(1), now);
        }
        assert_eq!(pages.kept.len(), MOST_LISTS);
        assert_eq!(
            pages
                .next_page(&first, "q", Some(1), now)
                .map_err(|e| e.code())
                .err(),
            Some(410)
        );
    }

    fn at(rv: &str, rv_match: &str) -> Result<ListAt, ApiError> {
        let options = RequestOptions {
            resource_version: (!rv.is_empty()).then(|| rv.to_owned()),
            resource_version_match: (!rv_match.is_empty()).then(|| rv_match.to_owned()),
            ..Default::default()
        };
        list_at(&options, 3)
    }

    #[test]
    fn list_versions_are_read_as_kubernetes_validates_them() {
        assert_eq!(at("", ""), Ok(ListAt::Latest));
        assert_eq!(at("0", ""), Ok(ListAt::Any));
        assert_eq!(at("0", "NotOlderThan"), Ok(ListAt::Any));
        assert_eq!(at("5", ""), Ok(ListAt::NotOlderThan(Version::Revision(5))));
        assert!(matches!(
            at("1.2.3", "Exact"),
            Ok(ListAt::Exact(Version::Composite(_)))
        ));
        let code = |r: Result<ListAt, ApiError>| r.err().map(|e| e.code());
        assert_eq!(code(at("", "Exact")), Some(422));
        assert_eq!(code(at("0", "Exact")), Some(422));
        assert_eq!(code(at("5", "Newest")), Some(422));
        assert_eq!(code(at("1.2", "")), Some(400));
        let continued = RequestOptions {
            resource_version: Some("5".into()),
            continue_token: Some("t".into()),
            ..Default::default()
        };
        assert_eq!(list_at(&continued, 3).err().map(|e| e.code()), Some(400));
        let watch_list = RequestOptions {
            send_initial_events: Some(true),
            ..Default::default()
        };
        assert_eq!(list_at(&watch_list, 3).err().map(|e| e.code()), Some(422));
    }

    #[test]
    fn watch_options_are_checked_as_kubernetes_checks_them() {
        let options = |send: Option<bool>, rv_match: &str, token: bool| RequestOptions {
            send_initial_events: send,
            resource_version_match: (!rv_match.is_empty()).then(|| rv_match.to_owned()),
            continue_token: token.then(|| "t".to_owned()),
            ..Default::default()
        };
        let field = |o: RequestOptions| match check_watch_options(&o) {
            Err(ApiError::Invalid(_, causes)) => Some(causes[0].message.clone()),
            _ => None,
        };
        assert_eq!(field(options(None, "", false)), None);
        assert_eq!(field(options(Some(true), "NotOlderThan", false)), None);
        assert_eq!(field(options(Some(false), "NotOlderThan", false)), None);
        assert!(field(options(Some(true), "", false)).is_some_and(|m| m.contains("requires")));
        assert!(field(options(Some(true), "Exact", false)).is_some_and(|m| m.contains("requires")));
        assert!(field(options(None, "NotOlderThan", false)).is_some_and(|m| m.contains("unless")));
        assert!(
            field(options(Some(true), "NotOlderThan", true))
                .is_some_and(|m| m.contains("continue"))
        );
    }

    #[test]
    fn a_list_from_the_future_is_504_and_an_old_exact_one_410() {
        let composite = |text: &str| Version::parse(text, 3).expect("a version");
        let current = CompositeVersion {
            revisions: vec![4, 7, 2],
        };
        let check = |at: ListAt| check_list_version(&at, &current).err().map(|e| e.code());
        assert_eq!(check(ListAt::Latest), None);
        assert_eq!(check(ListAt::NotOlderThan(composite("4.7.2"))), None);
        assert_eq!(check(ListAt::NotOlderThan(composite("1.1.1"))), None);
        assert_eq!(check(ListAt::NotOlderThan(composite("4.8.2"))), Some(504));
        assert_eq!(check(ListAt::NotOlderThan(Version::Revision(7))), None);
        assert_eq!(check(ListAt::NotOlderThan(Version::Revision(8))), Some(504));
        assert_eq!(check(ListAt::Exact(composite("4.7.2"))), None);
        assert_eq!(check(ListAt::Exact(composite("4.6.2"))), Some(410));
        assert_eq!(check(ListAt::Exact(composite("5.7.2"))), Some(504));
    }
}
