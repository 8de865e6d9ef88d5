//! `SelfSubjectReview` (authentication.k8s.io/v1): who the API takes the caller for, which
//! `kubectl auth whoami` shows. Nothing is stored; the review is answered from the caller's
//! client certificate or bearer token, whatever the request body holds.

use axum::Json;
use axum::extract::Extension;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use shoal_core::ApiError;

use crate::admin::status_response;
use crate::tls::Identity;

/// Every authenticated caller is in this group too, as in Kubernetes.
const AUTHENTICATED: &str = "system:authenticated";

/// The review's route.
pub fn router() -> axum::Router {
    axum::Router::new().route(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        post(review),
    )
}

/// The review of `identity`: `None` for an anonymous caller.
pub fn review_of(identity: &Identity) -> Option<Value> {
    let user = identity.user.as_ref()?;
    let mut groups = identity.groups.clone();
    if !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.to_owned());
    }
    Some(json!({
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": user, "groups": groups}},
    }))
}

async fn review(Extension(identity): Extension<Identity>) -> Response {
    match review_of(&identity) {
        Some(review) => (StatusCode::CREATED, Json(review)).into_response(),
        None => status_response(&ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_names_the_user_and_its_groups_with_authenticated() {
        let identity = Identity {
            user: Some("kubernetes-admin".into()),
            groups: vec!["system:masters".into()],
        };
        let review = review_of(&identity).expect("a review");
        assert_eq!(review["status"]["userInfo"]["username"], "kubernetes-admin");
        assert_eq!(
            review["status"]["userInfo"]["groups"],
            json!(["system:masters", "system:authenticated"])
        );
        let anonymous = Identity {
            user: None,
            groups: Vec::new(),
        };
        assert_eq!(review_of(&anonymous), None);
    }
}
