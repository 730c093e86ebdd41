//! Audit events: one `audit/<id>` object per operator action (restore,
//! export, erase, key export), so the record travels with the repository and
//! survives the loss of any catalog. Sealed to the operator only: the detail
//! can name paths and targets, which the agent must not learn. Written with
//! the storage's create-only write and never rewritten or deleted by coffer
//! (prune and forget touch only `data/`, `index/` and `snapshots/`).
//!
//! Stored form: `age(operator, zstd(JSON))`, named by the keyed BLAKE3 of the
//! JSON like the other bookkeeping objects.
//!
//! The agent holds the recipients, so it can seal an event too: an event is
//! the operator's only when it carries a valid signature by a signing key the
//! reader trusts ([`verify`]). The envelope: the JSON's last two members are
//! `signer` (`ed25519:<hex>`) and `signature` (128 hex), and the signature is
//! over [`SIGNING_CONTEXT`] followed by the stored JSON with its final
//! `,"signature":"…"` member cut off (the `}` kept). Events from before
//! signing have neither field and read as unsigned.

use super::keys::{Audience, SignerKey, SigningKey, TrustedSigners};
use super::{RepoError, Repository};
use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The storage prefix of audit events.
pub const PREFIX: &str = "audit/";

/// One recorded action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// When it happened (UTC).
    #[serde(with = "crate::time::serde_rfc3339")]
    pub time: Timestamp,
    /// Who: `user@host`.
    pub actor: String,
    /// What: `restore`, `export`, `erase`, `key-export`, ...
    pub action: String,
    /// Which snapshot, target, globs, and counts, in words.
    pub detail: String,
    /// The public key that signed it (`ed25519:<64 hex>`); absent on
    /// unsigned events and on every event written before signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signature (128 hex), always the last member (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// What a signature's message starts with, so that no other use of the key
/// can yield a valid event signature.
pub const SIGNING_CONTEXT: &[u8] = b"coffer audit event v1\n";

/// The suffix the signature member makes of the stored JSON.
const SIGNATURE_MEMBER: &[u8] = b",\"signature\":\"";

impl AuditEvent {
    /// The JSON to store: unsigned without `key`, else with `signer` and
    /// `signature` (any the event carries are replaced).
    pub fn to_json(&self, key: Option<&SigningKey>) -> Vec<u8> {
        let mut event = self.clone();
        event.signature = None;
        event.signer = key.map(|k| k.public().to_string());
        // Serialising strings and a time cannot fail.
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let Some(key) = key else {
            return body;
        };
        event.signature = Some(hex::encode(key.sign(&signed_message(&body))));
        serde_json::to_vec(&event).unwrap_or_default()
    }
}

/// The bytes a signature covers, given the JSON it was made over (the
/// stored JSON without its `signature` member).
fn signed_message(body: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, body].concat()
}

/// The stored JSON without its final `,"signature":"<128 hex>"` member, and
/// the signature; `None` if the JSON does not end that way.
fn split_signature(json: &[u8]) -> Option<(Vec<u8>, [u8; 64])> {
    let tail_len = SIGNATURE_MEMBER.len() + 128 + 2;
    let cut = json.len().checked_sub(tail_len)?;
    let (head, tail) = json.split_at(cut);
    let hex_sig = tail.strip_prefix(SIGNATURE_MEMBER)?.strip_suffix(b"\"}")?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(hex_sig, &mut sig).ok()?;
    Some(([head, b"}"].concat(), sig))
}

/// Whose an audit event is, as its reader can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Signed {
    /// A valid signature by a key the reader trusts.
    #[serde(rename = "operator")]
    Operator,
    /// No signature: anyone who holds the recipients (the agent too) could
    /// have written it, as could every coffer before signing.
    #[serde(rename = "unsigned")]
    Unsigned,
    /// A signature that does not verify, or a malformed envelope.
    #[serde(rename = "bad signature")]
    BadSignature,
    /// A valid signature by a key the reader does not trust.
    #[serde(rename = "unknown signer")]
    UnknownSigner,
}

