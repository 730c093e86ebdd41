//! Keys and sealing. Two kinds of readers exist:
//!
//! * the **operator** holds an age identity and can read everything;
//! * the **agent** holds the agent key file: the operator recipients (to seal
//!   content), its own small X25519 identity (to read back the *bookkeeping*
//!   objects it must reason about: index, pack trailers, reference lists,
//!   snapshot headers, the lock) and the id-key for chunk ids. It can never
//!   read file contents or file names: those are sealed to the operator only.

use super::RepoError;
use super::ids::BlobId;
use age::secrecy::ExposeSecret;
use age::x25519;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;

/// The agent key file's contents (also stored, sealed to the operator, as `keyring`).
#[derive(Clone)]
pub struct AgentKey {
    pub repository_id: String,
    pub id_key: [u8; 32],
    pub agent_identity: x25519::Identity,
    pub recipients: Vec<x25519::Recipient>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentKeyFile {
    repository_id: String,
    id_key: String,
    agent_identity: String,
    recipients: Vec<String>,
}

impl AgentKey {
    pub fn generate(repository_id: String, recipients: Vec<x25519::Recipient>) -> AgentKey {
        AgentKey {
            repository_id,
            id_key: rand::random(),
            agent_identity: x25519::Identity::generate(),
            recipients,
        }
    }

    pub fn to_text(&self) -> String {
        let f = AgentKeyFile {
            repository_id: self.repository_id.clone(),
            id_key: hex::encode(self.id_key),
            agent_identity: self.agent_identity.to_string().expose_secret().to_string(),
            recipients: self.recipients.iter().map(|r| r.to_string()).collect(),
        };
        format!(
            "# coffer agent key for repository {}\n\
             # It lets this machine write backups; it cannot read them back.\n\
             # Keep it secret (mode 0600): it names the chunk-id key.\n{}",
            self.repository_id,
            toml::to_string(&f).unwrap_or_default()
        )
    }

    pub fn parse(text: &str, origin: &str) -> Result<AgentKey, RepoError> {
        let bad = |reason: String| RepoError::KeyFile {
            path: origin.to_string(),
            reason,
        };
        let f: AgentKeyFile = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
        let mut id_key = [0u8; 32];
        hex::decode_to_slice(&f.id_key, &mut id_key)
            .map_err(|_| bad("id_key is not 64 hex digits".into()))?;
        let agent_identity = x25519::Identity::from_str(&f.agent_identity)
            .map_err(|e| bad(format!("agent_identity: {e}")))?;
        let recipients = f
            .recipients
            .iter()
            .map(|r| x25519::Recipient::from_str(r).map_err(|e| bad(format!("recipient {r}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if recipients.is_empty() {
            return Err(bad("no recipients".into()));
        }
        Ok(AgentKey {
            repository_id: f.repository_id,
            id_key,
            agent_identity,
            recipients,
        })
    }

    pub fn load(path: &Path) -> Result<AgentKey, RepoError> {
        let text = read_secret_file(path, "agent key")?;
        AgentKey::parse(&text, &path.display().to_string())
    }

    pub fn save(&self, path: &Path) -> Result<(), RepoError> {
        write_secret_file(path, self.to_text().as_bytes())
    }
}

/// The operator's secret: one or more age X25519 identities.
#[derive(Clone)]
pub struct OperatorIdentity {
    pub identities: Vec<x25519::Identity>,
}

impl OperatorIdentity {
    /// Loads an identity file: plain (`AGE-SECRET-KEY-1…` lines, comments allowed)
    /// or passphrase-protected (an age file, as `age -p` writes); `passphrase` is
    /// asked only for the latter.
    pub fn load(
        path: &Path,
        passphrase: &dyn Fn() -> Result<String, RepoError>,
    ) -> Result<OperatorIdentity, RepoError> {
        let raw = read_secret_bytes(path, "identity")?;
        let bad = |reason: String| RepoError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let text = if raw.starts_with(b"age-encryption.org/") {
            let pass = passphrase()?;
            let id = age::scrypt::Identity::new(pass.into());
            let dec = age::Decryptor::new_buffered(&raw[..])
                .map_err(|e| bad(format!("not a readable age file: {e}")))?;
            let mut r = dec
                .decrypt(std::iter::once(&id as &dyn age::Identity))
                .map_err(|_| {
                    bad("wrong passphrase (set COFFER_PASSPHRASE or type it at the prompt)".into())
                })?;
            let mut out = Vec::new();
            r.read_to_end(&mut out)
                .map_err(|e| bad(format!("cannot decrypt: {e}")))?;
            String::from_utf8(out).map_err(|_| bad("decrypted identity is not text".into()))?
        } else {
            String::from_utf8(raw).map_err(|_| bad("not an age identity file (not text)".into()))?
        };
        let identities = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                x25519::Identity::from_str(l)
                    .map_err(|e| bad(format!("not an age X25519 identity: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if identities.is_empty() {
            return Err(bad("no AGE-SECRET-KEY-1 line found".into()));
        }
        Ok(OperatorIdentity { identities })
    }

    /// Writes a new identity file, optionally protected with a passphrase.
    pub fn generate(
        path: &Path,
        passphrase: Option<String>,
    ) -> Result<x25519::Recipient, RepoError> {
        let id = x25519::Identity::generate();
        let recipient = id.to_public();
        let text = format!(
            "# created: {}\n# public key: {}\n{}\n",
            crate::time::rfc3339_secs(jiff::Timestamp::now()),
            recipient,
            id.to_string().expose_secret()
        );
        let bytes = match passphrase {
            None => text.into_bytes(),
            Some(p) => {
                let enc = age::Encryptor::with_user_passphrase(p.into());
                let mut out = Vec::new();
                let mut w = enc.wrap_output(&mut out).map_err(|e| io_err(path, e))?;
                w.write_all(text.as_bytes()).map_err(|e| io_err(path, e))?;
                w.finish().map_err(|e| io_err(path, e))?;
                out
            }
        };
        write_secret_file(path, &bytes)?;
        Ok(recipient)
    }
}

fn io_err(path: &Path, e: std::io::Error) -> RepoError {
    RepoError::KeyFile {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Reads a secret file, refusing one that others can read.
fn read_secret_bytes(path: &Path, what: &str) -> Result<Vec<u8>, RepoError> {
    let meta = std::fs::metadata(path).map_err(|e| RepoError::KeyFile {
        path: path.display().to_string(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{what} file not found; check the path (or create it with `coffer {}`)",
                if what == "identity" {
                    "key generate"
                } else {
                    "init"
                }
            )
        } else {
            e.to_string()
        },
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(RepoError::KeyFile {
            path: path.display().to_string(),
            reason: format!(
                "{what} file has mode {mode:04o}, readable by others; run `chmod 600 {}`",
                path.display()
            ),
        });
    }
    std::fs::read(path).map_err(|e| io_err(path, e))
}

fn read_secret_file(path: &Path, what: &str) -> Result<String, RepoError> {
    String::from_utf8(read_secret_bytes(path, what)?).map_err(|_| RepoError::KeyFile {
        path: path.display().to_string(),
        reason: format!("{what} file is not text"),
    })
}

/// Creates a new file with mode 0600; refuses to overwrite an existing one.
fn write_secret_file(path: &Path, data: &[u8]) -> Result<(), RepoError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io_err(path, e))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                RepoError::KeyFile {
                    path: path.display().to_string(),
                    reason: "file exists; refusing to overwrite a key (move it away first)".into(),
                }
            } else {
                io_err(path, e)
            }
        })?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(path, e))
}

/// What one reader of the repository can do.
pub struct Keys {
    pub id_key: [u8; 32],
    /// Operator recipients: content is sealed to these only.
    pub recipients: Vec<x25519::Recipient>,
    /// The agent's own recipient: bookkeeping is sealed to it as well.
    pub agent_recipient: x25519::Recipient,
    pub agent_identity: Option<x25519::Identity>,
    pub operator: Option<OperatorIdentity>,
}

/// Who may open a sealed object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The operator only: file contents and file names.
    Operator,
    /// The operator and the agent: bookkeeping (index, trailers, refs, snapshots).
    Both,
}

impl Keys {
    pub fn from_agent_key(k: &AgentKey) -> Keys {
        Keys {
            id_key: k.id_key,
            recipients: k.recipients.clone(),
            agent_recipient: k.agent_identity.to_public(),
            agent_identity: Some(k.agent_identity.clone()),
            operator: None,
        }
    }

