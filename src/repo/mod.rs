//! The repository format (docs/FORMAT.md): what objects exist, how they are
//! named, sealed and verified. No CLI, no catalog here.

pub mod audit;
pub mod caps;
pub mod chunker;
pub mod damage;
pub mod ids;
pub mod index;
pub mod keys;
pub mod limits;
pub mod lock;
mod malformed;
pub mod pack;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod tree;

use crate::storage::StorageError;
use bytes::Bytes;
use chunker::ChunkerParams;
use ids::{IndexId, PackId, SnapshotId};
use index::IndexFile;
use jiff::Timestamp;
use keys::{AgentKey, Audience, Keys, OperatorIdentity};
pub use malformed::Malformed;
use pack::PackEntry;
use serde::{Deserialize, Serialize};
use snapshot::Snapshot;
use store::Store;

/// The newest format this build writes; it reads every version up to it.
/// 2 adds the snapshot's tree index; 3 adds Object Lock (`object_lock` in
/// the config): a build that does not know it would write objects without
/// their lock, so it must refuse the repository. A repository keeps the
/// version it was made with: snapshots of a version 1 repository are
/// written without the index, so older coffer builds keep reading it, and
/// a repository without Object Lock is made as version 2.
pub const FORMAT_VERSION: u32 = 3;
/// The version of a new repository without Object Lock.
const UNLOCKED_VERSION: u32 = 2;
pub const CONFIG_KEY: &str = "config";
pub const KEYRING_KEY: &str = "keyring";
/// A second copy of the keyring: one damaged object must not lock the
/// operator out (docs/FORMAT.md, "Objects").
pub const KEYRING_COPY_KEY: &str = "keyring.copy";

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("no coffer repository at {location}; create one with `coffer init`")]
    NotARepository { location: String },
    #[error(
        "{location} does not exist (no such bucket or folder): check its name, or create a repository there with `coffer init` (`--create-bucket` for a bucket)"
    )]
    NoLocation { location: String },
    #[error("a repository already exists at {location}")]
    AlreadyExists { location: String },
    #[error(
        "repository at {location} has format version {version}; this coffer reads up to {FORMAT_VERSION}: upgrade coffer"
    )]
    UnsupportedVersion { location: String, version: u32 },
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error(
        "the agent key belongs to repository {key_repo}, but {location} is repository {repo}; use that repository's agent key"
    )]
    KeyMismatch {
        location: String,
        key_repo: String,
        repo: String,
    },
    #[error(
        "{what} can only be read with the operator identity; pass --identity FILE (or COFFER_IDENTITY)"
    )]
    NeedIdentity { what: String },
    #[error(
        "cannot decrypt {what}: the identity is not a recipient of this repository; use the identity whose public key was given to `coffer init`"
    )]
    WrongKey { what: String },
    #[error("{object} is corrupt: {reason}")]
    Corrupt { object: String, reason: String },
    #[error(
        "repository is locked by {host} (pid {pid}) since {}; wait for that backup to finish, or delete the `{object}` object if it is certainly dead",
        crate::time::human(*.since)
    )]
    Locked {
        host: String,
        pid: u32,
        since: Timestamp,
        /// The lock object: `lock`, or `locks/<id>` (docs/FORMAT.md, "The lock").
        object: String,
    },
    #[error("the writer lock {object} {why}; stopping before anything more is written or deleted")]
    LockLost { object: String, why: String },
    #[error("{location}: coffer will not write to this storage: {reason}")]
    StorageUnfit { location: String, reason: String },
    #[error("{object} does not read back as written: {reason}")]
    BadUpload { object: String, reason: String },
    #[error("{what} would be {size} bytes, more than coffer reads back ({max} at most)")]
    TooLarge { what: String, size: u64, max: u64 },
    #[error("snapshot {0} not found; list them with `coffer snapshots`")]
    NoSuchSnapshot(String),
    #[error("snapshot prefix {0} is ambiguous; give more digits")]
    AmbiguousSnapshot(String),
}

/// How a repository on an Object Lock bucket locks its objects: every
/// object is written locked for `window_days + margin_days`, and a writer
/// lengthens the lock of what history still needs once it has less than
/// `window_days` left (engine/locks.rs): each object at most once per
/// `margin_days`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockConfig {
    pub mode: crate::storage::LockMode,
    /// The history the locks protect: at least the profile's `keep_within`.
    pub window_days: u32,
    /// How far past the window a lock reaches when written or lengthened.
    pub margin_days: u32,
}

