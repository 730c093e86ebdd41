//! What the storage under a repository really does, probed rather than
//! assumed (docs/FORMAT.md, "Capabilities"): whether its create-only write
//! is honoured, whether every upload path coffer uses stores exactly the
//! bytes sent, whether a listing shows at once what was just written or
//! deleted, and which checksum a ranged read comes with.
//!
//! `init` probes; a writer reads the record (one GET) and probes again only
//! when it is older than [`MAX_AGE`], or was made by another coffer version,
//! for another location, or with other upload settings. The record lives in
//! the repository (`capabilities`), so every host adapts the same way: the
//! writer lock's protocol follows it ([`super::lock`]), and coffer refuses to
//! write where an upload does not read back as sent.

use super::RepoError;
use super::keys::{Audience, Keys};
use super::limits;
use super::lock::LockProtocol;
use super::store::Store;
use crate::storage::{Cap, ObjectInfo, StorageError};
use bytes::Bytes;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The record: `age(operator+agent, JSON)`.
pub const CAPS_KEY: &str = "capabilities";
/// Where the probe's objects live while it runs (`probe/<16 hex>.<what>`).
pub const PROBE_PREFIX: &str = "probe/";
/// A record older than this is probed again at the next writer's start.
pub const MAX_AGE: SignedDuration = crate::time::days(7);
/// The coffer that made a record; another version probes again.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The single PUT from memory (index and snapshot objects, `copy`).
const PUT_BYTES: u64 = 300 * 1024 + 7;
/// The upload streamed from a spool file (packs): more than one 1 MiB
/// body frame, so an aws-chunked upload has several chunks.
const FILE_BYTES: u64 = 2 * 1024 * 1024 + 13;
/// A multipart upload is probed only when packs can reach the threshold:
/// when it is below this many pack sizes (a pack closes at `pack_size` plus
/// one blob, so with the default 64 MiB threshold and 16 MiB packs none go
/// up in parts; a backup verifies any pack that does, see [`Capabilities::verify_above`]).
const MULTIPART_PACKS: u64 = 2;
/// Whole-object read-back happens in pieces of at most this size.
const READ_PIECE: u64 = 8 * 1024 * 1024;
/// Waits (ms) between listings that do not yet show what was written or
/// deleted: 7.75 s in all.
const LIST_WAITS: [u64; 6] = [0, 250, 500, 1000, 2000, 4000];
/// The settle time of the list-and-check lock where listings showed no lag.
pub const DEFAULT_SETTLE_MS: u64 = 1000;

/// Which checksum a ranged read comes with.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RangeChecksum {
    /// None (AWS, and most servers).
    None,
    /// The whole object's, which no part of it matches (Ceph before
    /// 2025-02, R2 in 2025-02): a client validating it fails every range.
    WholeObject,
    /// A part's (`…-N`), for a range that is a multipart part.
    Part,
}

/// Bytes of each upload path that were read back exactly as sent.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Uploads {
    /// A single PUT from memory (index, snapshot, lock objects; `copy`).
    pub put: u64,
    /// A single PUT streamed from a spool file (packs).
    pub put_file: u64,
    /// A multipart upload from a spool file (packs above the threshold);
    /// None: not probed (no such path, or packs do not reach it).
    pub multipart: Option<u64>,
}

/// The record of one probe.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Capabilities {
    #[serde(with = "crate::time::serde_rfc3339")]
    pub probed: Timestamp,
    /// The coffer version and host that probed.
    pub coffer: String,
    pub host: String,
    /// The location probed (`s3://bucket/prefix`, `file:///…`).
    pub storage: String,
    /// The upload settings probed with (see `Tuning::upload_settings`).
    pub settings: String,
    pub multipart_threshold: Option<u64>,
    /// A second create-only write of one key was refused, and the first
    /// object kept.
    pub conditional_create: bool,
    /// A listing showed what was just written, and stopped showing what
    /// was just deleted; `list_lag_ms` is how long that took (0: at once).
    pub list_after_write: bool,
    pub list_lag_ms: u64,
    pub uploads: Uploads,
    pub ranged_read_checksum: RangeChecksum,
    /// The bucket's Object Lock (`off`, `on: MODE, N days by default`,
    /// `unknown (why)`); None where there is no such thing (a folder).
    /// Recorded for the operator; nothing adapts to it yet.
    #[serde(default)]
    pub object_lock: Option<String>,
    /// The writer lock's protocol on this storage.
    pub lock: LockProtocol,
}

