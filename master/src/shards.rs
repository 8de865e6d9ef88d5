//! The store's shard count, fixed when the cluster is created.
//!
//! A key's shard is a hash of the key modulo the count, so every master must open the same
//! number of shards, and always the same: a master restarted with another count would look
//! for keys in the wrong groups and not see some of its groups at all. The first start of a
//! data directory writes the count to `store/shards`; later starts read it and refuse a
//! `--shards` that disagrees. A master joining a cluster takes the cluster's count.

use std::path::{Path, PathBuf};

/// The file, in the store's directory, that holds the count.
const FILE: &str = "shards";

/// Why the shard count cannot be settled.
#[derive(Debug, thiserror::Error)]
pub enum ShardCountError {
    #[error(
        "this master's store has {stored} shards, fixed when the cluster was created; it cannot start with --shards {asked} (leave the flag out, or give {stored})"
    )]
    Changed { stored: u32, asked: u32 },
    #[error(
        "the cluster being joined has {cluster} shards, fixed when it was created; this master cannot join with --shards {asked} (leave the flag out, or give {cluster})"
    )]
    ClusterHasOther { cluster: u32, asked: u32 },
    #[error(
        "this master's store has {stored} shards, but the cluster it joins has {cluster}: the store belongs to another cluster"
    )]
    StoreOfAnotherCluster { stored: u32, cluster: u32 },
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
}

/// What is known of the count at a start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known {
    /// The count the store's directory holds, if it has one.
    pub stored: Option<u32>,
    /// The count given with `--shards`.
    pub asked: Option<u32>,
    /// The count of the cluster being joined, as its master told it.
    pub cluster: Option<u32>,
}

/// The count to open the store with: the stored one, else the cluster's, else the one asked
/// for, else `default`; any other count given beside the one that holds is refused.
pub fn settle(known: Known, default: u32) -> Result<u32, ShardCountError> {
    let Known {
        stored,
        asked,
        cluster,
    } = known;
    if let Some(stored) = stored {
        if let Some(cluster) = cluster.filter(|&c| c != stored) {
            return Err(ShardCountError::StoreOfAnotherCluster { stored, cluster });
        }
        if let Some(asked) = asked.filter(|&a| a != stored) {
            return Err(ShardCountError::Changed { stored, asked });
        }
        return Ok(stored);
    }
    if let Some(cluster) = cluster {
        if let Some(asked) = asked.filter(|&a| a != cluster) {
            return Err(ShardCountError::ClusterHasOther { cluster, asked });
        }
        return Ok(cluster);
    }
    Ok(asked.unwrap_or(default))
}

/// The count `store_dir` holds: its `shards` file, or, in a store written before there was
/// one, the shard databases it has (`shard-N.redb`, N from 0, each made at every start).
pub fn stored(store_dir: &Path) -> Result<Option<u32>, ShardCountError> {
    let path = store_dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let count = text
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| ShardCountError::File {
                    path: path.clone(),
                    what: format!("{:?} is not a shard count", text.trim()),
                })?;
            Ok(Some(count))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => databases(store_dir),
        Err(e) => Err(ShardCountError::File {
            path,
            what: e.to_string(),
        }),
    }
}

/// One past the highest N of the `shard-N.redb` files in `store_dir`, if there are any.
fn databases(store_dir: &Path) -> Result<Option<u32>, ShardCountError> {
    let entries = match std::fs::read_dir(store_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ShardCountError::File {
                path: store_dir.to_path_buf(),
                what: e.to_string(),
            });
        }
    };
    let mut highest = None;
    for entry in entries {
        let entry = entry.map_err(|e| ShardCountError::File {
            path: store_dir.to_path_buf(),
            what: e.to_string(),
        })?;
        let name = entry.file_name();
        let n = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.strip_suffix(".redb"))
            .and_then(|n| n.parse::<u32>().ok());
        highest = highest.max(n);
    }
    Ok(highest.map(|n| n.saturating_add(1)))
}

/// Records `count` in `store_dir`, durably.
pub fn record(store_dir: &Path, count: u32) -> Result<(), ShardCountError> {
    let path = store_dir.join(FILE);
    crate::raft::write_durably(&path, &format!("{count}\n")).map_err(|e| ShardCountError::File {
        path: path.clone(),
        what: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty directory of this test's own.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-shards-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    fn known(stored: Option<u32>, asked: Option<u32>, cluster: Option<u32>) -> Known {
        Known {
            stored,
            asked,
            cluster,
        }
    }

    #[test]
    fn a_new_cluster_takes_the_flag_or_else_the_default() {
        assert_eq!(settle(known(None, None, None), 3).expect("a count"), 3);
        assert_eq!(settle(known(None, Some(5), None), 3).expect("a count"), 5);
    }

    #[test]
    fn a_store_keeps_its_count_and_refuses_another() {
        assert_eq!(settle(known(Some(8), None, None), 1).expect("a count"), 8);
        assert_eq!(
            settle(known(Some(8), Some(8), None), 1).expect("a count"),
            8
        );
        let err = settle(known(Some(8), Some(4), None), 1).expect_err("a refusal");
        assert!(matches!(
            err,
            ShardCountError::Changed {
                stored: 8,
                asked: 4
            }
        ));
        assert!(err.to_string().contains("--shards 4"), "{err}");
    }

    #[test]
    fn a_joining_master_takes_the_clusters_count() {
        assert_eq!(settle(known(None, None, Some(4)), 1).expect("a count"), 4);
        assert_eq!(
            settle(known(None, Some(4), Some(4)), 1).expect("a count"),
            4
        );
        assert!(matches!(
            settle(known(None, Some(2), Some(4)), 1),
            Err(ShardCountError::ClusterHasOther {
                cluster: 4,
                asked: 2
            })
        ));
        assert!(matches!(
            settle(known(Some(8), None, Some(4)), 1),
            Err(ShardCountError::StoreOfAnotherCluster {
                stored: 8,
                cluster: 4
            })
        ));
    }

    #[test]
    fn the_count_is_recorded_and_read_back() {
        let dir = scratch("recorded");
        assert_eq!(stored(&dir).expect("readable"), None);
        assert_eq!(stored(&dir.join("absent")).expect("readable"), None);
        record(&dir, 3).expect("recorded");
        assert_eq!(stored(&dir).expect("readable"), Some(3));
        record(&dir, 5).expect("recorded");
        assert_eq!(stored(&dir).expect("readable"), Some(5));
        assert!(!dir.join("shards.new").exists());
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn a_store_from_before_the_file_is_counted_by_its_databases() {
        let dir = scratch("databases");
        for n in 0..6 {
            std::fs::write(dir.join(format!("shard-{n}.redb")), b"").expect("written");
        }
        std::fs::write(dir.join("shard-2.raft.redb"), b"").expect("written");
        std::fs::create_dir(dir.join("journal")).expect("written");
        assert_eq!(stored(&dir).expect("readable"), Some(6));
        std::fs::remove_dir_all(&dir).expect("removed");
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_new_count() {
        let dir = scratch("damaged");
        for text in ["", "zero", "0", "-3"] {
            std::fs::write(dir.join(FILE), text).expect("written");
            let err = stored(&dir).expect_err("a refusal");
            assert!(
                matches!(err, ShardCountError::File { .. }),
                "{text:?}: {err}"
            );
        }
        std::fs::remove_dir_all(&dir).expect("removed");
    }
}
