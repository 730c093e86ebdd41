//! What is restored equals what was backed up, bit for bit, with metadata.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

use crate::env::*;

// ---------------------------------------------------------------------------
// Attributes applied after a tree is built
// ---------------------------------------------------------------------------

/// Metadata to give one entry once every entry exists (creating children
/// changes a directory's mtime, and a 0o500 directory is easier to fill first).
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub mode: Option<u32>,
    pub owner: Option<(u32, u32)>,
    pub mtime: Option<(i64, u32)>,
}

impl Attr {
    pub fn new() -> Attr {
        Attr {
            mode: None,
            owner: None,
            mtime: None,
        }
    }
    pub fn mode(mut self, m: u32) -> Attr {
        self.mode = Some(m);
        self
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Attr {
        self.owner = Some((uid, gid));
        self
    }
    pub fn mtime(mut self, secs: i64, nanos: u32) -> Attr {
        self.mtime = Some((secs, nanos));
        self
    }
}

/// Gives every entry under `root` (and `root`) a distinct, non-current mtime
/// with nanoseconds, then applies the explicit attributes: owner first (chown
/// clears set-id bits), then mode, then mtime.
pub fn finish_tree(root: &Path, attrs: &[(PathBuf, Attr)]) {
    for rel in walk_tree(root).into_keys() {
        let p = if rel.as_os_str().is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let h = blake3::hash(rel.as_os_str().as_bytes());
        let b = h.as_bytes();
        let secs =
            1_500_000_000 + (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % 200_000_000) as i64;
        let nanos = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) % 1_000_000_000;
        set_mtime(&p, secs, nanos);
    }
    for (p, a) in attrs {
        if let Some((u, g)) = a.owner {
            lchown(p, u, g);
        }
    }
    for (p, a) in attrs {
        if let Some(m) = a.mode {
            chmod(p, m);
        }
    }
    for (p, a) in attrs {
        if let Some((s, n)) = a.mtime {
            set_mtime(p, s, n);
        }
    }
}

fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

// ---------------------------------------------------------------------------
// A deterministic tree with every entry kind
// ---------------------------------------------------------------------------

