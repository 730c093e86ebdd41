//! Signed audit events: the operator's signing key sits beside the identity
//! (`IDENTITY.sign`), every operator event is signed with it, and `coffer
//! audit` shows an event no trusted key signed apart, as not the operator's:
//! the agent holds the recipients, so it can seal an event as well as anyone.

use crate::env::{TestEnv, str_field, write_file};
use coffer::repo::audit::AuditEvent;
use coffer::repo::keys::{AgentKey, Audience, Keys, OperatorIdentity, SigningKey};
use serde_json::Value;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const HEADING: &str = "NOT THE OPERATOR'S";

fn sign_path(identity: &Path) -> PathBuf {
    let mut p = identity.as_os_str().to_owned();
    p.push(".sign");
    PathBuf::from(p)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// `audit --json`, which must exit 0 whatever it finds.
fn events(env: &TestEnv) -> Vec<Value> {
    let out = env.operator(["audit", "--json"]);
    out.expect_ok();
    out.json().as_array().cloned().unwrap_or_default()
}

fn with_detail<'a>(events: &'a [Value], needle: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| str_field(e, "detail").contains(needle))
        .collect();
    assert_eq!(found.len(), 1, "one event with {needle:?}\n{events:#?}");
    found[0]
}

/// The text form, split at the heading of the events that are not the operator's.
fn text_sections(env: &TestEnv) -> (String, String) {
    let out = env.operator(["audit"]);
    out.expect_ok();
    match out.stdout.split_once(HEADING) {
        Some((ours, others)) => (ours.to_string(), others.to_string()),
        None => (out.stdout.clone(), String::new()),
    }
}

/// What an attacker on the server can do: seal any JSON to the operator
/// with the agent key and put it under `audit/`, named as coffer names it.
fn plant(env: &TestEnv, json: &[u8]) {
    let keys = Keys::from_agent_key(&AgentKey::load(&env.agent_key).unwrap());
    let sealed = keys.seal(Audience::Operator, &zstd::bulk::compress(json, 3).unwrap());
    let dir = env.repo.join("audit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(hex::encode(keys.object_hash(json))), sealed).unwrap();
}

/// The repository's audit objects as the operator reads them: (file, JSON).
fn stored_events(env: &TestEnv) -> Vec<(PathBuf, Vec<u8>)> {
    let mut keys = Keys::from_agent_key(&AgentKey::load(&env.agent_key).unwrap());
    keys.operator = Some(OperatorIdentity::load(&env.identity, &|| Ok(String::new())).unwrap());
    std::fs::read_dir(env.repo.join("audit"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let sealed = std::fs::read(&path).unwrap();
            let json = zstd::stream::decode_all(&keys.open(&sealed, "audit").unwrap()[..]).unwrap();
            (path, json)
        })
        .collect()
}

fn event_json(detail: &str) -> AuditEvent {
    AuditEvent {
        time: jiff::Timestamp::now(),
        actor: "operator@laptop".into(),
        action: "restore".into(),
        detail: detail.into(),
        signer: None,
        signature: None,
    }
}

#[test]
fn key_generate_writes_the_identity_and_its_signing_key_with_mode_0600() {
    let env = TestEnv::new();
    let id = env.path("keys/op.key");
    let out = env.run([
        OsStr::new("key"),
        "generate".as_ref(),
        "--json".as_ref(),
        "--output".as_ref(),
        id.as_os_str(),
    ]);
    out.expect_ok();
    let v = out.json();
    let sign = sign_path(&id);
    assert_eq!(str_field(&v, "signing_key"), sign.to_str().unwrap(), "{v}");
    assert_eq!((mode(&id), mode(&sign)), (0o600, 0o600));
    let text = std::fs::read_to_string(&sign).unwrap();
    assert!(text.contains("COFFER-SIGNING-KEY-ED25519 "), "{text}");
    // The printed public key is the file's, and `key signer` prints it too.
    let signer = str_field(&v, "signer");
    assert!(
        signer.starts_with("ed25519:") && text.contains(signer),
        "{v}\n{text}"
    );
    let printed = env.run([
        OsStr::new("key"),
        "signer".as_ref(),
        "--identity".as_ref(),
        id.as_os_str(),
    ]);
    printed.expect_ok();
    assert_eq!(printed.stdout.trim(), signer);
    // Generating again over either file is refused.
    std::fs::remove_file(&id).unwrap();
    let again = env.run([
        OsStr::new("key"),
        "generate".as_ref(),
        "--output".as_ref(),
        id.as_os_str(),
    ]);
    again.expect_failure().expect_short_stderr(1);
    again.expect_stderr_contains("op.key.sign");
    assert!(!id.exists(), "nothing written when refused");
    assert_eq!(std::fs::read_to_string(&sign).unwrap(), text);
}

#[test]
fn a_restore_is_signed_and_shows_as_the_operators() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src]);
    let target = env.path("restored");
    let out = env.restore_raw("latest", &target, &[]);
    out.expect_ok();
    assert!(
        !out.stderr.contains("signing key"),
        "no warning with a signing key\n{out}"
    );
    let all = events(&env);
    let e = with_detail(&all, "to ");
    assert_eq!(str_field(e, "action"), "restore");
    assert_eq!(str_field(e, "signed"), "operator", "{e}");
    assert_eq!(str_field(e, "signer"), "self", "{e}");
    // The stored JSON carries the signer and ends with the signature.
    let stored = stored_events(&env);
    assert_eq!(stored.len(), 1);
    let json = String::from_utf8(stored[0].1.clone()).unwrap();
    let signer = env.operator(["key", "signer"]);
    assert!(
        json.contains(&format!("\"signer\":\"{}\"", signer.stdout.trim())),
        "{json}"
    );
    assert!(
        json.rsplit_once(",\"signature\":\"")
            .is_some_and(|(_, s)| s.len() == 130)
    );
    let (ours, others) = text_sections(&env);
    assert!(ours.contains("restore"), "{ours}");
    assert!(others.is_empty(), "no events apart: {others}");
}