/// Checks an event against the exact JSON it was read from. Returns the
/// verdict and who signed: the trusted name, or the key as written.
pub fn verify(
    json: &[u8],
    event: &AuditEvent,
    trusted: &TrustedSigners,
) -> (Signed, Option<String>) {
    let (signer_text, signature) = match (&event.signer, &event.signature) {
        (None, None) => return (Signed::Unsigned, None),
        (Some(s), Some(sig)) => (s, sig),
        (s, _) => return (Signed::BadSignature, s.clone()),
    };
    let bad = (Signed::BadSignature, Some(signer_text.clone()));
    let (Some(signer), Some((body, sig))) = (SignerKey::parse(signer_text), split_signature(json))
    else {
        return bad;
    };
    // The cut must leave the same event without its signature: the suffix
    // matched above is then the signature member, nothing else.
    let same = serde_json::from_slice::<AuditEvent>(&body).is_ok_and(|b| {
        b.signature.is_none()
            && hex::encode(sig) == *signature
            && AuditEvent {
                signature: None,
                ..event.clone()
            } == b
    });
    if !same || !signer.verify(&signed_message(&body), &sig) {
        return bad;
    }
    match trusted.name_of(&signer) {
        Some(name) => (Signed::Operator, Some(name.to_string())),
        None => (Signed::UnknownSigner, Some(signer_text.clone())),
    }
}

/// An audit object in storage, before it is read.
#[derive(Clone, Debug)]
pub struct AuditObject {
    pub key: String,
    pub id: [u8; 32],
    /// When storage says it was written (an event is never newer than this).
    pub modified: Option<Timestamp>,
}

fn id_from_key(key: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(key.strip_prefix(PREFIX)?, &mut out).ok()?;
    Some(out)
}

impl Repository {
    /// Records an event, signed with `key` if given (create-only: an
    /// identical event already stored is left as it is). Needs only the
    /// operator recipients, not the identity.
    pub fn write_audit(
        &self,
        event: &AuditEvent,
        key: Option<&SigningKey>,
    ) -> Result<String, RepoError> {
        let json = event.to_json(key);
        if json.len() as u64 > super::limits::AUDIT_JSON {
            return Err(RepoError::TooLarge {
                what: super::limits::AUDIT.what.into(),
                size: json.len() as u64,
                max: super::limits::AUDIT_JSON,
            });
        }
        let id = self.keys.object_hash(&json);
        let compressed = zstd::bulk::compress(&json, 3).unwrap_or_default();
        let sealed = self.keys.seal(Audience::Operator, &compressed);
        let key = format!("{PREFIX}{}", hex::encode(id));
        self.store.create(&key, Bytes::from(sealed))?;
        Ok(key)
    }

    /// The audit objects in storage (one listing; nothing is decrypted).
    pub fn list_audit(&self) -> Result<Vec<AuditObject>, RepoError> {
        Ok(self
            .store
            .list(PREFIX)?
            .into_iter()
            .filter_map(|o| {
                Some(AuditObject {
                    id: id_from_key(&o.key)?,
                    key: o.key,
                    modified: o.modified,
                })
            })
            .collect())
    }