    pub fn is_operator(&self) -> bool {
        self.operator.is_some()
    }

    /// Keyed BLAKE3: blob ids that the storage provider cannot recompute.
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// Keyed hash naming index and snapshot objects (same key, distinct inputs).
    pub fn object_hash(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// Seed for the chunker's gear table, so chunk boundaries do not reveal content.
    pub fn chunker_seed(&self) -> u64 {
        let k = blake3::derive_key("coffer v1 chunker gear seed", &self.id_key);
        u64::from_le_bytes(k[..8].try_into().unwrap_or([0; 8]))
    }

    /// Encrypts to the audience's recipients: a standard age file.
    pub fn seal(&self, audience: Audience, plaintext: &[u8]) -> Vec<u8> {
        let mut rs: Vec<&dyn age::Recipient> = self
            .recipients
            .iter()
            .map(|r| r as &dyn age::Recipient)
            .collect();
        if audience == Audience::Both {
            rs.push(&self.agent_recipient);
        }
        // Recipients are valid X25519 keys, so encryption to them cannot fail,
        // and writing to a Vec cannot fail either.
        let enc = age::Encryptor::with_recipients(rs.into_iter()).expect("valid recipients");
        let mut out = Vec::with_capacity(plaintext.len() + 256);
        let mut w = enc.wrap_output(&mut out).expect("write to Vec");
        w.write_all(plaintext).expect("write to Vec");
        w.finish().expect("write to Vec");
        out
    }

    /// Decrypts an age file with whatever identities this reader holds.
    /// `what` names the object in errors.
    pub fn open(&self, ciphertext: &[u8], what: &str) -> Result<Vec<u8>, RepoError> {
        let mut ids: Vec<&dyn age::Identity> = Vec::new();
        if let Some(op) = &self.operator {
            ids.extend(op.identities.iter().map(|i| i as &dyn age::Identity));
        }
        if let Some(a) = &self.agent_identity {
            ids.push(a);
        }
        let dec = age::Decryptor::new_buffered(ciphertext).map_err(|e| RepoError::Corrupt {
            object: what.to_string(),
            reason: format!("not a valid age file: {e}"),
        })?;
        let mut r = dec.decrypt(ids.into_iter()).map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => {
                if self.operator.is_none() {
                    RepoError::NeedIdentity {
                        what: what.to_string(),
                    }
                } else {
                    RepoError::WrongKey {
                        what: what.to_string(),
                    }
                }
            }
            other => RepoError::Corrupt {
                object: what.to_string(),
                reason: format!("decryption failed: {other}"),
            },
        })?;
        // The plaintext is shorter than the ciphertext: one allocation, no regrowth.
        let mut out = Vec::with_capacity(ciphertext.len());
        r.read_to_end(&mut out).map_err(|e| RepoError::Corrupt {
            object: what.to_string(),
            reason: format!("authentication failed: {e}"),
        })?;
        Ok(out)
    }
}
