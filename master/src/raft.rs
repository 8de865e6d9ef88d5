//! The master's side of the replicated store: its Raft id, the shard groups' files, and the
//! bridge between the store's Raft traffic and the transport's QUIC streams.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_store::raft::{
    Journal, LogStore, Member, MemberChange, NodeId, RaftHost, RaftRequest, RaftResponse, Router,
    Wire, WireFuture,
};
use shoal_store::{ShardDb, StoreError};
use shoal_transport::{RaftHandler, RaftLink};

/// Raft traffic over the transport's QUIC streams.
pub struct QuicWire(pub RaftLink);

impl Wire for QuicWire {
    fn call(&self, to: &Member, request: Vec<u8>, timeout: Duration) -> WireFuture {
        let link = self.0.clone();
        let to = to.clone();
        Box::pin(async move { link.call(&to.name, &to.addr, request, timeout).await })
    }
}

/// The transport's handler for Raft requests: the local replicas answer them.
pub fn handler(host: RaftHost) -> RaftHandler {
    Arc::new(move |request: Vec<u8>| {
        let host = host.clone();
        Box::pin(async move { host.handle(&request).await })
    })
}

/// This master's Raft id: made once, when its data directory is new, and kept in
/// `store/member-id`. A master that lost its data comes back with a new id, as a new member.
pub fn member_id(store_dir: &Path) -> Result<NodeId, std::io::Error> {
    let path = store_dir.join("member-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            // Ids are random so that a re-created master never reuses a departed member's.
            let id = rand::random::<u64>() >> 1;
            write_durably(&path, &format!("{id}\n"))?;
            Ok(id)
        }
        Err(err) => Err(err),
    }
}

/// Writes a small file whole or not at all, and durably: written beside it, flushed, renamed
/// into place, and the directory flushed.
pub fn write_durably(path: &Path, text: &str) -> Result<(), std::io::Error> {
    use std::io::Write;
    let partial = path.with_extension("new");
    let mut file = std::fs::File::create(&partial)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// The files of every shard group: its state database, and its log in the master's journal
/// (`journal/`, shared by all the groups). A log still in a file of its own (the earlier
/// layout) is moved into the journal first.
pub async fn open_shards(
    store_dir: &Path,
    shards: u32,
) -> Result<Vec<(ShardDb, LogStore)>, StoreError> {
    let journal = Journal::open(&store_dir.join("journal"))?;
    let mut files = Vec::new();
    for n in 0..shards {
        let legacy = store_dir.join(format!("shard-{n}.raft.redb"));
        shoal_store::raft::legacy::import(&legacy, &journal, n).await?;
        let db = ShardDb::open(&store_dir.join(format!("shard-{n}.redb")), n)?;
        files.push((db, journal.log(n)));
    }
    Ok(files)
}

/// Asks the master at `target` to make this master a voter of every shard group, retrying
/// until each group's leader has done so.
pub async fn become_member(
    router: Router,
    target: SocketAddr,
    shards: u32,
    id: NodeId,
    member: Member,
) {
    let via = Member {
        name: String::new(),
        addr: target.to_string(),
        api: String::new(),
    };
    for group in 0..shards {
        let mut backoff = Duration::from_millis(200);
        loop {
            let request = RaftRequest::Members {
                group,
                change: MemberChange::Add {
                    id,
                    member: member.clone(),
                },
                hops: 2,
            };
            match router.send(&via, &request, Duration::from_secs(90)).await {
                Ok(RaftResponse::Members(Ok(()))) => {
                    tracing::info!(group, "this master replicates shard {group}");
                    break;
                }
                Ok(RaftResponse::Members(Err(why))) | Err(why) => {
                    tracing::warn!(group, reason = %why, "not yet a member of shard {group}; retrying");
                }
                Ok(_) => tracing::warn!(group, "unexpected answer to a membership request"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
    tracing::info!("this master is a member of every shard group");
}

/// A router over the QUIC link.
pub fn router(link: RaftLink) -> Router {
    Router::new(Arc::new(QuicWire(link)))
}