impl Capabilities {
    /// Whether a writer may go by this record instead of probing again.
    pub fn is_current(&self, store: &Store, now: Timestamp) -> bool {
        self.coffer == VERSION
            && self.storage == store.location()
            && self.settings == store.upload_settings()
            && self.multipart_threshold == store.multipart_threshold()
            && now.duration_since(self.probed) < MAX_AGE
            && self.probed < now + crate::time::days(1)
    }

    /// Packs above this size took an upload path the probe did not read
    /// back (multipart): a writer verifies each of them after its upload.
    pub fn verify_above(&self) -> Option<u64> {
        match self.uploads.multipart {
            Some(_) => None,
            None => self.multipart_threshold,
        }
    }

    /// One line for the operator (`init`, `check`).
    pub fn summary(&self) -> String {
        let lock = match self.lock {
            LockProtocol::Create => "create-only `lock` object".to_string(),
            LockProtocol::List { settle_ms } => {
                format!("list-and-check `locks/` (settle {settle_ms} ms)")
            }
        };
        let multipart = match (self.uploads.multipart, self.multipart_threshold) {
            (Some(_), _) => ", multipart".to_string(),
            (None, Some(t)) => format!(
                " (multipart not probed: packs stay under its {} MiB threshold, and one above it is read back after its upload)",
                t >> 20
            ),
            (None, None) => String::new(),
        };
        let ranges = match self.ranged_read_checksum {
            RangeChecksum::None => "no checksum",
            RangeChecksum::WholeObject => "the whole object's checksum (not validated)",
            RangeChecksum::Part => "a part's checksum",
        };
        let object_lock = match &self.object_lock {
            Some(l) => format!("; Object Lock {l}"),
            None => String::new(),
        };
        format!(
            "conditional create {}; writer lock: {lock}; uploads read back as sent: single PUT, streamed{multipart}; listing {}; ranged reads carry {ranges}{object_lock}",
            if self.conditional_create {
                "works"
            } else {
                "is ignored or refused"
            },
            match (self.list_after_write, self.list_lag_ms) {
                (true, 0) => "shows new objects at once".to_string(),
                (true, ms) => format!("showed new objects after {ms} ms"),
                (false, _) => "did not show new objects".to_string(),
            }
        )
    }
}