/// Builds a tree with every kind of entry coffer must preserve. Returns the
/// relative paths of a hard-link group (for the `ls` check).
fn build_all_kinds(src: &Path) -> Vec<PathBuf> {
    let mut attrs: Vec<(PathBuf, Attr)> = Vec::new();
    let p = |rel: &str| src.join(rel);

    write_file(&p("plain.txt"), b"hello, coffer\n");
    attrs.push((
        p("plain.txt"),
        Attr::new().mode(0o644).mtime(1_600_000_000, 123_456_789),
    ));
    write_file(&p("empty"), b"");
    attrs.push((p("empty"), Attr::new().mode(0o600)));
    write_random_file(&p("big-random.bin"), 3 * MIB + 12345, 1);
    attrs.push((
        p("big-random.bin"),
        Attr::new().mode(0o640).owner(1000, 1000),
    ));
    write_file(&p("big-zeros.bin"), &vec![0u8; 2 * MIB as usize]);
    write_compressible_file(&p("log.txt"), (1536 * KIB) as usize, 2);
    write_file(&p("setuid-bin"), b"#!/bin/sh\necho hi\n");
    attrs.push((p("setuid-bin"), Attr::new().mode(0o4755)));
    write_file(&p("setgid-bin"), b"x");
    attrs.push((p("setgid-bin"), Attr::new().owner(0, 50).mode(0o2751)));
    write_file(&p("no-permissions"), b"root can still read me");
    attrs.push((p("no-permissions"), Attr::new().mode(0o000)));
    write_file(&p("nobody-owned"), b"owned by nobody");
    attrs.push((
        p("nobody-owned"),
        Attr::new().owner(65534, 65534).mode(0o604),
    ));
    // Times outside the usual range: before 1970, after 2038, whole seconds.
    write_file(&p("old-file"), b"from 1960");
    attrs.push((p("old-file"), Attr::new().mtime(-315_619_200, 500_000_000)));
    write_file(&p("future-file"), b"from 2200");
    attrs.push((
        p("future-file"),
        Attr::new().mtime(7_258_118_400, 999_999_999),
    ));
    write_file(&p("whole-second"), b"x");
    attrs.push((p("whole-second"), Attr::new().mtime(1_000_000_000, 0)));

    fs::create_dir(p("dir-empty")).unwrap();
    attrs.push((p("dir-empty"), Attr::new().mode(0o700).owner(1001, 1002)));
    fs::create_dir(p("dir-sticky")).unwrap();
    write_file(&p("dir-sticky/inside"), b"in a sticky dir");
    attrs.push((p("dir-sticky"), Attr::new().mode(0o1777)));
    fs::create_dir(p("dir-readonly")).unwrap();
    write_file(&p("dir-readonly/inside"), b"in a read-only dir");
    attrs.push((p("dir-readonly"), Attr::new().mode(0o555)));
    fs::create_dir(p("dir-setgid")).unwrap();
    attrs.push((p("dir-setgid"), Attr::new().owner(0, 100).mode(0o2775)));
    write_file(&p("a/b/c/d/file"), b"nested");

    // Symlinks: relative, absolute, dangling, to a directory, odd bytes.
    std::os::unix::fs::symlink("plain.txt", p("link-rel")).unwrap();
    std::os::unix::fs::symlink(p("big-random.bin"), p("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("link-dangling")).unwrap();
    std::os::unix::fs::symlink("a/b", p("link-dir")).unwrap();
    std::os::unix::fs::symlink(os(b"odd \n target \xff\xfe"), p("link-odd")).unwrap();
    std::os::unix::fs::symlink("../../plain.txt", p("a/b/link-up")).unwrap();
    attrs.push((
        p("link-rel"),
        Attr::new()
            .owner(1234, 5678)
            .mtime(1_234_567_890, 987_654_321),
    ));
    attrs.push((p("link-dangling"), Attr::new().mtime(1_111_111_111, 1)));

    // Hard links: a group of three across directories, and a pair.
    write_file(&p("hl1"), b"one inode, three names");
    fs::hard_link(p("hl1"), p("a/hl2")).unwrap();
    fs::hard_link(p("hl1"), p("dir-readonly/hl3")).unwrap();
    attrs.push((p("hl1"), Attr::new().mode(0o640).owner(4242, 4242)));
    write_random_file(&p("pair-1"), 200 * KIB, 3);
    fs::hard_link(p("pair-1"), p("a/b/c/pair-2")).unwrap();
    // An empty file hard-linked too.
    write_file(&p("empty-linked"), b"");
    fs::hard_link(p("empty-linked"), p("dir-sticky/empty-linked-2")).unwrap();

    // A fifo.
    mkfifo(&p("fifo"), 0o644);
    attrs.push((p("fifo"), Attr::new().mode(0o620).owner(7, 7)));

    // Names that are not plain ASCII.
    for name in [
        &b"with space"[..],
        b"new\nline",
        b"tab\there",
        "\u{fc}n\u{ef}c\u{f6}d\u{e9}-\u{65e5}\u{672c}\u{8a9e}-\u{1f389}".as_bytes(),
        b"\xff\xfe-latin1-\xe9",
        b"-leading-dash",
        b"*?[glob]{x,y}",
        b"back\\slash",
        b".hidden",
        b"..dots",
        b" leading and trailing ",
        b"%s%n$HOME`id`",
    ] {
        let f = src.join(os(name));
        write_file(&f, name);
        let d = src.join(os(&[name, &b".d"[..]].concat()));
        fs::create_dir(&d).unwrap();
        write_file(&d.join(os(name)), b"inside an odd directory");
    }

    // A deep path (24 levels).
    let mut deep = src.join("deep");
    for i in 0..24 {
        deep = deep.join(format!("level-{i:02}"));
    }
    write_file(&deep.join("bottom.txt"), b"at the bottom");
    std::os::unix::fs::symlink("../../../../../plain.txt", deep.join("link-up")).unwrap();

    attrs.push((src.to_path_buf(), Attr::new().mode(0o750)));
    finish_tree(src, &attrs);
    vec![
        PathBuf::from("hl1"),
        PathBuf::from("a/hl2"),
        PathBuf::from("dir-readonly/hl3"),
    ]
}

fn roundtrip_every_entry_kind(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let hardlinks = build_all_kinds(&src);

    let summary = env.backup(&[&src]);
    assert!(
        u64_field(&summary, "files") >= 20,
        "backup --json reports too few files: {summary}"
    );
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));

    // The source was not modified by the backup (contents or metadata).
    let copy = env.restore("latest");
    assert_trees_equal(&restored_path(&copy, &src), &src);

    // ls --json: types, sizes and modes as documented.
    let stored = stored_form(&src);
    let out = env.operator([
        OsStr::new("ls"),
        "latest".as_ref(),
        stored.as_os_str(),
        "--json".as_ref(),
    ]);
    out.expect_ok();
    let entries = match out.json() {
        Value::Array(a) => a,
        other => panic!("ls --json must print an array, got {other}"),
    };
    let find = |rel: &str| -> &Value {
        entries
            .iter()
            .find(|e| {
                let p = normalize_reported(str_field(e, "path"));
                p == format!("{}/{rel}", stored.display()) || p == rel
            })
            .unwrap_or_else(|| panic!("ls --json does not list {rel:?}\n{out}"))
    };
    let t = |rel: &str| str_field(find(rel), "type").to_string();
    assert_eq!(t("plain.txt"), "file", "ls type of a regular file");
    assert_eq!(
        u64_field(find("plain.txt"), "size"),
        14,
        "ls size of plain.txt"
    );
    assert_eq!(
        u64_field(find("big-random.bin"), "size"),
        3 * MIB + 12345,
        "ls size of big-random.bin"
    );
    assert_eq!(
        u64_field(find("plain.txt"), "mode") & 0o7777,
        0o644,
        "ls mode of plain.txt"
    );
    assert_eq!(
        u64_field(find("setuid-bin"), "mode") & 0o7777,
        0o4755,
        "ls mode of setuid-bin"
    );
    assert_eq!(t("dir-empty"), "dir", "ls type of a directory");
    assert_eq!(t("link-rel"), "symlink", "ls type of a symlink");
    assert_eq!(
        t("link-dangling"),
        "symlink",
        "ls type of a dangling symlink"
    );
    assert_eq!(t("fifo"), "fifo", "ls type of a fifo");
    let hl_types: Vec<String> = hardlinks.iter().map(|h| t(h.to_str().unwrap())).collect();
    assert!(
        hl_types.iter().all(|t| t == "file" || t == "hardlink")
            && hl_types.iter().any(|t| t == "hardlink"),
        "ls types of a hard-link group should be file/hardlink with at least one hardlink, got {hl_types:?}"
    );
    for e in &entries {
        let m = str_field(e, "mtime");
        assert!(
            m.len() >= 20 && m.as_bytes()[4] == b'-' && m.contains('T'),
            "ls mtime is not RFC 3339: {e}"
        );
    }

    // snapshots --json shape.
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 1, "one snapshot expected: {snaps:?}");
    let s = &snaps[0];
    let id = str_field(s, "id");
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "snapshot id: {s}"
    );
    assert_eq!(
        str_field(s, "short_id"),
        &id[..8],
        "short_id is the first 8 hex digits: {s}"
    );
    assert_eq!(
        id,
        str_field(&summary, "snapshot"),
        "backup --json snapshot id matches snapshots --json"
    );
    let paths: Vec<&str> = s["paths"]
        .as_array()
        .expect("paths array")
        .iter()
        .map(|p| normalize_reported(p.as_str().unwrap()))
        .collect();
    assert_eq!(paths, vec![stored.to_str().unwrap()], "snapshot paths: {s}");
    assert_eq!(
        u64_field(s, "files"),
        u64_field(&summary, "files"),
        "files count in snapshots vs backup"
    );
    assert!(
        s["time"].as_str().map(|t| t.contains('T')).unwrap_or(false),
        "snapshot time is RFC 3339: {s}"
    );
    assert!(
        s["host"].is_string() && s["profile"].is_string(),
        "host/profile strings: {s}"
    );
    u64_field(s, "bytes");
    u64_field(s, "dirs");
    u64_field(s, "tree_blobs");
}