    /// Reads one event (operator only), checked against its name; with the
    /// JSON as stored, which [`verify`] checks the signature over.
    pub fn read_audit(&self, object: &AuditObject) -> Result<(AuditEvent, Vec<u8>), RepoError> {
        let json = self.get_json(&object.key, &object.id)?;
        let event = super::parse_object(&object.key, &json)?;
        Ok((event, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::keys::OWN_SIGNER;

    fn event() -> AuditEvent {
        AuditEvent {
            time: crate::time::parse("2026-05-01T10:00:00.5Z").unwrap(),
            actor: "op@h".into(),
            action: "restore".into(),
            detail: "snapshot 1a2b to /tmp/r \"quoted\" \u{e9}".into(),
            signer: None,
            signature: None,
        }
    }

    fn parse(json: &[u8]) -> AuditEvent {
        serde_json::from_slice(json).unwrap()
    }

    #[test]
    fn a_signed_event_is_the_operators_for_a_reader_who_trusts_its_key() {
        let key = SigningKey::generate();
        let json = event().to_json(Some(&key));
        let read = parse(&json);
        assert_eq!(read.signer, Some(key.public().to_string()));
        let trusted = TrustedSigners::new(Some(key.public()));
        assert_eq!(
            verify(&json, &read, &trusted),
            (Signed::Operator, Some(OWN_SIGNER.to_string()))
        );
        // The same event for a reader who does not trust the key.
        assert_eq!(
            verify(&json, &read, &TrustedSigners::default()),
            (Signed::UnknownSigner, Some(key.public().to_string()))
        );
    }

    #[test]
    fn the_signature_covers_the_stored_json_without_its_signature_member() {
        let key = SigningKey::generate();
        let json = event().to_json(Some(&key));
        let (body, sig) = split_signature(&json).unwrap();
        // The body is the event with its signer and without a signature,
        // byte for byte as serialised, and ends the object where the
        // signature member began.
        let mut unsigned = event();
        unsigned.signer = Some(key.public().to_string());
        assert_eq!(body, serde_json::to_vec(&unsigned).unwrap());
        assert!(json.starts_with(&body[..body.len() - 1]));
        let tail = &json[body.len() - 1..];
        assert_eq!(
            tail,
            format!(",\"signature\":\"{}\"}}", hex::encode(sig)).as_bytes()
        );
        let mut message = SIGNING_CONTEXT.to_vec();
        message.extend_from_slice(&body);
        assert!(key.public().verify(&message, &sig));
        // Without the context the signature is not valid: it is bound to this use.
        assert!(!key.public().verify(&body, &sig));
    }

    #[test]
    fn an_event_from_before_signing_reads_and_writes_back_the_same_and_is_unsigned() {
        let old = br#"{"time":"2026-05-01T10:00:00.500Z","actor":"op@h","action":"restore","detail":"x"}"#;
        let ev = parse(old);
        assert_eq!(
            (ev.signer.as_deref(), ev.signature.as_deref()),
            (None, None)
        );
        assert_eq!(ev.to_json(None), old.to_vec());
        let trusted = TrustedSigners::new(Some(SigningKey::generate().public()));
        assert_eq!(verify(old, &ev, &trusted), (Signed::Unsigned, None));
    }

    #[test]
    fn tampering_with_any_byte_that_is_signed_makes_a_bad_signature() {
        let key = SigningKey::generate();
        let trusted = TrustedSigners::new(Some(key.public()));
        let json = String::from_utf8(event().to_json(Some(&key))).unwrap();
        let sig = parse(json.as_bytes()).signature.unwrap();
        let flipped = format!(
            "{}{}",
            if sig.starts_with('0') { '1' } else { '0' },
            &sig[1..]
        );
        let cases = [
            // Another signature.
            json.replace(&sig, &flipped),
            // Another detail.
            json.replace("/tmp/r", "/tmp/x"),
            // Upper-case hex: decodes to the same bytes, but is not the stored form.
            json.replace(&sig, &sig.to_uppercase()),
        ];
        for tampered in cases {
            assert_ne!(tampered, json);
            let ev = parse(tampered.as_bytes());
            assert_eq!(
                verify(tampered.as_bytes(), &ev, &trusted).0,
                Signed::BadSignature,
                "{tampered}"
            );
        }
    }

    #[test]
    fn a_malformed_envelope_is_a_bad_signature_never_the_operators() {
        let key = SigningKey::generate();
        let trusted = TrustedSigners::new(Some(key.public()));
        let json = event().to_json(Some(&key));
        let signed = parse(&json);
        // The signature moved before the signer: same members, other bytes.
        let mut reordered = serde_json::Map::new();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        for k in ["signature", "time", "actor", "action", "detail", "signer"] {
            reordered.insert(k.into(), v[k].clone());
        }
        let moved = serde_json::to_vec(&reordered).unwrap();
        assert_eq!(parse(&moved), signed);
        assert_eq!(verify(&moved, &signed, &trusted).0, Signed::BadSignature);
        // A signer without a signature, a signature without a signer, a
        // signer that is not a key.
        let mut no_sig = signed.clone();
        no_sig.signature = None;
        let mut no_signer = signed.clone();
        no_signer.signer = None;
        let mut garbage = signed.clone();
        garbage.signer = Some("ed25519:zz".into());
        for ev in [no_sig, no_signer, garbage] {
            let bytes = serde_json::to_vec(&ev).unwrap();
            assert_eq!(
                verify(&bytes, &ev, &trusted).0,
                Signed::BadSignature,
                "{ev:?}"
            );
        }
    }

    #[test]
    fn a_valid_signature_under_another_key_claiming_a_trusted_signer_is_bad() {
        let ours = SigningKey::generate();
        let theirs = SigningKey::generate();
        let trusted = TrustedSigners::new(Some(ours.public()));
        let json = String::from_utf8(event().to_json(Some(&theirs))).unwrap();
        let forged = json.replace(&theirs.public().to_string(), &ours.public().to_string());
        let ev = parse(forged.as_bytes());
        assert_eq!(ev.signer, Some(ours.public().to_string()));
        assert_eq!(
            verify(forged.as_bytes(), &ev, &trusted).0,
            Signed::BadSignature
        );
    }

    #[test]
    fn keys_name_their_ids() {
        let id = [0xab; 32];
        let key = format!("{PREFIX}{}", hex::encode(id));
        assert_eq!(id_from_key(&key), Some(id));
        assert_eq!(id_from_key("audit/xyz"), None);
        assert_eq!(id_from_key("snapshots/00"), None);
    }
}
