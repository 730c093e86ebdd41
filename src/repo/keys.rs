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
use std::path::{Path, PathBuf};
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
        Ok(Self::load_keeping_passphrase(path, passphrase)?.0)
    }

    /// As [`OperatorIdentity::load`], and returns the passphrase that opened
    /// it (`None` for a plain file), so the signing key beside it, protected
    /// with the same passphrase, opens without asking twice.
    pub fn load_keeping_passphrase(
        path: &Path,
        passphrase: &dyn Fn() -> Result<String, RepoError>,
    ) -> Result<(OperatorIdentity, Option<String>), RepoError> {
        let raw = read_secret_bytes(path, "identity")?;
        let bad = |reason: String| RepoError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let (text, pass) = open_secret_text(path, raw, passphrase, "identity")?;
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
        Ok((OperatorIdentity { identities }, pass))
    }

    /// Writes a new identity file, optionally protected with a passphrase,
    /// and its signing key beside it (see [`SigningKey`]).
    pub fn generate(
        path: &Path,
        passphrase: Option<String>,
    ) -> Result<x25519::Recipient, RepoError> {
        Ok(Self::generate_with_signing_key(path, passphrase)?.0)
    }

    /// As [`OperatorIdentity::generate`], and returns the signing key's public half too.
    pub fn generate_with_signing_key(
        path: &Path,
        passphrase: Option<String>,
    ) -> Result<(x25519::Recipient, SignerKey), RepoError> {
        let signing_path = signing_key_path(path);
        // Both or neither: refuse before writing the identity.
        for p in [path, signing_path.as_path()] {
            if p.symlink_metadata().is_ok() {
                return Err(RepoError::KeyFile {
                    path: p.display().to_string(),
                    reason: "file exists; refusing to overwrite a key (move it away first)".into(),
                });
            }
        }
        let id = x25519::Identity::generate();
        let recipient = id.to_public();
        let text = format!(
            "# created: {}\n# public key: {}\n{}\n",
            crate::time::rfc3339_secs(jiff::Timestamp::now()),
            recipient,
            id.to_string().expose_secret()
        );
        write_secret_file(path, &seal_secret_text(path, &text, passphrase.as_deref())?)?;
        let signing = SigningKey::generate();
        signing.save(&signing_path, passphrase.as_deref())?;
        Ok((recipient, signing.public()))
    }
}

/// Decrypts a passphrase-protected secret file (an age scrypt file), or
/// takes a plain one as it is; returns its text and the passphrase used.
fn open_secret_text(
    path: &Path,
    raw: Vec<u8>,
    passphrase: &dyn Fn() -> Result<String, RepoError>,
    what: &str,
) -> Result<(String, Option<String>), RepoError> {
    let bad = |reason: String| RepoError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    if !raw.starts_with(b"age-encryption.org/") {
        let text = String::from_utf8(raw)
            .map_err(|_| bad(format!("not an age {what} file (not text)")))?;
        return Ok((text, None));
    }
    let pass = passphrase()?;
    let mut id = age::scrypt::Identity::new(pass.clone().into());
    // age bounds the work it accepts by a timing of this machine taken now:
    // on a busy one that bound falls below what the file was sealed with.
    // A floor keeps every file coffer seals (SCRYPT_LOG_N) and stock `age -p`
    // files readable however busy the machine is.
    id.set_max_work_factor(SCRYPT_MAX_LOG_N);
    let dec = age::Decryptor::new_buffered(&raw[..])
        .map_err(|e| bad(format!("not a readable age file: {e}")))?;
    let mut r = dec
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::ExcessiveWork { required, .. } => bad(format!(
                "its passphrase protection asks for 2^{required} scrypt work, more than coffer accepts (2^{SCRYPT_MAX_LOG_N}); seal it again with `age -p` on this machine"
            )),
            _ => bad("wrong passphrase (set COFFER_PASSPHRASE or type it at the prompt)".into()),
        })?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|e| bad(format!("cannot decrypt: {e}")))?;
    let text = String::from_utf8(out).map_err(|_| bad(format!("decrypted {what} is not text")))?;
    Ok((text, Some(pass)))
}

/// The scrypt work (log2 N) coffer seals passphrase-protected files with:
/// age's usual target, about a second and 256 MiB, fixed rather than timed
/// so that the same file opens on a slower or busier machine.
const SCRYPT_LOG_N: u8 = 18;
/// The most scrypt work a passphrase-protected file may ask for (1 GiB).
const SCRYPT_MAX_LOG_N: u8 = 20;