/// A second snapshot of changed data restores to the new state, and the older
/// snapshot (by id prefix) still restores to the old state.
fn roundtrip_old_and_new_snapshots(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_file(&src.join("keep.txt"), b"unchanged");
    write_file(&src.join("change.txt"), b"version 1");
    write_file(&src.join("gone.txt"), b"deleted later");
    write_random_file(&src.join("big.bin"), MIB, 7);
    finish_tree(&src, &[]);
    let first = env.backup(&[&src]);
    let old_copy = env.path("old-copy");
    let t = env.restore("latest");
    fs::rename(restored_path(&t, &src), &old_copy).unwrap();
    assert_trees_equal(&src, &old_copy);

    // Only these three entries change (no finish_tree: touching the others
    // would change their ctime).
    write_file(&src.join("change.txt"), b"version 2, longer");
    set_mtime(&src.join("change.txt"), 1_700_000_000, 5);
    fs::remove_file(src.join("gone.txt")).unwrap();
    write_file(&src.join("new.txt"), b"new");
    let second = env.backup(&[&src]);
    assert_ne!(
        str_field(&first, "snapshot"),
        str_field(&second, "snapshot")
    );
    assert_eq!(u64_field(&second, "files_new"), 1, "one new file: {second}");
    assert_eq!(
        u64_field(&second, "files_changed"),
        1,
        "one changed file: {second}"
    );
    assert_eq!(
        u64_field(&second, "files_unchanged"),
        2,
        "two unchanged files: {second}"
    );

    let t = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&t, &src));
    let prefix = &str_field(&first, "snapshot")[..6];
    let t = env.restore(prefix);
    let restored_old = restored_path(&t, &src);
    // The root directory's mtime was changed by finish_tree on the source; the
    // old copy has the old one. Compare the old snapshot to the old copy.
    assert_trees_equal(&old_copy, &restored_old);
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(
        str_field(&snaps[0], "id"),
        str_field(&first, "snapshot"),
        "snapshots are listed oldest first"
    );
}

