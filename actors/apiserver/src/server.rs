//! The ApiServer actor: serves HTTPS on its port and answers [`ApiServerMsg::Call`] from other
//! actors, local or remote. Killing it closes the listener and every connection; its
//! supervisor starts a fresh one that binds the same port. It holds no state of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use shoal_core::{APISERVER_GROUP, ApiServerMsg};
use shoal_store::Store;
use tokio::task::JoinHandle;

use crate::core::ApiCore;
use crate::http::{HttpApi, router};
use crate::tls::{Tokens, bind, serve};

/// What an ApiServer needs to start.
#[derive(Clone)]
pub struct ApiServerArgs {
    pub listen: SocketAddr,
    /// `host:port` clients reach this server at.
    pub advertise: String,
    pub tls: Arc<rustls::ServerConfig>,
    pub store: Store,
    /// Bearer tokens accepted besides client certificates.
    pub tokens: Arc<Tokens>,
    /// This master's shard replicas, for the control-plane membership routes.
    pub control_plane: Option<shoal_store::raft::RaftHost>,
    /// Where Services get their cluster IPs and node ports.
    pub ranges: crate::addresses::ServiceRanges,
}

/// Aborts the HTTP server when the actor's state is dropped, however the actor ended.
pub struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The actor's state.
pub struct ApiServerState {
    core: ApiCore,
    _server: ServerTask,
}

/// The ApiServer actor.
#[derive(Clone)]
pub struct ApiServer;

impl Actor for ApiServer {
    type Msg = ApiServerMsg;
    type State = ApiServerState;
    type Arguments = ApiServerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ApiServerMsg>,
        args: ApiServerArgs,
    ) -> Result<ApiServerState, ActorProcessingErr> {
        let core = ApiCore::with_ranges(args.store.clone(), args.ranges.clone());
        core.ensure_system_namespaces()
            .await
            .map_err(|e| format!("creating system namespaces: {e}"))?;
        let listener = bind(args.listen).await?;
        let api = Arc::new(HttpApi {
            core: core.clone(),
            server_address: args.advertise.clone(),
        });
        let mut routes = router(api);
        if let Some(host) = &args.control_plane {
            routes = routes.merge(crate::admin::control_plane_router(host.clone()));
        }
        let server = tokio::spawn(serve(
            listener,
            args.tls.clone(),
            routes,
            args.tokens.clone(),
        ));
        ractor::pg::join(APISERVER_GROUP.to_owned(), vec![myself.get_cell()]);
        tracing::info!(listen = %args.listen, "API server serving");
        Ok(ApiServerState {
            core,
            _server: ServerTask(server),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ApiServerMsg>,
        msg: ApiServerMsg,
        state: &mut ApiServerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ApiServerMsg::Call(request, reply) => {
                let core = state.core.clone();
                tokio::spawn(async move {
                    let answer = core.handle(request).await;
                    let _ = reply.send(answer);
                });
            }
        }
        Ok(())
    }
}
