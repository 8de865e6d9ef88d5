//! Byte strings in the store's encoded forms (Raft entries, journal records, snapshots,
//! replies) written as one length and one run of bytes. In bincode this is the very form a
//! `Vec<u8>` takes as a sequence, so what was written before reads the same; it is only
//! made without going through each byte.

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A shared value.
pub mod shared {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Arc<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(value.as_slice(), s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<u8>>, D::Error> {
        serde_bytes::deserialize::<Vec<u8>, D>(d).map(Arc::new)
    }
}

/// Values with a key each, in order.
pub mod keyed {
    use super::*;

    pub fn serialize<K: Serialize, S: Serializer>(
        pairs: &[(K, Vec<u8>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(pairs.iter().map(|(k, v)| (k, serde_bytes::Bytes::new(v))))
    }

    pub fn deserialize<'de, K: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(K, Vec<u8>)>, D::Error> {
        let pairs: Vec<(K, serde_bytes::ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(pairs.into_iter().map(|(k, v)| (k, v.into_vec())).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("encodes")
    }

    fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> T {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .expect("decodes")
            .0
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Before {
        value: Arc<Vec<u8>>,
        pairs: Vec<(String, Vec<u8>)>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct After {
        #[serde(with = "shared")]
        value: Arc<Vec<u8>>,
        #[serde(with = "keyed")]
        pairs: Vec<(String, Vec<u8>)>,
    }

    #[test]
    fn byte_strings_are_encoded_as_byte_sequences_were() {
        let long: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let before = Before {
            value: Arc::new(long.clone()),
            pairs: vec![("a".into(), long.clone()), ("b".into(), Vec::new())],
        };
        let after = After {
            value: before.value.clone(),
            pairs: before.pairs.clone(),
        };
        let bytes = encode(&before);
        assert_eq!(encode(&after), bytes);
        // What was written before reads back, and the other way round.
        assert_eq!(decode::<After>(&bytes), after);
        assert_eq!(decode::<Before>(&encode(&after)), before);
    }
}