#[test]
fn events_no_trusted_key_signed_are_shown_apart_as_not_the_operators() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src]);
    env.restore_raw("latest", &env.path("restored"), &[])
        .expect_ok();
    let mut real = stored_events(&env);
    assert_eq!(real.len(), 1, "the restore's event");

    // 1. Sealed with the agent key, no signature: as an attacker would.
    plant(
        &env,
        &serde_json::to_vec(&event_json("planted: unsigned")).unwrap(),
    );
    // 2. Signed, by a key of the attacker's own.
    let mallory = SigningKey::generate();
    plant(
        &env,
        &event_json("planted: own key").to_json(Some(&mallory)),
    );
    // 3. The operator's real event with its signature altered (re-sealed
    //    and renamed, as an attacker with the plaintext would).
    let (path, json) = real.remove(0);
    let json = String::from_utf8(json).unwrap();
    let (head, sig) = json.rsplit_once(",\"signature\":\"").unwrap();
    let flipped = format!(
        "{head},\"signature\":\"{}{}",
        if sig.starts_with('0') { '1' } else { '0' },
        &sig[1..]
    );
    std::fs::remove_file(path).unwrap();
    plant(&env, flipped.as_bytes());

    let all = events(&env);
    assert_eq!(all.len(), 3, "{all:#?}");
    let unsigned = with_detail(&all, "planted: unsigned");
    assert_eq!(str_field(unsigned, "signed"), "unsigned");
    assert!(unsigned.get("signer").is_none(), "{unsigned}");
    let own = with_detail(&all, "planted: own key");
    assert_eq!(str_field(own, "signed"), "unknown signer");
    assert_eq!(str_field(own, "signer"), mallory.public().to_string());
    let tampered = with_detail(&all, "to ");
    assert_eq!(str_field(tampered, "signed"), "bad signature", "{tampered}");
    assert!(
        all.iter().all(|e| str_field(e, "signed") != "operator"),
        "{all:#?}"
    );

    let (ours, others) = text_sections(&env);
    assert!(
        !ours.contains("restore"),
        "nothing is the operator's: {ours}"
    );
    for (needle, why) in [
        ("planted: unsigned", "[unsigned]"),
        ("planted: own key", "[unknown signer ed25519:"),
        ("/restored include", "[bad signature]"),
    ] {
        let line = others
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} below the heading\n{others}"));
        assert!(line.contains(why), "{line}");
    }

    // A team: the operator lists another operator's key; its events are
    // then the operator's, named.
    let signers = {
        let mut p = env.identity.as_os_str().to_owned();
        p.push(".signers");
        PathBuf::from(p)
    };
    write_file(
        &signers,
        format!("# team\nmallory {}\n", mallory.public()).as_bytes(),
    );
    let all = events(&env);
    let listed = with_detail(&all, "planted: own key");
    assert_eq!(
        (str_field(listed, "signed"), str_field(listed, "signer")),
        ("operator", "mallory")
    );
    let (ours, others) = text_sections(&env);
    assert!(ours.contains("(signed by mallory)"), "{ours}");
    assert!(!others.contains("planted: own key"), "{others}");
    assert!(others.contains("planted: unsigned"), "{others}");

    // A list others can write is no trust anchor: refused, with the fix.
    std::fs::set_permissions(&signers, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env.operator(["audit"]);
    out.expect_failure().expect_short_stderr(1);
    out.expect_stderr_contains(".signers");
    out.expect_stderr_contains("chmod go-w");
    std::fs::set_permissions(&signers, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_file(&signers, b"mallory age1notakey\n");
    let out = env.operator(["audit"]);
    out.expect_failure().expect_short_stderr(1);
    out.expect_stderr_contains("line 1");
}

#[test]
fn an_identity_without_a_signing_key_records_unsigned_until_add_signing() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src]);
    // An identity from before signing.
    let sign = sign_path(&env.identity);
    std::fs::remove_file(&sign).unwrap();
    let out = env.restore_raw("latest", &env.path("r1"), &[]);
    out.expect_ok();
    let warnings: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("signing key"))
        .collect();
    assert_eq!(warnings.len(), 1, "one line\n{out}");
    assert!(
        warnings[0].contains("unsigned") && warnings[0].contains("coffer key add-signing"),
        "{out}"
    );
    let all = events(&env);
    assert_eq!(
        str_field(with_detail(&all, "/r1 include"), "signed"),
        "unsigned"
    );

    let added = env.operator(["key", "add-signing", "--json"]);
    added.expect_ok();
    let v = added.json();
    assert_eq!(str_field(&v, "signing_key"), sign.to_str().unwrap());
    assert_eq!(mode(&sign), 0o600);
    let text = std::fs::read_to_string(&sign).unwrap();
    assert!(text.contains(str_field(&v, "signer")), "{text}");
    // Never overwritten.
    let again = env.operator(["key", "add-signing"]);
    again.expect_failure().expect_short_stderr(1);
    again.expect_stderr_contains("refusing to overwrite");
    assert_eq!(std::fs::read_to_string(&sign).unwrap(), text);

    let out = env.restore_raw("latest", &env.path("r2"), &[]);
    out.expect_ok();
    assert!(!out.stderr.contains("signing key"), "{out}");
    let all = events(&env);
    assert_eq!(
        str_field(with_detail(&all, "/r2 include"), "signed"),
        "operator"
    );
    // The earlier event stays unsigned: signing is not retroactive.
    assert_eq!(
        str_field(with_detail(&all, "/r1 include"), "signed"),
        "unsigned"
    );
}