/// Reads the record; None if there is none, or it can not be opened or
/// parsed (a newer coffer's, a damaged one): the writer then probes again.
pub fn read(store: &Store, keys: &Keys) -> Result<Option<Capabilities>, RepoError> {
    let sealed = match store.get_capped(CAPS_KEY, limits::CAPABILITIES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(StorageError::TooLarge { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Ok(plain) = keys.open(&sealed, CAPS_KEY) else {
        return Ok(None);
    };
    Ok(serde_json::from_slice(&plain).ok())
}

/// Writes the record, sealed to the operator and the agent: only a holder
/// of the repository's keys can make one coffer accepts, so nobody else
/// with write access to the bucket can pick the weaker lock for it.
pub fn write(store: &Store, keys: &Keys, caps: &Capabilities) -> Result<(), RepoError> {
    let json = serde_json::to_vec_pretty(caps).unwrap_or_default();
    store.put(CAPS_KEY, Bytes::from(keys.seal(Audience::Both, &json)))?;
    Ok(())
}

/// Deletes the record, so the next writer probes again (after an upload
/// that did not read back as written).
pub fn forget(store: &Store) -> Result<(), RepoError> {
    store.delete(CAPS_KEY)?;
    Ok(())
}

/// The capabilities a writer goes by: the record when it is current, or a
/// new probe (true: the caller records it once it holds the lock).
pub fn for_writer(
    store: &Store,
    keys: &Keys,
    pack_size: u64,
) -> Result<(Capabilities, bool), RepoError> {
    if let Some(caps) = read(store, keys)?
        && caps.is_current(store, Timestamp::now())
    {
        return Ok((caps, false));
    }
    Ok((probe(store, pack_size)?, true))
}

/// Bytes that depend only on a seed and their offset, so a probe object of
/// any size is written and compared without being held in memory.
struct Pattern(blake3::OutputReader);

impl Pattern {
    fn new(seed: &[u8; 32]) -> Pattern {
        Pattern(blake3::Hasher::new_keyed(seed).finalize_xof())
    }
    fn bytes(&mut self, offset: u64, length: u64) -> Vec<u8> {
        let mut buf = vec![0; length as usize];
        self.0.set_position(offset);
        self.0.fill(&mut buf);
        buf
    }
}

/// One uploaded probe object.
struct Sent {
    key: String,
    /// What it is, for messages: "a single PUT from memory (…)".
    what: &'static str,
    size: u64,
    seed: [u8; 32],
}

struct Probe<'a> {
    store: &'a Store,
    tag: String,
    written: Vec<String>,
}

/// Probes `store` (see the module's doc). Writes only `probe/…` objects
/// and deletes them again; a probe cut off leaves them for the next probe
/// to delete once they are a day old. Fails, naming the upload path and
/// what to do, where an upload does not read back exactly as sent, and
/// where neither the create-only write nor listings can keep two writers
/// apart. Requests: 3 for the create-only write, 3 uploads (the multipart
/// one only when packs reach its threshold: CreateMultipartUpload, a part
/// per 16 MiB, CompleteMultipartUpload), 3 reads of each (whole, middle,
/// end; the whole read in 8 MiB ranges above that), 1 ranged read for the
/// checksum, 2 listings and 1 batch delete: 19 in all without multipart,
/// about 2.3 MiB up and down.
pub fn probe(store: &Store, pack_size: u64) -> Result<Capabilities, RepoError> {
    let mut probe = Probe {
        store,
        tag: hex::encode(rand::random::<[u8; 8]>()),
        written: Vec::new(),
    };
    let result = probe.run(pack_size);
    if result.is_err() {
        let _ = store.delete_many(&probe.written);
    }
    result
}

fn cap(max: u64) -> Cap {
    Cap {
        max,
        what: "a probe object",
    }
}

/// Whether `head` starts like an aws-chunked body (`100000\r\n`, or a
/// signed chunk's `100000;chunk-signature=…`): the chunk framing of an
/// upload, stored as if it were the object's bytes.
pub fn looks_chunked(head: &[u8]) -> bool {
    let digits = head.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    (1..=16).contains(&digits)
        && (head[digits..].starts_with(b"\r\n") || head[digits..].starts_with(b";chunk-signature="))
}

/// The chunk-length line an object of `size` bytes begins with, if it
/// begins like aws-chunked framing (one ranged read of 24 bytes).
pub fn framing(store: &Store, key: &str, size: u64) -> Option<String> {
    let head = store.get_range(key, 0, size.min(24)).ok()?;
    looks_chunked(&head).then(|| {
        head.iter()
            .take_while(|&&b| b != b'\r' && b != b';')
            .map(|&b| b as char)
            .collect()
    })
}

/// What to do when an upload does not read back as sent (the storage
/// knows how it sent it), as a clause after `; `.
pub fn upload_hint(store: &Store) -> String {
    format!(
        "; {}",
        store
            .upload_hint()
            .unwrap_or_else(|| "check the storage under the repository".into())
    )
}

/// Reads back the end of a pack just uploaded to `store` under `key` (one
/// ranged GET of `tail`, its last bytes as written) and compares. A pack
/// that does not read back as written fails with what the server stored;
/// it is deleted (no index names it yet), and so is the `capabilities`
/// record, so the next writer probes the storage again.
pub fn verify_upload(store: &Store, key: &str, size: u64, tail: &[u8]) -> Result<(), RepoError> {
    let len = (tail.len() as u64).min(size);
    match store.get_range(key, size - len, len) {
        Ok(b) if b[..] == tail[tail.len() - len as usize..] => return Ok(()),
        Err(e) if !e.is_object_fault() => return Err(e.into()),
        _ => {}
    }
    let why = explain_mismatch(store, key, size)?;
    let _ = store.delete(key);
    let _ = forget(store);
    Err(RepoError::BadUpload {
        object: format!("pack {key}"),
        reason: format!(
            "{why}{}; nothing was committed: the pack was deleted, and the next run probes the storage again",
            upload_hint(store)
        ),
    })
}

/// `1048576` as `1,048,576`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Explains an object that does not read back as sent: its stored size,
/// and whether it begins like aws-chunked framing. Costs a HEAD and, when
/// the size differs, a ranged read of 24 bytes.
pub fn explain_mismatch(store: &Store, key: &str, sent: u64) -> Result<String, RepoError> {
    let stored = match store.stat(key) {
        Ok(s) => s,
        Err(e) if e.is_object_fault() => return Ok(format!("it can not be looked up ({e})")),
        Err(e) => return Err(e.into()),
    };
    Ok(match stored {
        None => "the server answered the upload as stored, but there is no such object".into(),
        Some(n) if n == sent => format!(
            "the server stored {} bytes, as many as were sent, but other ones",
            grouped(sent)
        ),
        Some(n) => {
            let framing = match framing(store, key, n) {
                Some(line) => format!(
                    ", beginning `{line}\\r\\n`: the upload's aws-chunked framing was stored as data"
                ),
                None => String::new(),
            };
            format!(
                "the server stored {} bytes for {} sent{framing}",
                grouped(n),
                grouped(sent)
            )
        }
    })
}

impl Probe<'_> {
    fn key(&self, what: &str) -> String {
        format!("{PROBE_PREFIX}{}.{what}", self.tag)
    }

    /// A storage error without the location, which the refusal names once.
    fn said(&self, e: &StorageError) -> String {
        let text = e.to_string();
        let location = format!("{}: ", self.store.location());
        text.strip_prefix(&location).unwrap_or(&text).to_string()
    }

    fn unfit(&self, reason: String) -> RepoError {
        RepoError::StorageUnfit {
            location: self.store.location(),
            reason,
        }
    }

    fn run(&mut self, pack_size: u64) -> Result<Capabilities, RepoError> {
        let store = self.store;
        self.remove_leftovers();
        let conditional_create = self.conditional_create()?;

        let mut sent = Vec::new();
        let put = self.send_put()?;
        sent.push(put);
        sent.push(self.send_file(
            "file",
            "a streamed upload from a spool file (as packs go up)",
            FILE_BYTES,
        )?);
        let threshold = store.multipart_threshold();
        let multipart = match threshold {
            Some(t) if t < MULTIPART_PACKS.saturating_mul(pack_size) => {
                let s = self.send_file(
                    "multipart",
                    "a multipart upload from a spool file (as packs above the threshold go up)",
                    t + 4097,
                )?;
                let size = s.size;
                sent.push(s);
                Some(size)
            }
            _ => None,
        };
        for s in &sent {
            self.read_back(s)?;
        }
        let ranged_read_checksum = match store.range_checksum(&sent[0].key, 1000, 1000) {
            Ok(None) => RangeChecksum::None,
            Ok(Some(sum))
                if sum
                    .rsplit_once('-')
                    .is_some_and(|(_, n)| n.parse::<u32>().is_ok()) =>
            {
                RangeChecksum::Part
            }
            Ok(Some(_)) => RangeChecksum::WholeObject,
            Err(e) if e.is_object_fault() => {
                return Err(self.unfit(format!(
                    "a ranged read of a probe object failed: {}",
                    self.said(&e)
                )));
            }
            Err(e) => return Err(e.into()),
        };

        // Listings: what was written shows, at the size sent; what was
        // deleted goes.
        let keys: Vec<String> = self.written.clone();
        let shown = self
            .await_listing(|listed| sent.iter().all(|s| listed.iter().any(|o| o.key == s.key)))?;
        if let Some((_, listed)) = &shown {
            // The listing's size too: a server may add bytes past the end.
            for s in &sent {
                if listed.iter().any(|o| o.key == s.key && o.size != s.size) {
                    return Err(self.mismatch(s)?);
                }
            }
        }
        store.delete_many(&keys)?;
        let gone = self.await_listing(|listed| !listed.iter().any(|o| keys.contains(&o.key)))?;
        self.written.clear();
        let (list_after_write, list_lag_ms) = match (shown, gone) {
            (Some((a, _)), Some((b, _))) => (true, a.max(b)),
            _ => (false, 0),
        };
        let lock = if conditional_create {
            LockProtocol::Create
        } else if list_after_write {
            LockProtocol::List {
                settle_ms: DEFAULT_SETTLE_MS.max(2 * list_lag_ms),
            }
        } else {
            return Err(self.unfit(
                "it ignores the create-only write (If-None-Match: *), and its listing did not show a new object (or still showed a deleted one) within 8 s: coffer can not keep two writers apart on it".into(),
            ));
        };
        Ok(Capabilities {
            probed: Timestamp::now(),
            coffer: VERSION.into(),
            host: super::lock::hostname(),
            storage: store.location(),
            settings: store.upload_settings(),
            multipart_threshold: threshold,
            conditional_create,
            list_after_write,
            list_lag_ms,
            uploads: Uploads {
                put: PUT_BYTES,
                put_file: FILE_BYTES,
                multipart,
            },
            ranged_read_checksum,
            object_lock: store.object_lock()?,
            lock,
        })
    }

    /// Deletes the objects of probes cut off a day or more ago (a probe
    /// under way lasts seconds; others may run on other hosts now).
    fn remove_leftovers(&self) {
        let Ok(listed) = self.store.list(PROBE_PREFIX) else {
            return;
        };
        let old: Vec<String> = listed
            .into_iter()
            .filter(|o| {
                o.modified
                    .is_some_and(|t| Timestamp::now().duration_since(t) > crate::time::days(1))
            })
            .map(|o| o.key)
            .collect();
        if !old.is_empty() {
            let _ = self.store.delete_many(&old);
        }
    }

    /// A create-only write of a new key, then a second of the same key:
    /// the second must be refused and the first object kept.
    fn conditional_create(&mut self) -> Result<bool, RepoError> {
        let key = self.key("create");
        let first = Bytes::from_static(b"coffer probe: the first create-only write");
        self.written.push(key.clone());
        let content = |store: &Store| -> Result<Option<Bytes>, RepoError> {
            match store.get_capped(&key, cap(1024)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.is_object_fault() => Ok(None),
                Err(e) => Err(e.into()),
            }
        };
        match self.store.create(&key, first.clone()) {
            Ok(true) => {}
            // Refused for a key nobody else writes: our own create whose
            // answer was lost (then it holds our bytes), or a server that
            // refuses every create-only write.
            Ok(false) => {
                if content(self.store)?.as_ref() != Some(&first) {
                    return Ok(false);
                }
            }
            // Refused outright (B2 answers 501 NotImplemented), or storage
            // is down: a plain PUT of the same key tells which.
            Err(_) => {
                self.store.put(&key, first)?;
                return Ok(false);
            }
        }
        let second = self.store.create(
            &key,
            Bytes::from_static(b"coffer probe: the second create-only write"),
        );
        match second {
            Ok(false) => Ok(content(self.store)?.as_ref() == Some(&first)),
            Ok(true) => Ok(false),
            Err(e) if e.is_object_fault() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// An upload the server refused makes the storage unfit, naming the
    /// upload path (the storage error says why and what to do); an outage
    /// is a storage error.
    fn uploaded(&self, what: &str, res: Result<(), StorageError>) -> Result<(), RepoError> {
        match res {
            Ok(()) => Ok(()),
            Err(e) if e.is_transient() || e.gave_up() => Err(e.into()),
            Err(e) => Err(self.unfit(format!("{what} was refused: {}", self.said(&e)))),
        }
    }

    fn send_put(&mut self) -> Result<Sent, RepoError> {
        let sent = Sent {
            key: self.key("put"),
            what: "a single PUT from memory (as index and snapshot objects go up)",
            size: PUT_BYTES,
            seed: rand::random(),
        };
        let data = Pattern::new(&sent.seed).bytes(0, sent.size);
        self.written.push(sent.key.clone());
        let res = self.store.put(&sent.key, Bytes::from(data));
        self.uploaded(sent.what, res)?;
        Ok(sent)
    }

    fn send_file(&mut self, name: &str, what: &'static str, size: u64) -> Result<Sent, RepoError> {
        let sent = Sent {
            key: self.key(name),
            what,
            size,
            seed: rand::random(),
        };
        let spool = self.store.spool_dir();
        let written = (|| -> std::io::Result<std::path::PathBuf> {
            use std::io::Write;
            let (file, path) = super::pack::spool_file(&spool)?;
            let mut pattern = Pattern::new(&sent.seed);
            let mut out = std::io::BufWriter::new(file);
            let mut at = 0;
            let res = (|| {
                while at < size {
                    let n = (size - at).min(READ_PIECE);
                    out.write_all(&pattern.bytes(at, n))?;
                    at += n;
                }
                out.flush()
            })();
            if let Err(e) = res {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
            Ok(path)
        })();
        let path = written.map_err(|e| RepoError::StorageUnfit {
            location: self.store.location(),
            reason: format!(
                "the probe's spool file in {} can not be written: {e}",
                spool.display()
            ),
        })?;
        self.written.push(sent.key.clone());
        let res = self.store.put_file(&sent.key, &path);
        self.uploaded(what, res)?;
        Ok(sent)
    }

    /// Reads an object back whole (in pieces above 8 MiB), then a range
    /// in its middle and its last 4 KiB, and compares each with what was
    /// sent.
    fn read_back(&self, s: &Sent) -> Result<(), RepoError> {
        let mut pattern = Pattern::new(&s.seed);
        let mut reads: Vec<(u64, u64)> = Vec::new();
        if s.size > READ_PIECE {
            let mut at = 0;
            while at < s.size {
                let n = (s.size - at).min(READ_PIECE);
                reads.push((at, n));
                at += n;
            }
        }
        let middle = (s.size / 2 - 500, 1000);
        let end = (s.size - 4096, 4096);
        if s.size <= READ_PIECE {
            // The whole object in one GET, refused above what was sent.
            let got = self.store.get_capped(&s.key, cap(s.size));
            let whole = match got {
                Ok(b) => Some(b),
                Err(StorageError::TooLarge { .. }) => None,
                Err(e) if e.is_object_fault() => return Err(self.read_failed(s, "read whole", e)),
                Err(e) => return Err(e.into()),
            };
            if whole.as_deref() != Some(&pattern.bytes(0, s.size)[..]) {
                return Err(self.mismatch(s)?);
            }
        }
        reads.extend([middle, end]);
        for (offset, length) in reads {
            let got = match self.store.get_range(&s.key, offset, length) {
                Ok(b) => b,
                Err(e) if e.is_object_fault() => {
                    return Err(self.read_failed(s, "read by a ranged GET", e));
                }
                Err(e) => return Err(e.into()),
            };
            if got[..] != pattern.bytes(offset, length)[..] {
                return Err(self.mismatch(s)?);
            }
        }
        Ok(())
    }

    fn read_failed(&self, s: &Sent, how: &str, e: StorageError) -> RepoError {
        let e = self.said(&e);
        self.unfit(format!(
            "{} of {} bytes can not be {how} ({e}){}",
            s.what,
            grouped(s.size),
            upload_hint(self.store)
        ))
    }

    fn mismatch(&self, s: &Sent) -> Result<RepoError, RepoError> {
        let why = explain_mismatch(self.store, &s.key, s.size)?;
        Ok(self.unfit(format!(
            "{} does not read back as sent: {why}{}",
            s.what,
            upload_hint(self.store)
        )))
    }

    /// Lists `probe/` until `ok` holds of the listing, waiting a little
    /// longer each time: how long it took (ms) and the listing, or None
    /// after 7.75 s.
    fn await_listing(
        &self,
        ok: impl Fn(&[ObjectInfo]) -> bool,
    ) -> Result<Option<(u64, Vec<ObjectInfo>)>, RepoError> {
        let start = std::time::Instant::now();
        for wait in LIST_WAITS {
            std::thread::sleep(std::time::Duration::from_millis(wait));
            let listed = self.store.list(PROBE_PREFIX)?;
            if ok(&listed) {
                let lag = match wait {
                    0 => 0,
                    _ => start.elapsed().as_millis() as u64,
                };
                return Ok(Some((lag, listed)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs above the multipart threshold are read back after their
    /// upload only where the probe did not read that path back.
    #[test]
    fn multipart_packs_are_read_back_where_the_probe_did_not() {
        let mut caps = Capabilities {
            probed: Timestamp::now(),
            coffer: VERSION.into(),
            host: "h".into(),
            storage: "s3://b/p".into(),
            settings: String::new(),
            multipart_threshold: Some(64 << 20),
            conditional_create: true,
            list_after_write: true,
            list_lag_ms: 0,
            uploads: Uploads {
                put: PUT_BYTES,
                put_file: FILE_BYTES,
                multipart: None,
            },
            ranged_read_checksum: RangeChecksum::None,
            object_lock: None,
            lock: LockProtocol::Create,
        };
        assert_eq!(caps.verify_above(), Some(64 << 20));
        caps.uploads.multipart = Some((64 << 20) + 4097);
        assert_eq!(caps.verify_above(), None);
        caps.multipart_threshold = None;
        caps.uploads.multipart = None;
        assert_eq!(caps.verify_above(), None, "no multipart path at all");
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1048576), "1,048,576");
    }

    #[test]
    fn chunk_framing_is_recognised() {
        assert!(looks_chunked(b"100000\r\n\x00\x01"));
        assert!(looks_chunked(b"a;chunk-signature=abc"));
        assert!(!looks_chunked(b"age-encryption.org/v1\n"));
        assert!(!looks_chunked(b"\r\n"));
        assert!(!looks_chunked(b"12345678901234567\r\n"));
    }

    #[test]
    fn patterns_read_the_same_at_any_offset() {
        let seed = [7; 32];
        let whole = Pattern::new(&seed).bytes(0, 10_000);
        assert_eq!(Pattern::new(&seed).bytes(4321, 100), whole[4321..4421]);
        assert_ne!(Pattern::new(&[8; 32]).bytes(0, 100), whole[..100]);
    }
}