/// The lock margin (docs/IMMUTABILITY.md, "What locks cost"): a longer one
/// lengthens fewer locks a day, and keeps forgotten data that much longer.
pub const LOCK_MARGIN_DAYS: u32 = 30;

impl LockConfig {
    /// The lock every new object gets.
    pub fn write_lock(&self) -> crate::storage::WriteLock {
        crate::storage::WriteLock {
            mode: self.mode,
            period: crate::time::days(i64::from(self.window_days + self.margin_days)),
        }
    }
    fn validate(&self) -> Result<(), String> {
        if !(1..=3650).contains(&self.window_days) || !(1..=3650).contains(&self.margin_days) {
            return Err(format!(
                "object_lock window {} days, margin {} days: each must be 1 to 3650",
                self.window_days, self.margin_days
            ));
        }
        Ok(())
    }
}

/// The plaintext `config` object: enough to know what this is and how to read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: String,
    #[serde(with = "crate::time::serde_rfc3339")]
    pub created: Timestamp,
    pub data_chunks: ChunkerParams,
    /// Object Lock on everything history depends on (docs/IMMUTABILITY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<LockConfig>,
    pub meta_chunks: ChunkerParams,
    /// Packs are closed once they reach this many bytes.
    pub pack_size: u64,
}

pub struct Repository {
    pub store: Store,
    pub keys: Keys,
    pub config: RepoConfig,
    /// What opening it had to work around (a damaged keyring), for the operator.
    pub warnings: Vec<String>,
}

impl Repository {
    /// Creates a repository: probes the storage first (a server that does
    /// not store uploads as sent gets no repository, see [`caps::probe`]),
    /// then `keyring`, `capabilities`, and last `config`. Returns the agent
    /// key and what the probe found.
    pub fn init(
        store: Store,
        recipients: Vec<age::x25519::Recipient>,
        data_chunks: ChunkerParams,
        object_lock: Option<LockConfig>,
    ) -> Result<(Repository, AgentKey, caps::Capabilities), RepoError> {
        if store.stat(CONFIG_KEY)?.is_some() {
            return Err(RepoError::AlreadyExists {
                location: store.location(),
            });
        }
        let config = RepoConfig {
            format: "coffer".into(),
            version: match object_lock {
                Some(_) => FORMAT_VERSION,
                None => UNLOCKED_VERSION,
            },
            id: hex::encode(rand::random::<[u8; 16]>()),
            created: Timestamp::now(),
            data_chunks,
            object_lock,
            meta_chunks: ChunkerParams::META,
            pack_size: 16 * 1024 * 1024,
        };
        let capabilities = caps::probe(&store, config.pack_size)?;
        // After the probe: its objects are deleted again at once.
        Self::arm(&store, &config)?;
        let agent = AgentKey::generate(config.id.clone(), recipients);
        let keys = Keys::from_agent_key(&agent);
        // The keyring lets an operator re-issue the agent key on a new server.
        Self::write_keyring(&store, &keys, &agent)?;
        caps::write(&store, &keys, &capabilities)?;
        let json = serde_json::to_vec_pretty(&config).unwrap_or_default();
        if !store.create(CONFIG_KEY, Bytes::from(json))? {
            return Err(RepoError::AlreadyExists {
                location: store.location(),
            });
        }
        Ok((
            Repository {
                store,
                keys,
                config,
                warnings: Vec::new(),
            },
            agent,
            capabilities,
        ))
    }

    /// Writes the keyring and its copy, each sealed to the operator
    /// recipients (the agent key file is enough to write them).
    pub fn write_keyring(store: &Store, keys: &Keys, agent: &AgentKey) -> Result<(), RepoError> {
        for key in [KEYRING_KEY, KEYRING_COPY_KEY] {
            let sealed = keys.seal(Audience::Operator, agent.to_text().as_bytes());
            store.put(key, Bytes::from(sealed))?;
        }
        Ok(())
    }