/// A secret file's bytes: the text itself, or with a passphrase an age
/// scrypt file (as `age -p` writes), which the stock `age -d` opens.
fn seal_secret_text(
    path: &Path,
    text: &str,
    passphrase: Option<&str>,
) -> Result<Vec<u8>, RepoError> {
    let Some(p) = passphrase else {
        return Ok(text.as_bytes().to_vec());
    };
    let mut recipient = age::scrypt::Recipient::new(p.to_string().into());
    recipient.set_work_factor(SCRYPT_LOG_N);
    let enc = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| io_err(path, std::io::Error::other(e.to_string())))?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).map_err(|e| io_err(path, e))?;
    w.write_all(text.as_bytes()).map_err(|e| io_err(path, e))?;
    w.finish().map_err(|e| io_err(path, e))?;
    Ok(out)
}

/// The file beside an identity that holds its signing key.
pub fn signing_key_path(identity: &Path) -> PathBuf {
    beside(identity, ".sign")
}

/// The file beside an identity that lists the other operators' signing keys
/// its reader trusts (one `name public-key` a line).
pub fn signers_path(identity: &Path) -> PathBuf {
    beside(identity, ".signers")
}

fn beside(identity: &Path, suffix: &str) -> PathBuf {
    let mut name = identity.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The tag of a signing key's secret line, and of its public text form.
const SIGNING_KEY_TAG: &str = "COFFER-SIGNING-KEY-ED25519";
const SIGNER_KEY_PREFIX: &str = "ed25519:";

/// An operator's public signing key (ed25519), written `ed25519:<64 hex>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignerKey(ed25519_dalek::VerifyingKey);

impl SignerKey {
    /// Parses the text form; `None` if it is not one.
    pub fn parse(text: &str) -> Option<SignerKey> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.strip_prefix(SIGNER_KEY_PREFIX)?, &mut bytes).ok()?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .ok()
            .map(SignerKey)
    }

    /// Whether `signature` is this key's over `message` (strict: no
    /// malleable or small-order forms).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok()
    }
}

impl std::fmt::Display for SignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SIGNER_KEY_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

/// The operator's signing key: signs the audit events of the commands that
/// hold the identity, so that events the agent can also seal (it holds the
/// recipients) are told apart. Kept in `<identity>.sign`, mode 0600: a text
/// file, or, when the identity has a passphrase, an age scrypt file with the
/// same passphrase (docs/FORMAT.md, "Key files").
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    pub fn generate() -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&rand::random()))
    }

    pub fn public(&self) -> SignerKey {
        SignerKey(self.0.verifying_key())
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.0.sign(message).to_bytes()
    }

    fn to_text(&self) -> String {
        format!(
            "# coffer signing key: signs this operator's audit events.\n\
             # Keep it beside the identity and as secret (mode 0600).\n\
             # public key: {}\n{SIGNING_KEY_TAG} {}\n",
            self.public(),
            hex::encode(self.0.to_bytes())
        )
    }

    /// Parses the text form; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<SigningKey, RepoError> {
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        let mut seed = [0u8; 32];
        let found = match (lines.next(), lines.next()) {
            (Some(line), None) => line
                .strip_prefix(SIGNING_KEY_TAG)
                .map(str::trim)
                .is_some_and(|h| hex::decode_to_slice(h, &mut seed).is_ok()),
            _ => false,
        };
        if !found {
            return Err(RepoError::KeyFile {
                path: origin.to_string(),
                reason: format!(
                    "not a coffer signing key (one `{SIGNING_KEY_TAG} <64 hex>` line expected); \
                     move it away and run `coffer key add-signing --identity IDENTITY` for a new one"
                ),
            });
        }
        Ok(SigningKey(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Writes a new signing key file (mode 0600; refuses to overwrite one),
    /// sealed with `passphrase` when given.
    pub fn save(&self, path: &Path, passphrase: Option<&str>) -> Result<(), RepoError> {
        let text = self.to_text();
        write_secret_file(path, &seal_secret_text(path, &text, passphrase)?)
    }

    /// Loads a signing key file; `None` when there is none. `passphrase`
    /// is asked only for a protected one.
    pub fn load(
        path: &Path,
        passphrase: &dyn Fn() -> Result<String, RepoError>,
    ) -> Result<Option<SigningKey>, RepoError> {
        let bad = |reason: String| RepoError::KeyFile {
            path: path.display().to_string(),
            reason: format!(
                "{reason}; make it the file `coffer key add-signing` writes (move this away first)"
            ),
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(format!("cannot read the signing key: {e}"))),
            Ok(m) if !m.is_file() => return Err(bad("the signing key is not a file".into())),
            Ok(_) => {}
        }
        let raw = read_secret_bytes(path, "signing key")?;
        let (text, _) = open_secret_text(path, raw, passphrase, "signing key")?;
        SigningKey::parse(&text, &path.display().to_string()).map(Some)
    }
}