/// `restore --include` restores only matching entries; `ls PATH` lists only
/// entries under PATH; a leading `/` is accepted.
fn restore_include_and_ls_path(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_file(&src.join("keep1.txt"), b"keep 1");
    write_file(&src.join("keep2.txt"), b"keep 2");
    write_file(&src.join("skip.bin"), b"skip");
    write_file(&src.join("sub/skip.dat"), b"skip too");
    write_file(&src.join("sub/deeper/inner.dat"), b"inner");
    finish_tree(&src, &[]);
    env.backup(&[&src]);
    let stored = stored_form(&src);
    let stored_str = stored.to_str().unwrap();

    let target = env.unique_path("restore");
    fs::create_dir(&target).unwrap();
    let pattern = format!("{stored_str}/*.txt");
    env.restore_raw("latest", &target, &["--include".as_ref(), pattern.as_ref()])
        .expect_ok();
    let out = restored_path(&target, &src);
    let got = regular_files(&out);
    let want: BTreeSet<PathBuf> = ["keep1.txt", "keep2.txt"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(got, want, "--include {pattern:?} restored the wrong files");
    for f in &want {
        let diffs = compare_entry(
            f,
            &src.join(f),
            &fs::symlink_metadata(src.join(f)).unwrap(),
            &out.join(f),
            &fs::symlink_metadata(out.join(f)).unwrap(),
        );
        assert!(diffs.is_empty(), "{diffs:?}");
    }

    // Leading '/' form.
    let target = env.unique_path("restore");
    fs::create_dir(&target).unwrap();
    let pattern = format!("/{stored_str}/sub/deeper/inner.dat");
    env.restore_raw("latest", &target, &["--include".as_ref(), pattern.as_ref()])
        .expect_ok();
    let got = regular_files(&restored_path(&target, &src));
    assert_eq!(
        got,
        [PathBuf::from("sub/deeper/inner.dat")]
            .into_iter()
            .collect(),
        "--include {pattern:?} restored the wrong files"
    );

    // ls SNAPSHOT PATH lists only entries under PATH.
    let sub = format!("{stored_str}/sub");
    let out = env.operator(["ls", "latest", &sub, "--json"]);
    out.expect_ok();
    let entries = out.json();
    let paths: Vec<String> = entries
        .as_array()
        .expect("array")
        .iter()
        .map(|e| normalize_reported(str_field(e, "path")).to_string())
        .collect();
    assert!(
        paths.iter().any(|p| p.ends_with("sub/deeper/inner.dat"))
            && paths.iter().any(|p| p.ends_with("sub/skip.dat")),
        "ls {sub} must list the entries under it: {paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.ends_with("keep1.txt") || p.ends_with("skip.bin")),
        "ls {sub} lists entries outside it: {paths:?}"
    );
    let out2 = env.operator(["ls", "latest", &format!("/{sub}"), "--json"]);
    out2.expect_ok();
    assert_eq!(
        out2.json(),
        entries,
        "ls with a leading '/' must list the same entries"
    );
}

/// The repository layout of docs/CLI.md; pack names are the BLAKE3 of the
/// pack bytes; no file name or content appears in plaintext; the lock is
/// released; the default catalog location is used when --catalog is absent.
fn repository_layout_and_confidentiality(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    let marker_name = "secret-name-Zq7XvK2pW9";
    let marker_content = b"secret-content-Hf83LmQa0T secret-content-Hf83LmQa0T";
    write_file(&src.join(marker_name), marker_content);
    write_file(
        &src.join("plain-dir-Qm4Xz/file"),
        &marker_content.repeat(1000),
    );
    write_random_file(&src.join("random.bin"), 2 * MIB, 11);
    finish_tree(&src, &[]);

    // No --catalog: the catalog goes to $COFFER_CACHE_DIR/<repository id>.sqlite.
    let out = env.run([
        OsStr::new("backup"),
        src.as_os_str(),
        "--json".as_ref(),
        "--repo".as_ref(),
        env.repo_url.as_os_str(),
        "--agent-key".as_ref(),
        env.agent_key.as_os_str(),
    ]);
    out.expect_ok();
    let summary = out.json();
    let config: Value = serde_json::from_slice(&fs::read(env.repo.join("config")).unwrap())
        .expect("config is plaintext JSON");
    let sqlite: Vec<String> = fs::read_dir(&env.cache_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sqlite"))
        .collect();
    assert_eq!(
        sqlite.len(),
        1,
        "expected one <repository id>.sqlite in COFFER_CACHE_DIR, found {sqlite:?}"
    );
    let repo_id = sqlite[0].trim_end_matches(".sqlite");
    assert!(
        config.to_string().contains(repo_id),
        "the catalog file name {:?} should be the repository id found in config {config}",
        sqlite[0]
    );
    assert!(
        !env.catalog.exists(),
        "nothing should be written to the --catalog path when it is not given"
    );

    let is_hex64 =
        |s: &str| s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert!(env.repo.join("keyring").is_file(), "keyring missing");
    assert!(
        !env.repo.join("lock").exists(),
        "the lock must be released after a backup"
    );
    let packs = env.packs();
    assert!(!packs.is_empty(), "no packs under data/");
    for (key, path, _) in &packs {
        let parts: Vec<&str> = key.split('/').collect();
        assert!(
            parts.len() == 3 && is_hex64(parts[2]) && parts[1] == &parts[2][..2],
            "bad pack object name {key}"
        );
        let hash = blake3::hash(&fs::read(path).unwrap()).to_hex().to_string();
        assert_eq!(
            hash, parts[2],
            "pack {key}: name must be the BLAKE3 of its bytes"
        );
    }
    assert_eq!(
        packs.len() as u64,
        u64_field(&summary, "packs_added"),
        "packs_added vs packs under data/"
    );
    let stored: u64 = packs.iter().map(|p| p.2).sum();
    assert!(
        u64_field(&summary, "stored_added") >= stored,
        "stored_added {} < bytes of packs {stored}",
        u64_field(&summary, "stored_added")
    );
    let index: Vec<String> = fs::read_dir(env.repo.join("index"))
        .expect("index/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !index.is_empty() && index.iter().all(|n| is_hex64(n)),
        "index objects: {index:?}"
    );
    let snap_objects: BTreeSet<String> = fs::read_dir(env.repo.join("snapshots"))
        .expect("snapshots/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = env
        .snapshots()
        .iter()
        .map(|s| str_field(s, "id").to_string())
        .collect();
    assert_eq!(
        snap_objects, listed,
        "snapshots/<id> objects vs snapshots --json ids"
    );

    // Nothing readable leaks into the repository.
    for (rel, _) in list_files(&env.repo) {
        let bytes = fs::read(env.repo.join(&rel)).unwrap();
        for needle in [
            marker_name.as_bytes(),
            &marker_content[..24],
            b"plain-dir-Qm4Xz",
            src.as_os_str().as_bytes(),
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "repository object {rel} contains plaintext {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    // The agent key cannot read what it wrote; the identity can.
    let t = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&t, &src));
}

// ---------------------------------------------------------------------------
// Property test: generated trees
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Content {
    Bytes(Vec<u8>),
    Random { len: u64, seed: u64 },
    Compressible { len: u64, seed: u64 },
    Zeros(u64),
}

#[derive(Debug, Clone)]
enum LinkTarget {
    /// Relative path to an existing entry.
    Existing(Index),
    /// Absolute path to an existing entry.
    ExistingAbs(Index),
    /// Whatever bytes (usually dangling).
    Dangling(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Kind {
    Dir,
    File(Content),
    Symlink(LinkTarget),
    HardLink(Index),
    Fifo,
}

#[derive(Debug, Clone)]
struct EntrySpec {
    parent: Index,
    name: Vec<u8>,
    kind: Kind,
    mode: u32,
    owner: (u32, u32),
    mtime: (i64, u32),
}

#[derive(Debug, Clone)]
struct TreeSpec {
    entries: Vec<EntrySpec>,
    deep: Vec<Vec<u8>>,
    root_mode: u32,
}

fn name_segment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => proptest::collection::vec(prop_oneof![b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9'], 1..8),
        2 => proptest::sample::select(vec![
            &b" "[..], b"\n", b"\t", b"-", b"_", b".", b"*", b"?", b"[", b"]", b"\\", b"'", b"\"", b"$",
            b"~", b"#", b"%", b":", b";", b",", b"=", b"+", b"\r", b"\x1b", b"\x7f",
        ]).prop_map(|s| s.to_vec()),
        2 => proptest::sample::select(vec!["\u{e9}", "\u{65e5}\u{672c}", "\u{1f389}", "\u{410}\u{411}", "\u{200b}", "\u{301}"])
            .prop_map(|s| s.as_bytes().to_vec()),
        2 => proptest::collection::vec(0x80u8..=0xff, 1..4),
    ]
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(name_segment(), 1..6).prop_map(|segs| {
        let mut n: Vec<u8> = segs.concat();
        n.truncate(200);
        if n == b"." || n == b".." {
            n.push(b'x');
        }
        n
    })
}

fn content() -> impl Strategy<Value = Content> {
    prop_oneof![
        2 => Just(Content::Bytes(Vec::new())),
        6 => proptest::collection::vec(any::<u8>(), 0..2000).prop_map(Content::Bytes),
        3 => (0u64..300_000, any::<u64>()).prop_map(|(len, seed)| Content::Random { len, seed }),
        1 => (MIB..4 * MIB, any::<u64>()).prop_map(|(len, seed)| Content::Random { len, seed }),
        1 => (100_000u64..3 * MIB, any::<u64>()).prop_map(|(len, seed)| Content::Compressible { len, seed }),
        1 => (0u64..2 * MIB).prop_map(Content::Zeros),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Dir),
        6 => content().prop_map(Kind::File),
        1 => any::<Index>().prop_map(|i| Kind::Symlink(LinkTarget::Existing(i))),
        1 => any::<Index>().prop_map(|i| Kind::Symlink(LinkTarget::ExistingAbs(i))),
        1 => proptest::collection::vec(1u8..=255, 1..300).prop_map(|t| Kind::Symlink(LinkTarget::Dangling(t))),
        2 => any::<Index>().prop_map(Kind::HardLink),
        1 => Just(Kind::Fifo),
    ]
}

fn mtime() -> impl Strategy<Value = (i64, u32)> {
    (
        prop_oneof![
            8 => 1i64..2_147_483_647,
            1 => 2_147_483_648i64..8_000_000_000,
            1 => -2_000_000_000i64..0,
        ],
        prop_oneof![3 => 0u32..1_000_000_000, 1 => Just(0u32)],
    )
}

fn entry() -> impl Strategy<Value = EntrySpec> {
    (
        any::<Index>(),
        name(),
        kind(),
        proptest::sample::select(vec![
            0o644u32, 0o600, 0o755, 0o700, 0o400, 0o000, 0o640, 0o777, 0o4755, 0o2755, 0o1777,
            0o555, 0o511,
        ]),
        proptest::sample::select(vec![
            (0u32, 0u32),
            (0, 0),
            (1000, 1000),
            (65534, 65534),
            (12345, 54321),
            (1, 2),
        ]),
        mtime(),
    )
        .prop_map(|(parent, name, kind, mode, owner, mtime)| EntrySpec {
            parent,
            name,
            kind,
            mode,
            owner,
            mtime,
        })
}

fn tree_spec() -> impl Strategy<Value = TreeSpec> {
    (
        proptest::collection::vec(entry(), 1..40),
        proptest::collection::vec(
            proptest::collection::vec(name_segment(), 1..3).prop_map(|s| {
                let mut n = s.concat();
                n.truncate(16);
                if n == b"." || n == b".." {
                    n.push(b'y');
                }
                n
            }),
            18..24,
        ),
        proptest::sample::select(vec![0o755u32, 0o700, 0o750, 0o555]),
    )
        .prop_map(|(entries, deep, root_mode)| TreeSpec {
            entries,
            deep,
            root_mode,
        })
}

/// Creates the tree described by `spec` under `root` (which must exist).
fn materialize(root: &Path, spec: &TreeSpec) {
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut all: Vec<PathBuf> = Vec::new();
    let mut attrs: Vec<(PathBuf, Attr)> = Vec::new();
    let mut big_budget: u64 = 10 * MIB;

    for (i, e) in spec.entries.iter().enumerate() {
        let parent = e.parent.get(&dirs).clone();
        let mut name = e.name.clone();
        let mut path = parent.join(OsStr::from_bytes(&name));
        if fs::symlink_metadata(&path).is_ok() {
            name.extend_from_slice(format!("~{i}").as_bytes());
            path = parent.join(OsStr::from_bytes(&name));
        }
        let mut attr = Attr::new()
            .owner(e.owner.0, e.owner.1)
            .mtime(e.mtime.0, e.mtime.1);
        match &e.kind {
            Kind::Dir => {
                fs::create_dir(&path).unwrap();
                // Directories stay listable by root whatever the mode.
                attr = attr.mode(e.mode);
                dirs.push(path.clone());
            }
            Kind::File(c) => {
                let data_len = match c {
                    Content::Bytes(b) => {
                        write_file(&path, b);
                        0
                    }
                    Content::Random { len, seed } => {
                        let len = if *len > big_budget {
                            len % (64 * KIB)
                        } else {
                            *len
                        };
                        write_random_file(&path, len, *seed);
                        len
                    }
                    Content::Compressible { len, seed } => {
                        let len = if *len > big_budget {
                            len % (64 * KIB)
                        } else {
                            *len
                        };
                        write_compressible_file(&path, len as usize, *seed);
                        len
                    }
                    Content::Zeros(len) => {
                        let len = if *len > big_budget {
                            len % (64 * KIB)
                        } else {
                            *len
                        };
                        write_file(&path, &vec![0u8; len as usize]);
                        len
                    }
                };
                big_budget = big_budget.saturating_sub(data_len);
                attr = attr.mode(e.mode);
                files.push(path.clone());
            }
            Kind::Symlink(t) => {
                let target: OsString = match t {
                    LinkTarget::Existing(idx) if !all.is_empty() => {
                        let to = idx.get(&all);
                        relative_link(&parent, to).into_os_string()
                    }
                    LinkTarget::ExistingAbs(idx) if !all.is_empty() => {
                        idx.get(&all).clone().into_os_string()
                    }
                    LinkTarget::Dangling(b) => os(b),
                    _ => OsString::from("nothing-here"),
                };
                std::os::unix::fs::symlink(&target, &path).unwrap();
            }
            Kind::HardLink(idx) => {
                if files.is_empty() {
                    write_file(&path, b"would have been a hard link");
                    attr = attr.mode(e.mode);
                    files.push(path.clone());
                } else {
                    let to = idx.get(&files).clone();
                    fs::hard_link(&to, &path).unwrap();
                    // Same inode: the attributes given to `to` (or this
                    // one, applied later) win; the comparison reads the state.
                }
            }
            Kind::Fifo => {
                mkfifo(&path, 0o644);
                attr = attr.mode(e.mode & 0o777);
            }
        }
        attrs.push((path.clone(), attr));
        all.push(path);
    }

    // A deep chain of directories with a file and a symlink at the bottom.
    let mut deep = root.join("deep");
    fs::create_dir(&deep).unwrap();
    for n in &spec.deep {
        let mut p = deep.join(OsStr::from_bytes(n));
        if p.exists() {
            p = deep.join(format!("{}-", String::from_utf8_lossy(n)));
        }
        fs::create_dir(&p).unwrap();
        deep = p;
    }
    write_file(&deep.join("bottom"), b"the bottom of a deep path");
    std::os::unix::fs::symlink("../../../..", deep.join("up")).unwrap();

    attrs.push((
        root.to_path_buf(),
        Attr::new().mode(spec.root_mode).mtime(1_650_000_000, 42),
    ));
    finish_tree(root, &attrs);
}

/// `to` relative to the directory `from_dir` (both under the same root).
fn relative_link(from_dir: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut p = PathBuf::new();
    for _ in common..a.len() {
        p.push("..");
    }
    for c in &b[common..] {
        p.push(c.as_os_str());
    }
    if p.as_os_str().is_empty() {
        p.push(".");
    }
    p
}

/// Cases for the generated-tree round trip: `COFFER_PROPTEST_CASES` or
/// `default`.
fn proptest_cases(default: u32) -> u32 {
    std::env::var("COFFER_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One generated tree backed up and restored on `backend`.
fn generated_tree_roundtrips(backend: Backend, spec: &TreeSpec) -> Result<(), TestCaseError> {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    materialize(&src, spec);

    let summary = env.backup(&[&src]);
    let n_files = regular_files(&src).len() as u64;
    prop_assert!(
        u64_field(&summary, "files") >= 1,
        "files count: {}",
        summary
    );
    let target = env.restore("latest");
    let diffs = compare_trees(&src, &restored_path(&target, &src));
    prop_assert!(
        diffs.is_empty(),
        "restored tree differs ({} differences):\n  {}",
        diffs.len(),
        diffs
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    // The file-count matches what is in the tree (hard links may count once or per name).
    let inodes: BTreeSet<u64> = walk_tree(&src)
        .values()
        .filter(|m| m.is_file())
        .map(|m| m.ino())
        .collect();
    let files = u64_field(&summary, "files");
    prop_assert!(
        files >= inodes.len() as u64 && files <= n_files,
        "backup files {} not in [{} inodes, {} names]",
        files,
        inodes.len(),
        n_files
    );
    Ok(())
}

/// `roundtrip_generated_trees::local` and `::s3`: the same number of cases
/// on both (S3 is not noticeably slower here).
mod roundtrip_generated_trees {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: proptest_cases(12),
            max_shrink_iters: 16,
            failure_persistence: None,
            .. ProptestConfig::default()
        })]

        #[test]
        fn local(spec in tree_spec()) {
            generated_tree_roundtrips(Backend::Local, &spec)?;
        }

        #[test]
        fn s3(spec in tree_spec()) {
            generated_tree_roundtrips(Backend::S3, &spec)?;
        }
    }
}

/// Self-describing repository: on a "fresh machine" (new HOME, no catalog,
/// no agent key), the identity alone lists and restores.
fn restore_on_fresh_machine_with_identity_only(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    make_mixed_dataset(&src, 3 * MIB, 77);
    finish_tree(&src, &[]);
    let summary = env.backup(&[&src]);

    // The fresh machine reaches the same repository (for S3: the same server
    // and bucket, with the AWS variables passed explicitly).
    let fresh = TestEnv::new();
    let reach = env.backend_env();
    let reach: Vec<(&str, &OsStr)> = reach.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
    let identity = fresh.home.join("operator.key");
    fs::copy(&env.identity, &identity).unwrap();
    chmod(&identity, 0o600);
    let repo_arg: OsString = match backend {
        Backend::Local => format!("file://{}", env.repo.display()).into(),
        Backend::S3 => env.repo_url.clone(),
    };
    let base = |args: &[&OsStr]| -> Vec<OsString> {
        let mut v: Vec<OsString> = args.iter().map(|a| a.to_os_string()).collect();
        v.extend([
            "--repo".into(),
            repo_arg.clone(),
            "--identity".into(),
            identity.clone().into_os_string(),
        ]);
        v
    };
    let out = fresh.run_with_env(base(&["snapshots".as_ref(), "--json".as_ref()]), &reach);
    out.expect_ok();
    let snaps = out.json();
    assert_eq!(
        snaps[0]["id"].as_str(),
        Some(str_field(&summary, "snapshot")),
        "the identity alone must list the snapshot\n{out}"
    );
    let target = fresh.unique_path("restore");
    fs::create_dir(&target).unwrap();
    fresh
        .run_with_env(
            base(&[
                "restore".as_ref(),
                "latest".as_ref(),
                "--target".as_ref(),
                target.as_os_str(),
            ]),
            &reach,
        )
        .expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));

    // The same through COFFER_REPO / COFFER_IDENTITY, with a plain path (the
    // URL on S3).
    let target = fresh.unique_path("restore");
    fs::create_dir(&target).unwrap();
    fresh
        .run_with_env(
            [
                OsStr::new("restore"),
                "latest".as_ref(),
                "--target".as_ref(),
                target.as_os_str(),
            ],
            &[
                &reach[..],
                &[
                    ("COFFER_REPO", env.repo_url.as_os_str()),
                    ("COFFER_IDENTITY", identity.as_os_str()),
                ],
            ]
            .concat(),
        )
        .expect_ok();
    assert_trees_equal(&src, &restored_path(&target, &src));

    // check --json on a healthy repository.
    let out = fresh.run_with_env(base(&["check".as_ref(), "--json".as_ref()]), &reach);
    out.expect_ok();
    let report = out.json();
    assert_eq!(report["ok"], Value::Bool(true), "{out}");
    assert_eq!(report["problems"], Value::Array(vec![]), "{out}");
}

/// `--exclude` globs (a name glob at any depth, an absolute path), `--host`,
/// `--compression`.
fn exclude_globs_host_and_compression(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_file(&src.join("keep.txt"), b"keep");
    write_file(&src.join("a.tmp"), b"excluded by name");
    write_file(&src.join("sub/b.tmp"), b"excluded by name, deeper");
    write_file(&src.join("sub/keep.dat"), b"keep");
    write_file(&src.join("cache/big.bin"), b"excluded by path");
    write_file(
        &src.join("other/cache/kept.bin"),
        b"same name, other path: kept",
    );
    finish_tree(&src, &[]);
    let cache = src.join("cache");
    let out = env.agent([
        OsStr::new("backup"),
        src.as_os_str(),
        "--json".as_ref(),
        "--exclude".as_ref(),
        "*.tmp".as_ref(),
        "--exclude".as_ref(),
        cache.as_os_str(),
        "--host".as_ref(),
        "test-host-1".as_ref(),
        "--compression".as_ref(),
        "19".as_ref(),
    ]);
    out.expect_ok();
    let target = env.restore("latest");
    let got = regular_files(&restored_path(&target, &src));
    let want: BTreeSet<PathBuf> = ["keep.txt", "sub/keep.dat", "other/cache/kept.bin"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(got, want, "excludes applied wrongly\n{out}");
    let snaps = env.snapshots();
    assert_eq!(
        str_field(&snaps[0], "host"),
        "test-host-1",
        "--host: {}",
        snaps[0]
    );
}

/// `key export-agent` (operator) re-provisions a server: the exported agent
/// key (mode 0600) backs up into the same repository, and dedups against it.
fn export_agent_key_reprovisions_a_server(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    write_random_file(&src.join("data.bin"), MIB, 12);
    env.backup(&[&src]);

    let exported = env.home.join("exported-agent.key");
    env.operator([
        OsStr::new("key"),
        "export-agent".as_ref(),
        "--output".as_ref(),
        exported.as_os_str(),
    ])
    .expect_ok();
    let mode = fs::metadata(&exported).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "exported agent key must have mode 0600");
    let out = env.run([
        OsStr::new("backup"),
        src.as_os_str(),
        "--json".as_ref(),
        "--repo".as_ref(),
        env.repo_url.as_os_str(),
        "--agent-key".as_ref(),
        exported.as_os_str(),
        "--catalog".as_ref(),
        env.home.join("other-catalog.sqlite").as_os_str(),
    ]);
    out.expect_ok();
    let summary = out.json();
    assert!(
        u64_field(&summary, "data_added") <= 64 * KIB,
        "the exported key must produce the same chunk ids (dedup): {summary}"
    );
    assert_eq!(env.snapshots().len(), 2);
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

on_both_backends!(
    roundtrip_every_entry_kind,
    roundtrip_old_and_new_snapshots,
    restore_include_and_ls_path,
    repository_layout_and_confidentiality,
    restore_on_fresh_machine_with_identity_only,
    exclude_globs_host_and_compression,
    export_agent_key_reprovisions_a_server,
);
