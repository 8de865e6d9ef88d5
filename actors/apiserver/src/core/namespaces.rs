//! Namespaces' lifecycle in the core: the system namespaces made at start, and what a
//! namespace's deletion removes.

use super::*;

impl ApiCore {
    /// Deletes every namespaced object in `namespace`.
    pub(super) async fn empty_namespace(
        &self,
        namespace: &str,
        ctx: &WriteCtx,
    ) -> Result<(), ApiError> {
        // A view's objects are another resource's, removed with it.
        for info in resources::RESOURCES
            .iter()
            .filter(|r| r.namespaced && r.view.is_none())
        {
            let prefix = ObjectKey::prefix(info.group, info.resource, Some(namespace));
            let (items, _) = self
                .store
                .list(&prefix)
                .await
                .map_err(|e| map_store_error(info, "", e))?;
            for (key, stored) in items {
                match self
                    .commit(
                        WriteOp::Delete {
                            key,
                            expected: None,
                        },
                        ctx,
                    )
                    .await
                {
                    Ok(_) if info.kind == "Service" => {
                        if let Ok(service) = serde_json::from_slice::<Value>(&stored.value) {
                            self.release_service(&service, ctx).await;
                        }
                    }
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(err) => return Err(map_store_error(info, "", err)),
                }
            }
        }
        Ok(())
    }

    /// Creates the namespaces every cluster has, keeping those that exist.
    pub async fn ensure_system_namespaces(&self) -> Result<(), ApiError> {
        let info = resources::find("", "v1", "namespaces").ok_or(ApiError::UnknownResource)?;
        for ns in SYSTEM_NAMESPACES {
            let body = serde_json::to_vec(&json!({"metadata": {"name": ns}})).unwrap_or_default();
            match self.create(info, None, &body, &WriteCtx::default()).await {
                Ok(_) | Err(ApiError::AlreadyExists(_)) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}