/// The signing keys whose audit events a reader takes as an operator's:
/// the key beside its own identity (named `self`) and those it lists in
/// `<identity>.signers`. Nothing in the repository can add to it.
#[derive(Clone, Debug, Default)]
pub struct TrustedSigners {
    keys: Vec<(String, SignerKey)>,
}

/// The name the reader's own signing key goes by.
pub const OWN_SIGNER: &str = "self";

impl TrustedSigners {
    pub fn new(own: Option<SignerKey>) -> TrustedSigners {
        TrustedSigners {
            keys: own
                .map(|k| (OWN_SIGNER.to_string(), k))
                .into_iter()
                .collect(),
        }
    }

    /// Adds the keys of a signers list: `name public-key` a line, `#`
    /// comments and blank lines allowed. `origin` names the file in errors.
    pub fn add_list(&mut self, text: &str, origin: &str) -> Result<(), RepoError> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(key), None) = (words.next(), words.next(), words.next()) else {
                return Err(RepoError::KeyFile {
                    path: origin.to_string(),
                    reason: format!(
                        "line {}: expected `name ed25519:<64 hex>` (what `coffer key signer` prints)",
                        n + 1
                    ),
                });
            };
            let key = SignerKey::parse(key).ok_or_else(|| RepoError::KeyFile {
                path: origin.to_string(),
                reason: format!(
                    "line {}: {key:?} is not a signing public key (ed25519:<64 hex>, what `coffer key signer` prints)",
                    n + 1
                ),
            })?;
            self.keys.push((name.to_string(), key));
        }
        Ok(())
    }

    /// The reader's own key and `<identity>.signers` if it exists. The list
    /// is a trust anchor: one that others can write is refused.
    pub fn load(identity: &Path, own: Option<SignerKey>) -> Result<TrustedSigners, RepoError> {
        let mut trusted = TrustedSigners::new(own);
        let path = signers_path(identity);
        let meta = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(trusted),
            other => other.map_err(|e| io_err(&path, e))?,
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(RepoError::KeyFile {
                path: path.display().to_string(),
                reason: format!(
                    "signers list has mode {mode:04o}, writable by others; run `chmod go-w {}`",
                    path.display()
                ),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
        trusted.add_list(&text, &path.display().to_string())?;
        Ok(trusted)
    }

    /// The name a trusted key goes by; `None` if it is not trusted.
    pub fn name_of(&self, key: &SignerKey) -> Option<&str> {
        self.keys
            .iter()
            .find(|(_, k)| k == key)
            .map(|(n, _)| n.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
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
                match what {
                    "identity" => "key generate",
                    "signing key" => "key add-signing",
                    _ => "init",
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
        open_with(ids, self.operator.is_some(), ciphertext, what)
    }
}

/// Decrypts an age file with `ids`; `operator` says whether they include
/// the operator's (which decides the error when none matches).
pub fn open_with(
    ids: Vec<&dyn age::Identity>,
    operator: bool,
    ciphertext: &[u8],
    what: &str,
) -> Result<Vec<u8>, RepoError> {
    let dec = age::Decryptor::new_buffered(ciphertext).map_err(|e| RepoError::Corrupt {
        object: what.to_string(),
        reason: format!("not a valid age file: {e}"),
    })?;
    let mut r = dec.decrypt(ids.into_iter()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => {
            if !operator {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_passphrase() -> Result<String, RepoError> {
        panic!("no passphrase should be asked for")
    }

    #[test]
    fn a_signing_key_reads_back_from_its_text() {
        let key = SigningKey::generate();
        let text = key.to_text();
        assert!(text.contains(&key.public().to_string()), "{text}");
        let back = SigningKey::parse(&text, "k").unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(back.sign(b"m"), key.sign(b"m"));
    }

    #[test]
    fn garbage_is_not_a_signing_key_and_the_error_says_the_fix() {
        let key = SigningKey::generate().to_text();
        let two = format!("{key}{}", SigningKey::generate().to_text());
        for text in [
            "",
            "hello",
            "COFFER-SIGNING-KEY-ED25519 abcd",
            "AGE-SECRET-KEY-1QQQ",
            two.as_str(),
        ] {
            let err = SigningKey::parse(text, "/x/op.key.sign")
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains("/x/op.key.sign"), "{err}");
            assert!(err.contains("coffer key add-signing"), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn a_public_key_reads_back_from_its_text() {
        let public = SigningKey::generate().public();
        let text = public.to_string();
        assert!(
            text.starts_with("ed25519:") && text.len() == 8 + 64,
            "{text}"
        );
        assert_eq!(SignerKey::parse(&text), Some(public));
        assert_eq!(SignerKey::parse(&text[8..]), None);
        assert_eq!(SignerKey::parse("ed25519:00"), None);
        assert_eq!(SignerKey::parse(&text.replace("ed25519:", "x25519:")), None);
    }

    #[test]
    fn a_signers_list_names_its_keys_and_rejects_a_bad_line_by_number() {
        let (a, b) = (
            SigningKey::generate().public(),
            SigningKey::generate().public(),
        );
        let mut trusted = TrustedSigners::new(None);
        assert!(trusted.is_empty());
        trusted
            .add_list(&format!("# the team\n\nalice {a}\n  bob\t{b}  \n"), "s")
            .unwrap();
        assert_eq!(trusted.name_of(&a), Some("alice"));
        assert_eq!(trusted.name_of(&b), Some("bob"));
        assert_eq!(trusted.name_of(&SigningKey::generate().public()), None);
        for (list, line) in [
            (format!("alice {a}\ncarol\n"), "line 2"),
            (format!("alice {a} extra"), "line 1"),
            ("# x\ncarol age1xyz".to_string(), "line 2"),
        ] {
            let err = TrustedSigners::new(None)
                .add_list(&list, "/x/op.key.signers")
                .err()
                .unwrap()
                .to_string();
            assert!(
                err.contains("/x/op.key.signers") && err.contains(line),
                "{err}"
            );
        }
    }

    #[test]
    fn the_own_key_is_trusted_as_self() {
        let own = SigningKey::generate().public();
        assert_eq!(
            TrustedSigners::new(Some(own)).name_of(&own),
            Some(OWN_SIGNER)
        );
    }

    #[test]
    fn key_files_sit_beside_the_identity() {
        let id = Path::new("/keys/operator.key");
        assert_eq!(signing_key_path(id), Path::new("/keys/operator.key.sign"));
        assert_eq!(signers_path(id), Path::new("/keys/operator.key.signers"));
    }

    #[test]
    fn a_signing_key_file_saves_with_mode_0600_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op.key.sign");
        assert!(SigningKey::load(&path, &no_passphrase).unwrap().is_none());
        let key = SigningKey::generate();
        key.save(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = SigningKey::load(&path, &no_passphrase).unwrap().unwrap();
        assert_eq!(back.public(), key.public());
        // Never overwritten.
        let err = SigningKey::generate()
            .save(&path, None)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("refusing to overwrite"), "{err}");
        // Readable by others: refused, with the fix.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::load(&path, &no_passphrase)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_protected_signing_key_opens_only_with_its_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op.key.sign");
        let key = SigningKey::generate();
        key.save(&path, Some("correct horse")).unwrap();
        let raw = std::fs::read(&path).unwrap();
        assert!(raw.starts_with(b"age-encryption.org/"), "an age file");
        let back = SigningKey::load(&path, &|| Ok("correct horse".into()))
            .unwrap()
            .unwrap();
        assert_eq!(back.public(), key.public());
        let err = SigningKey::load(&path, &|| Ok("wrong".into()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("wrong passphrase"), "{err}");
    }

    #[test]
    fn generate_refuses_when_a_signing_key_is_in_the_way_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("op.key");
        std::fs::write(signing_key_path(&id), b"x").unwrap();
        let err = OperatorIdentity::generate(&id, None)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("op.key.sign") && err.contains("refusing"),
            "{err}"
        );
        assert!(!id.exists());
    }

    /// Sealed at a fixed work factor, so a busier or slower machine opens
    /// it; a file asking for more than coffer accepts says so, and is not
    /// taken for a wrong passphrase.
    #[test]
    fn passphrase_work_is_fixed_and_an_excessive_one_is_named() {
        let path = Path::new("op.key");
        let sealed = seal_secret_text(path, "secret", Some("pw")).unwrap();
        let header = String::from_utf8_lossy(&sealed[..120]).to_string();
        assert!(header.contains(&format!(" {SCRYPT_LOG_N}\n")), "{header}");
        let b64 = |n: usize| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(vec![7u8; n])
        };
        let greedy = format!(
            "age-encryption.org/v1\n-> scrypt {} {}\n{}\n--- {}\n",
            b64(16),
            SCRYPT_MAX_LOG_N + 1,
            b64(32),
            b64(32)
        );
        let mut raw = greedy.into_bytes();
        raw.extend_from_slice(&[0u8; 64]);
        let err = open_secret_text(path, raw, &|| Ok("pw".into()), "identity")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("scrypt work"), "{err}");
        assert!(!err.contains("wrong passphrase"), "{err}");
    }
}