#[test]
fn a_passphrase_protected_identity_gets_a_protected_signing_key() {
    let mut env = TestEnv::new();
    let pass = [("COFFER_PASSPHRASE", OsStr::new("correct horse"))];
    let out = env.run_with_env(
        [
            OsStr::new("key"),
            "generate".as_ref(),
            "--passphrase".as_ref(),
            "--output".as_ref(),
            env.identity.as_os_str(),
        ],
        &pass,
    );
    out.expect_ok();
    env.recipient = out.stdout.trim().to_string();
    env.init_repo();
    let sign = sign_path(&env.identity);
    assert!(
        std::fs::read(&sign)
            .unwrap()
            .starts_with(b"age-encryption.org/")
    );
    assert_eq!(mode(&sign), 0o600);

    // add-signing, for such an identity made before signing: protected too.
    std::fs::remove_file(&sign).unwrap();
    let mut args = vec![OsStr::new("key").to_owned(), "add-signing".into()];
    args.extend(env.operator_flags());
    env.run_with_env(&args, &pass).expect_ok();
    let raw = std::fs::read(&sign).unwrap();
    assert!(raw.starts_with(b"age-encryption.org/"), "an age file");
    assert!(!String::from_utf8_lossy(&raw).contains("COFFER-SIGNING-KEY"));

    // A restore with the passphrase signs; the wrong one opens neither.
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src]);
    let target = env.path("r");
    let mut args: Vec<std::ffi::OsString> = vec!["restore".into(), "latest".into()];
    args.extend(["--target".into(), target.clone().into_os_string()]);
    args.extend(env.operator_flags());
    let out = env.run_with_env(&args, &pass);
    out.expect_ok();
    assert!(!out.stderr.contains("signing key"), "{out}");
    let mut audit: Vec<std::ffi::OsString> = vec!["audit".into(), "--json".into()];
    audit.extend(env.operator_flags());
    let listed = env.run_with_env(&audit, &pass);
    listed.expect_ok();
    let all = listed.json().as_array().cloned().unwrap();
    assert_eq!(str_field(with_detail(&all, "to "), "signed"), "operator");
    let mut signer: Vec<std::ffi::OsString> = vec!["key".into(), "signer".into()];
    signer.extend(env.operator_flags());
    let wrong = env.run_with_env(&signer, &[("COFFER_PASSPHRASE", OsStr::new("wrong"))]);
    wrong.expect_failure().expect_short_stderr(1);
    wrong.expect_stderr_contains("wrong passphrase");
}

