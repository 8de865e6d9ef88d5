//! The resourceVersion codec.
//!
//! Each shard counts its own revisions. An object's `resourceVersion` is the decimal revision of
//! its shard at its last write. A list or a watch position spans every shard, so it is a
//! *composite* version: the revisions of all shards, joined by `.` (for one shard it is just the
//! decimal). Clients treat versions as opaque strings, as Kubernetes tells them to.

use std::fmt;

/// A parsed `resourceVersion` query or field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    /// Empty: the most recent state.
    Latest,
    /// `0`: any state; no replay.
    Any,
    /// A single revision, as carried by one object.
    Revision(u64),
    /// A position in every shard.
    Composite(CompositeVersion),
}

/// A position in every shard: `revisions[i]` is shard `i`'s revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompositeVersion {
    pub revisions: Vec<u64>,
}

/// A version string that is neither empty, a number, nor a composite version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource version {0:?}")]
pub struct BadVersion(pub String);

impl Version {
    /// Parses a `resourceVersion` given by a client. `shards` is the cluster's shard count: a
    /// composite version with another count cannot be ours.
    pub fn parse(text: &str, shards: usize) -> Result<Version, BadVersion> {
        let bad = || BadVersion(text.to_owned());
        if text.is_empty() {
            return Ok(Version::Latest);
        }
        if !text.contains('.') {
            let rev: u64 = text.parse().map_err(|_| bad())?;
            return Ok(if rev == 0 {
                Version::Any
            } else {
                Version::Revision(rev)
            });
        }
        let revisions = text
            .split('.')
            .map(|part| part.parse::<u64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        if revisions.len() != shards {
            return Err(bad());
        }
        Ok(Version::Composite(CompositeVersion { revisions }))
    }

    /// The revision this version names for one shard, when it names one.
    pub fn revision_for_shard(&self, shard: usize) -> Option<u64> {
        match self {
            Version::Revision(rev) => Some(*rev),
            Version::Composite(c) => c.revisions.get(shard).copied(),
            Version::Latest | Version::Any => None,
        }
    }
}

impl fmt::Display for CompositeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, rev) in self.revisions.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{rev}")?;
        }
        Ok(())
    }
}

impl CompositeVersion {
    /// Formats the version; with one shard it is a plain number, like etcd's revision.
    pub fn encode(&self) -> String {
        if self.revisions.len() == 1 {
            self.revisions[0].to_string()
        } else {
            self.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_versions_round_trip() {
        let v = CompositeVersion {
            revisions: vec![3, 0, 17, 9],
        };
        assert_eq!(v.encode(), "3.0.17.9");
        assert_eq!(Version::parse(&v.encode(), 4), Ok(Version::Composite(v)));
    }

    #[test]
    fn a_single_shard_version_is_a_plain_number() {
        let v = CompositeVersion {
            revisions: vec![42],
        };
        assert_eq!(v.encode(), "42");
        assert_eq!(Version::parse("42", 1), Ok(Version::Revision(42)));
    }

    #[test]
    fn empty_and_zero_mean_latest_and_any() {
        assert_eq!(Version::parse("", 8), Ok(Version::Latest));
        assert_eq!(Version::parse("0", 8), Ok(Version::Any));
    }

    #[test]
    fn garbage_and_wrong_shard_counts_are_rejected() {
        assert!(Version::parse("abc", 8).is_err());
        assert!(Version::parse("1.2", 8).is_err());
        assert!(Version::parse("1..2", 3).is_err());
        assert!(Version::parse("-1", 1).is_err());
    }

    #[test]
    fn a_shard_revision_is_read_from_either_form() {
        let c = Version::parse("5.6.7", 3).expect("valid");
        assert_eq!(c.revision_for_shard(1), Some(6));
        assert_eq!(Version::Revision(9).revision_for_shard(2), Some(9));
        assert_eq!(Version::Latest.revision_for_shard(0), None);
    }
}
