//! Typed 32-byte ids, one type per kind, so a pack id cannot be passed where a
//! blob id is wanted. All print as lowercase hex.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits, for people.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some($name(out))
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_hex(&s).ok_or_else(|| {
                    serde::de::Error::custom(concat!("invalid ", stringify!($name), ": want 64 hex digits"))
                })
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a blob's plaintext (keyed with the repository's id-key).
    BlobId
);
id_type!(
    /// BLAKE3 of a pack object's bytes (ciphertext): anyone can verify a pack.
    PackId
);
id_type!(
    /// Keyed BLAKE3 of an index object's plaintext.
    IndexId
);
id_type!(
    /// Keyed BLAKE3 of a snapshot object's plaintext.
    SnapshotId
);

impl PackId {
    /// The storage key of a pack: two-level fan-out keeps local directories small.
    pub fn key(&self) -> String {
        let h = self.to_hex();
        format!("data/{}/{}", &h[..2], h)
    }
    pub fn from_key(key: &str) -> Option<PackId> {
        let name = key.strip_prefix("data/")?;
        let (dir, h) = name.split_once('/')?;
        let id = PackId::from_hex(h)?;
        (dir.len() == 2 && h.starts_with(dir)).then_some(id)
    }
}

impl IndexId {
    pub fn key(&self) -> String {
        format!("index/{}", self.to_hex())
    }
    pub fn from_key(key: &str) -> Option<IndexId> {
        IndexId::from_hex(key.strip_prefix("index/")?)
    }
}

impl SnapshotId {
    pub fn key(&self) -> String {
        format!("snapshots/{}", self.to_hex())
    }
    pub fn from_key(key: &str) -> Option<SnapshotId> {
        SnapshotId::from_hex(key.strip_prefix("snapshots/")?)
    }
}