/// Puts a bad signing key file at a path.
type MakeFile<'a> = dyn Fn(&Path) + 'a;

#[test]
fn a_bad_signing_key_file_is_named_with_its_fix() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    env.backup(&[&src]);
    let sign = sign_path(&env.identity);
    let good = std::fs::read(&sign).unwrap();
    std::fs::remove_file(&sign).unwrap();

    let cases: [(&str, &MakeFile, &str); 3] = [
        (
            "readable by others",
            &|p| {
                std::fs::write(p, &good).unwrap();
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
            },
            "chmod 600",
        ),
        (
            "garbage",
            &|p| {
                std::fs::write(p, b"not a key at all\n").unwrap();
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
            },
            "coffer key add-signing",
        ),
        (
            "unreadable (a folder)",
            &|p| std::fs::create_dir(p).unwrap(),
            "coffer key add-signing",
        ),
    ];
    for (i, (what, make, fix)) in cases.into_iter().enumerate() {
        make(&sign);
        // Listing fails: without its own key the reader can not tell its events.
        let out = env.operator(["audit"]);
        out.expect_failure().expect_short_stderr(1);
        out.expect_stderr_contains(sign.to_str().unwrap());
        out.expect_stderr_contains(fix);
        // An action still happens, recorded unsigned, with one line that says why.
        let target = env.path(format!("r{i}"));
        let out = env.restore_raw("latest", &target, &[]);
        out.expect_ok();
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains(sign.to_str().unwrap()))
            .collect();
        assert_eq!(lines.len(), 1, "{what}: one line\n{out}");
        assert!(
            lines[0].contains(fix) && lines[0].contains("unsigned"),
            "{what}\n{out}"
        );
        if sign.is_dir() {
            std::fs::remove_dir(&sign).unwrap();
        } else {
            std::fs::remove_file(&sign).unwrap();
        }
    }
}