    /// Reads the repository's config (no key needed): whether a
    /// repository is there at all.
    pub fn read_config(store: &Store) -> Result<RepoConfig, RepoError> {
        Self::parse_config(store, store.get_capped(CONFIG_KEY, limits::CONFIG))
    }

    /// The config from the result of reading it.
    fn parse_config(
        store: &Store,
        read: Result<Bytes, StorageError>,
    ) -> Result<RepoConfig, RepoError> {
        let raw = match read {
            Ok(r) => r,
            Err(e) if e.is_not_found() => {
                // Some servers answer NoSuchKey for a missing bucket too: a
                // mistyped bucket name is likelier than a lost repository.
                if matches!(store.exists(), Ok(false)) {
                    return Err(RepoError::NoLocation {
                        location: store.location(),
                    });
                }
                return Err(RepoError::NotARepository {
                    location: store.location(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let corrupt = |reason: String| RepoError::Corrupt {
            object: CONFIG_KEY.into(),
            reason,
        };
        let head: Head = serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        if head.format != "coffer" {
            return Err(corrupt(format!("format is {:?}, not coffer", head.format)));
        }
        if head.version > FORMAT_VERSION || head.version == 0 {
            return Err(RepoError::UnsupportedVersion {
                location: store.location(),
                version: head.version,
            });
        }
        let config: RepoConfig =
            serde_json::from_slice(&raw).map_err(|e| corrupt(e.to_string()))?;
        for params in [&config.data_chunks, &config.meta_chunks] {
            params.validate().map_err(|m| corrupt(m.to_string()))?;
        }
        if !(1024 * 1024..=1024 * 1024 * 1024).contains(&config.pack_size) {
            return Err(corrupt("pack_size out of range".into()));
        }
        if let Some(l) = &config.object_lock {
            l.validate().map_err(corrupt)?;
        }
        Ok(config)
    }

    /// Every object this store writes from now on gets the repository's
    /// lock. Storage without Object Lock refuses it.
    fn arm(store: &Store, config: &RepoConfig) -> Result<(), RepoError> {
        Ok(store.set_write_lock(config.object_lock.map(|l| l.write_lock()))?)
    }

    /// [`Repository::arm`] for a repository being opened: a copy of a
    /// locked repository on storage without Object Lock (a folder) still
    /// opens, and says that what is written there is not locked.
    fn arm_or_warn(store: &Store, config: &RepoConfig) -> Result<Vec<String>, RepoError> {
        match Self::arm(store, config) {
            Err(RepoError::Storage(StorageError::Unsupported { .. })) => Ok(vec![format!(
                "{} is a copy of a repository under Object Lock, on storage without it: what is written here is not locked",
                store.location()
            )]),
            other => other.map(|_| Vec::new()),
        }
    }

    /// Opens with the agent key: can write and read bookkeeping, not contents.
    pub fn open_agent(store: Store, agent: &AgentKey) -> Result<Repository, RepoError> {
        let config = Self::read_config(&store)?;
        if config.id != agent.repository_id {
            return Err(RepoError::KeyMismatch {
                location: store.location(),
                key_repo: agent.repository_id.clone(),
                repo: config.id,
            });
        }
        let warnings = Self::arm_or_warn(&store, &config)?;
        Ok(Repository {
            keys: Keys::from_agent_key(agent),
            store,
            config,
            warnings,
        })
    }

    /// Opens with the operator identity: reads the keyring, can do everything.
    pub fn open_operator(
        store: Store,
        identity: OperatorIdentity,
    ) -> Result<Repository, RepoError> {
        // Both at once: on a remote store the two round trips are most of
        // the time it takes to open.
        let (config, sealed) =
            store.get_pair((CONFIG_KEY, limits::CONFIG), (KEYRING_KEY, limits::KEYRING));
        let config = Self::parse_config(&store, config)?;
        let probe = Keys {
            id_key: [0; 32],
            recipients: vec![],
            agent_recipient: age::x25519::Identity::generate().to_public(),
            agent_identity: None,
            operator: Some(identity),
        };
        let mut warnings = Self::arm_or_warn(&store, &config)?;
        let agent = match Self::open_keyring(&probe, &config, KEYRING_KEY, sealed) {
            Ok(a) => a,
            // The copy, whatever went wrong: a keyring planted for other
            // keys must not lock the operator out either. If the copy fails
            // too, the first error is the one to show (a wrong identity
            // fails both the same way).
            Err(first) => {
                let copy = store.get_capped(KEYRING_COPY_KEY, limits::KEYRING);
                let Ok(a) = Self::open_keyring(&probe, &config, KEYRING_COPY_KEY, copy) else {
                    return Err(first);
                };
                warnings.push(format!(
                    "{KEYRING_KEY} can not be read ({}); its copy {KEYRING_COPY_KEY} was used. `coffer repair keyring` writes it again",
                    crate::engine::one_line(&first.to_string())
                ));
                a
            }
        };
        let mut keys = Keys::from_agent_key(&agent);
        keys.operator = probe.operator;
        Ok(Repository {
            store,
            keys,
            config,
            warnings,
        })
    }

    /// Opens one keyring object with the operator identity in `probe`.
    fn open_keyring(
        probe: &Keys,
        config: &RepoConfig,
        key: &str,
        read: Result<Bytes, StorageError>,
    ) -> Result<AgentKey, RepoError> {
        let sealed = read.map_err(|e| match e {
            StorageError::NotFound { .. } => RepoError::Corrupt {
                object: key.into(),
                reason: "missing".into(),
            },
            e => e.into(),
        })?;
        let text = probe.open(&sealed, key)?;
        let agent = AgentKey::parse(&String::from_utf8_lossy(&text), key)?;
        if agent.repository_id != config.id {
            return Err(RepoError::Corrupt {
                object: key.into(),
                reason: "keyring belongs to another repository".into(),
            });
        }
        Ok(agent)
    }

    /// Opens with both the agent key file and the operator identity, for
    /// when the keyring (and its copy) can not be read: the agent key file
    /// holds the same keys. The identity must be one of its recipients.
    pub fn open_with_agent_key(
        store: Store,
        agent: &AgentKey,
        identity: OperatorIdentity,
    ) -> Result<Repository, RepoError> {
        let mut repo = Self::open_agent(store, agent)?;
        let ours = identity.identities.iter().any(|i| {
            agent
                .recipients
                .iter()
                .any(|r| r.to_string() == i.to_public().to_string())
        });
        if !ours {
            return Err(RepoError::WrongKey {
                what: "this repository (the agent key names other operator recipients)".into(),
            });
        }
        repo.keys.operator = Some(identity);
        Ok(repo)
    }

    /// The agent key as stored in the keyring (operator only).
    pub fn agent_key(&self) -> Option<AgentKey> {
        Some(AgentKey {
            repository_id: self.config.id.clone(),
            id_key: self.keys.id_key,
            agent_identity: self.keys.agent_identity.clone()?,
            recipients: self.keys.recipients.clone(),
        })
    }

    /// Seals a bookkeeping object and names it by the keyed hash of its plaintext.
    fn put_object(&self, prefix: &str, value: &impl Serialize) -> Result<[u8; 32], RepoError> {
        let json = serde_json::to_vec(value).unwrap_or_default();
        // Never write what a reader would refuse (repo::limits).
        let folder = format!("{prefix}/");
        if let Some((cap, max)) = limits::object_cap(&folder)
            && json.len() as u64 > max
        {
            return Err(RepoError::TooLarge {
                what: cap.what.into(),
                size: json.len() as u64,
                max,
            });
        }
        let id = self.keys.object_hash(&json);
        let compressed = zstd::bulk::compress(&json, 3).unwrap_or_default();
        let sealed = self.keys.seal(Audience::Both, &compressed);
        self.store.put(
            &format!("{prefix}/{}", hex::encode(id)),
            Bytes::from(sealed),
        )?;
        Ok(id)
    }

    fn get_object<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        id: &[u8; 32],
    ) -> Result<T, RepoError> {
        parse_object(key, &self.get_json(key, id)?)
    }

    /// Reads many objects with several requests in flight; results in order.
    fn get_objects<T: for<'de> Deserialize<'de>>(
        &self,
        objects: Vec<(String, [u8; 32])>,
    ) -> impl Iterator<Item = Result<T, RepoError>> + '_ {
        let reads = objects
            .iter()
            .map(|(key, _)| {
                let cap = limits::object_cap(key).map_or(limits::SNAPSHOT, |c| c.0);
                store::Read::Object(key.clone(), cap)
            })
            .collect();
        self.store
            .read_ahead(reads, self.store.read_concurrency())
            .zip(objects)
            .map(|(sealed, (key, id))| self.open_object(&key, &id, &sealed?))
    }

    fn open_object<T: for<'de> Deserialize<'de>>(
        &self,
        key: &str,
        id: &[u8; 32],
        sealed: &[u8],
    ) -> Result<T, RepoError> {
        parse_object(key, &self.open_json(key, id, sealed)?)
    }

    /// Reads one object's JSON, checked against its name, as stored: for
    /// what is verified over its exact bytes (signed audit events).
    fn get_json(&self, key: &str, id: &[u8; 32]) -> Result<Vec<u8>, RepoError> {
        let cap = limits::object_cap(key).map_or(limits::SNAPSHOT, |c| c.0);
        self.open_json(key, id, &self.store.get_capped(key, cap)?)
    }

    fn open_json(&self, key: &str, id: &[u8; 32], sealed: &[u8]) -> Result<Vec<u8>, RepoError> {
        let compressed = self.keys.open(sealed, key)?;
        let max = limits::object_cap(key).map_or(limits::SNAPSHOT_JSON, |c| c.1);
        let json = limits::decompress(&compressed, max).map_err(|reason| RepoError::Corrupt {
            object: key.into(),
            reason,
        })?;
        if &self.keys.object_hash(&json) != id {
            return Err(RepoError::Corrupt {
                object: key.into(),
                reason: "content does not match its name".into(),
            });
        }
        Ok(json)
    }

    pub fn write_index(&self, index: &IndexFile) -> Result<IndexId, RepoError> {
        self.put_object("index", index).map(IndexId)
    }

    /// Writes index objects for `packs`, split so that none exceeds what a
    /// reader accepts ([`IndexFile::split`]). Returns each with its id.
    pub fn write_indexes(
        &self,
        packs: Vec<index::IndexedPack>,
    ) -> Result<Vec<(IndexId, IndexFile)>, RepoError> {
        IndexFile::split(packs)
            .into_iter()
            .map(|ix| Ok((self.write_index(&ix)?, ix)))
            .collect()
    }

    pub fn read_index(&self, id: &IndexId) -> Result<IndexFile, RepoError> {
        self.valid_index(&id.key(), self.get_object(&id.key(), &id.0))
    }

    /// Reads index objects with several requests in flight, in the order of `ids`.
    pub fn read_indexes(
        &self,
        ids: &[IndexId],
    ) -> impl Iterator<Item = Result<IndexFile, RepoError>> + '_ {
        let keys: Vec<String> = ids.iter().map(|i| i.key()).collect();
        self.get_objects(ids.iter().map(|i| (i.key(), i.0)).collect())
            .zip(keys)
            .map(move |(read, key)| self.valid_index(&key, read))
    }

    /// The largest pack this repository's writers make ([`limits::max_pack_size`]).
    pub fn max_pack_size(&self) -> u64 {
        limits::max_pack_size(self.config.pack_size)
    }

    /// An index read from storage, refused whole if any of its numbers is
    /// impossible ([`IndexFile::validate`]).
    fn valid_index(
        &self,
        key: &str,
        read: Result<IndexFile, RepoError>,
    ) -> Result<IndexFile, RepoError> {
        let index = read?;
        index
            .validate(self.max_pack_size())
            .map_err(|m| RepoError::Corrupt {
                object: key.into(),
                reason: m.to_string(),
            })?;
        Ok(index)
    }

    /// The ids of the objects under `prefix` that `parse` recognises.
    fn list_ids<T>(&self, prefix: &str, parse: fn(&str) -> Option<T>) -> Result<Vec<T>, RepoError> {
        Ok(self
            .store
            .list(prefix)?
            .iter()
            .filter_map(|o| parse(&o.key))
            .collect())
    }

    pub fn list_indexes(&self) -> Result<Vec<IndexId>, RepoError> {
        self.list_ids("index/", IndexId::from_key)
    }

    pub fn write_snapshot(&self, snap: &Snapshot) -> Result<SnapshotId, RepoError> {
        self.put_object("snapshots", snap).map(SnapshotId)
    }

    pub fn read_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, RepoError> {
        self.get_object(&id.key(), &id.0)
    }

    /// Reads snapshot objects with several requests in flight, in the order of `ids`.
    pub fn read_snapshots(
        &self,
        ids: &[SnapshotId],
    ) -> impl Iterator<Item = Result<Snapshot, RepoError>> + '_ {
        self.get_objects(ids.iter().map(|i| (i.key(), i.0)).collect())
    }

    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>, RepoError> {
        self.list_ids("snapshots/", SnapshotId::from_key)
    }

    /// All packs in storage with their sizes.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>, RepoError> {
        Ok(self
            .store
            .list("data/")?
            .iter()
            .filter_map(|o| PackId::from_key(&o.key).map(|id| (id, o.size)))
            .collect())
    }

    /// Reads a pack's own blob list from its trailer (two ranged reads).
    pub fn read_pack_trailer(&self, pack: &PackId, size: u64) -> Result<Vec<PackEntry>, RepoError> {
        let key = pack.key();
        if size < pack::FOOTER_LEN {
            return Err(RepoError::Corrupt {
                object: key,
                reason: "shorter than a pack footer".into(),
            });
        }
        if size > self.max_pack_size() {
            return Err(RepoError::Corrupt {
                object: key,
                reason: format!(
                    "{size} bytes, larger than a pack can be ({})",
                    self.max_pack_size()
                ),
            });
        }
        let footer = self
            .store
            .get_range(&key, size - pack::FOOTER_LEN, pack::FOOTER_LEN)?;
        let tlen = pack::parse_footer(pack, &footer)?;
        if tlen + pack::FOOTER_LEN > size {
            return Err(RepoError::Corrupt {
                object: key,
                reason: "trailer length exceeds the pack".into(),
            });
        }
        let trailer = self
            .store
            .get_range(&key, size - pack::FOOTER_LEN - tlen, tlen)?;
        pack::parse_trailer(&self.keys, pack, &trailer, size)
    }

    /// Reads back the end of a pack just uploaded (one ranged GET of its
    /// trailer and footer) and compares it with what was written. A pack
    /// that does not read back as written fails with what the server
    /// stored; it is deleted (no index names it yet), and so is the
    /// `capabilities` record, so the next writer probes the storage again.
    pub fn verify_upload(&self, pack: &PackId, size: u64, tail: &[u8]) -> Result<(), RepoError> {
        caps::verify_upload(&self.store, &pack.key(), size, tail)
    }

    /// Reads and opens one blob (a ranged read of exactly its bytes).
    pub fn read_blob(&self, pack: &PackId, entry: &PackEntry) -> Result<Vec<u8>, RepoError> {
        // Its numbers came from an index or trailer: bounded before the read.
        entry.check(u64::MAX).map_err(|m| RepoError::Corrupt {
            object: pack.key(),
            reason: m.to_string(),
        })?;
        let sealed = self
            .store
            .get_range(&pack.key(), entry.offset, entry.length)?;
        pack::open_blob(&self.keys, entry, pack, &sealed)
    }

    /// Resolves `latest` or an id prefix among `snaps` (sorted by time).
    pub fn resolve_snapshot<'a>(
        snaps: &'a [(SnapshotId, Snapshot)],
        spec: &str,
    ) -> Result<&'a (SnapshotId, Snapshot), RepoError> {
        if spec == "latest" {
            return snaps
                .last()
                .ok_or_else(|| RepoError::NoSuchSnapshot(spec.into()));
        }
        let spec_l = spec.to_ascii_lowercase();
        let mut found = snaps
            .iter()
            .filter(|(id, _)| id.to_hex().starts_with(&spec_l));
        match (found.next(), found.next()) {
            (Some(s), None) if spec.len() >= 4 => Ok(s),
            (Some(_), Some(_)) => Err(RepoError::AmbiguousSnapshot(spec.into())),
            _ => Err(RepoError::NoSuchSnapshot(spec.into())),
        }
    }
}

fn parse_object<T: for<'de> Deserialize<'de>>(key: &str, json: &[u8]) -> Result<T, RepoError> {
    serde_json::from_slice(json).map_err(|e| RepoError::Corrupt {
        object: key.into(),
        reason: e.to_string(),
    })
}
