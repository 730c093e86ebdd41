//! Hostile archives: snapshots sealed with the test's own keys, so coffer
//! trusts their crypto completely, whose file lists are hostile. They are
//! built through the library (tree lines, data blobs, a refs blob, one pack,
//! an index, a snapshot), then the real `coffer restore`, `ls` and `cat` run
//! on them. Every case ends in a clear error (the whole archive refused) or a
//! per-entry refusal that names the entry; never a panic; and nothing outside
//! the restore target changes: a sentinel folder beside the target stays
//! empty, and a listing of the whole temporary root (minus the target and
//! the catalog) is the same before and after.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use coffer::repo::Repository;
use coffer::repo::ids::BlobId;
use coffer::repo::index::{IndexFile, IndexedPack};
use coffer::repo::keys::OperatorIdentity;
use coffer::repo::pack::{BlobKind, PackEntry, PackWriter, SealedBlob, seal_blob};
use coffer::repo::snapshot::{Snapshot, Summary};
use coffer::repo::store::Store;
use coffer::repo::tree::{Entry, EntryKind, Extent};

use crate::env::*;

/// An address-space limit for restores of archives that declare huge sizes:
/// a restore that tried to hold a declared size in memory would fail (and
/// abort) instead of eating the machine.
const ADDRESS_SPACE_LIMIT: u64 = 2 << 30;

/// mtime of every forged entry (2023-11-14, with nanoseconds).
pub(crate) const MTIME: i64 = 1_700_000_000_123_456_789;

// ---------------------------------------------------------------------------
// Forging archives through the library
// ---------------------------------------------------------------------------

/// The repository opened as the operator, to write snapshots by hand.
pub(crate) struct Forger {
    pub(crate) repo: Repository,
    spool: PathBuf,
}

impl Forger {
    pub(crate) fn open(env: &TestEnv) -> Forger {
        let url = env.repo_url.to_str().expect("UTF-8 repository path");
        let store = Store::open(url, &Default::default()).expect("open the repository storage");
        let identity = OperatorIdentity::load(&env.identity, &|| Ok(String::new()))
            .expect("load the operator identity");
        let repo = Repository::open_operator(store, identity).expect("open as the operator");
        Forger {
            repo,
            spool: env.path("spool"),
        }
    }

    pub(crate) fn id(&self, data: &[u8]) -> BlobId {
        self.repo.keys.blob_id(data)
    }

    /// Seals `data` blobs and the file list `tree` (one blob per element, in
    /// order; their concatenation is the list) plus a refs blob naming them
    /// all into one pack, uploads it, writes an index and a snapshot. Returns
    /// the snapshot id (64 hex digits).
    pub(crate) fn snapshot(&self, data: &[&[u8]], tree: &[Vec<u8>]) -> String {
        self.snapshot_with_index(data, tree, None)
    }

    /// `snapshot` with a tree index (format 2) of the given plaintext.
    pub(crate) fn snapshot_with_index(
        &self,
        data: &[&[u8]],
        tree: &[Vec<u8>],
        index: Option<&[u8]>,
    ) -> String {
        self.snapshot_with(data, tree, index, Vec::new(), |_| {})
    }

    /// `snapshot_with_index`, with blobs sealed by the caller (`extra`,
    /// added to the pack and the reference list) and the index object
    /// edited by `edit` before it is written.
    pub(crate) fn snapshot_with(
        &self,
        data: &[&[u8]],
        tree: &[Vec<u8>],
        index: Option<&[u8]>,
        extra: Vec<SealedBlob>,
        edit: impl FnOnce(&mut IndexFile),
    ) -> String {
        let keys = &self.repo.keys;
        let mut w = PackWriter::create(&self.spool).expect("spool a pack");
        let mut in_pack: HashSet<BlobId> = HashSet::new();
        for b in extra {
            in_pack.insert(b.id);
            w.add(b).unwrap();
        }
        for d in data {
            let id = self.id(d);
            if in_pack.insert(id) {
                w.add(seal_blob(keys, BlobKind::Data, id, d, 3)).unwrap();
            }
        }
        let mut tree_ids = Vec::new();
        for t in tree {
            let id = self.id(t);
            if in_pack.insert(id) {
                w.add(seal_blob(keys, BlobKind::Tree, id, t, 3)).unwrap();
            }
            tree_ids.push(id);
        }
        let tree_index = index.map(|ix| {
            let id = self.id(ix);
            if in_pack.insert(id) {
                w.add(seal_blob(keys, BlobKind::Tree, id, ix, 3)).unwrap();
            }
            id
        });
        // The refs stream: sorted ids of every data and tree blob.
        let mut refs: Vec<BlobId> = in_pack.into_iter().collect();
        refs.sort();
        let refs_plain: Vec<u8> = refs.iter().flat_map(|id| id.0).collect();
        let refs_id = self.id(&refs_plain);
        w.add(seal_blob(keys, BlobKind::Refs, refs_id, &refs_plain, 3))
            .unwrap();
        let pack = w.finish(keys).expect("finish the pack");
        let handle = self.repo.store.spawn_put_file(pack.id.key(), pack.path);
        self.repo.store.join(handle).expect("upload the pack");
        let mut index = IndexFile {
            packs: vec![IndexedPack {
                id: pack.id,
                size: pack.size,
                blobs: pack.entries,
            }],
        };
        edit(&mut index);
        self.repo.write_index(&index).expect("write the index");
        let snap = Snapshot {
            time: jiff::Timestamp::now(),
            host: "hostile".into(),
            profile: "adversarial".into(),
            paths: vec!["/hostile".into()],
            tree: tree_ids,
            refs: vec![refs_id],
            tree_index,
            summary: Summary::default(),
            stored: None,
        };
        self.repo
            .write_snapshot(&snap)
            .expect("write the snapshot")
            .to_hex()
    }

    /// Every blob of the repository and where it is (from the index objects).
    pub(crate) fn blob_map(&self) -> HashMap<BlobId, (coffer::repo::ids::PackId, PackEntry)> {
        let mut map = HashMap::new();
        for ix in self.repo.list_indexes().unwrap() {
            for p in self.repo.read_index(&ix).unwrap().packs {
                for b in p.blobs {
                    map.insert(b.id, (p.id, b));
                }
            }
        }
        map
    }
}

fn uid() -> u32 {
    // SAFETY: getuid and getgid have no preconditions.
    unsafe { libc::getuid() }
}

fn gid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::getgid() }
}

pub(crate) fn entry(path: &[u8], kind: EntryKind) -> Entry {
    Entry {
        path: path.to_vec(),
        kind,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        uid: uid(),
        gid: gid(),
        mtime: MTIME,
        ctime: MTIME,
        ino: 0,
        size: 0,
        content: Vec::new(),
        target: None,
        rdev: 0,
    }
}

pub(crate) fn dir(path: &str) -> Entry {
    entry(path.as_bytes(), EntryKind::Dir)
}

/// A file whose pieces are `extents` (blob, offset, length) and whose declared size is `size`.
pub(crate) fn file_with(path: &str, size: u64, extents: &[(BlobId, u64, u64)]) -> Entry {
    let mut e = entry(path.as_bytes(), EntryKind::File);
    e.size = size;
    e.content = extents
        .iter()
        .map(|&(blob, offset, length)| Extent {
            blob,
            offset,
            length,
        })
        .collect();
    e
}

/// A file that is the whole of blob `data`.
pub(crate) fn file(f: &Forger, path: &str, data: &[u8]) -> Entry {
    let n = data.len() as u64;
    if n == 0 {
        return file_with(path, 0, &[]);
    }
    file_with(path, n, &[(f.id(data), 0, n)])
}

pub(crate) fn symlink(path: &str, target: &str) -> Entry {
    let mut e = entry(path.as_bytes(), EntryKind::Symlink);
    e.mode = 0o777;
    e.target = Some(target.as_bytes().to_vec());
    e
}

pub(crate) fn hardlink(path: &str, target: &str) -> Entry {
    let mut e = entry(path.as_bytes(), EntryKind::Hardlink);
    e.target = Some(target.as_bytes().to_vec());
    e
}

/// The file list lines of `entries`, exactly as a backup serialises them.
pub(crate) fn lines(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        e.write_line(&mut out);
    }
    out
}

// ---------------------------------------------------------------------------
// The scene: a repository, a target, a sentinel, a victim file
// ---------------------------------------------------------------------------

pub(crate) struct Scene {
    pub(crate) env: TestEnv,
    pub(crate) forger: Forger,
    /// Beside every target: must stay empty.
    pub(crate) outside: PathBuf,
    /// A file outside every target that hostile links aim at.
    secret: PathBuf,
    /// An absolute path outside the temporary root that must never appear.
    far: PathBuf,
}

/// One restore's outcome, checked for "nothing outside the target changed".
pub(crate) struct Restored {
    pub(crate) out: Output,
    pub(crate) target: PathBuf,
}

impl Scene {
    pub(crate) fn new() -> Scene {
        let env = TestEnv::with_repo();
        let forger = Forger::open(&env);
        let outside = env.path("outside");
        fs::create_dir(&outside).unwrap();
        let secret = env.path("victim").join("secret");
        write_file(&secret, b"the secret\n");
        chmod(&secret, 0o600);
        let far = PathBuf::from(format!(
            "/tmp/coffer-adversarial-{}-{}",
            std::process::id(),
            env.root.file_name().unwrap().to_string_lossy()
        ));
        Scene {
            env,
            forger,
            outside,
            secret,
            far,
        }
    }

    /// `p` relative to a target `root/t-N`: `../outside/...` and so on.
    pub(crate) fn abs(&self, rel: &str) -> String {
        format!("{}/{rel}", self.env.root.display())
    }

    /// Everything under the temporary root except `target` and the catalog:
    /// kind, mode, owner, and for non-folders size, inode, link count, times
    /// and link target. Any write, chmod, chown or link outside the target
    /// shows up as a difference.
    pub(crate) fn state(&self, target: &Path) -> BTreeMap<PathBuf, String> {
        fn walk(p: &Path, skip: &[&Path], out: &mut BTreeMap<PathBuf, String>) {
            if skip.contains(&p)
                || p.file_name()
                    .is_some_and(|n| n.as_bytes().starts_with(b"catalog.sqlite"))
            {
                return;
            }
            let md = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {p:?}: {e}"));
            let mut d = format!(
                "{} mode={:o} owner={}:{}",
                kind_name(&md),
                md.mode() & 0o7777,
                md.uid(),
                md.gid()
            );
            if md.is_dir() {
                out.insert(p.to_path_buf(), d);
                let mut names: Vec<_> = fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                names.sort();
                for n in names {
                    walk(&p.join(n), skip, out);
                }
                return;
            }
            d.push_str(&format!(
                " size={} ino={} nlink={} mtime={}.{} ctime={}.{}",
                md.len(),
                md.ino(),
                md.nlink(),
                md.mtime(),
                md.mtime_nsec(),
                md.ctime(),
                md.ctime_nsec()
            ));
            if md.file_type().is_symlink() {
                d.push_str(&format!(" -> {:?}", fs::read_link(p).unwrap()));
            }
            out.insert(p.to_path_buf(), d);
        }
        // The target, the repository's audit log (a restore records itself
        // there) and its damage records (a restore records the bad blobs it
        // read) may change.
        let audit = self.env.repo.join("audit");
        let damage = self.env.repo.join("damage");
        let mut out = BTreeMap::new();
        walk(&self.env.root, &[target, &audit, &damage], &mut out);
        out
    }

    /// Forges a snapshot, restores it into a fresh target (as `coffer
    /// restore` under an address-space limit) and checks that nothing
    /// outside the target changed and that coffer did not panic.
    pub(crate) fn restore(&self, data: &[&[u8]], tree: &[Vec<u8>]) -> (String, Restored) {
        let id = self.forger.snapshot(data, tree);
        let r = self.restore_id(&id);
        (id, r)
    }

    pub(crate) fn restore_id(&self, id: &str) -> Restored {
        let target = self.env.unique_path("t");
        fs::create_dir(&target).unwrap();
        let before = self.state(&target);
        let out = self.run_limited(&[
            "restore".into(),
            id.into(),
            "--target".into(),
            target.clone().into(),
        ]);
        let after = self.state(&target);
        self.assert_untouched(&before, &after, &out);
        // No file in the target is big: declared sizes never become real
        // (or sparse) files.
        for (rel, md) in walk_tree(&target) {
            assert!(
                md.len() < MIB,
                "{rel:?} in the target has {} bytes: a declared size became a file\n{out}",
                md.len()
            );
        }
        Restored { out, target }
    }

    /// `coffer ARGS` as the operator, under the address-space limit; checks
    /// that it neither panicked nor died from a signal.
    pub(crate) fn run_limited(&self, args: &[OsString]) -> Output {
        run_limited_in(&self.env, args, &self.env.operator_flags())
    }

    #[track_caller]
    pub(crate) fn assert_untouched(
        &self,
        before: &BTreeMap<PathBuf, String>,
        after: &BTreeMap<PathBuf, String>,
        out: &Output,
    ) {
        let outside: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            outside.is_empty(),
            "restore wrote outside its target: {outside:?}\n{out}"
        );
        assert!(
            fs::symlink_metadata(&self.far).is_err(),
            "restore created {}\n{out}",
            self.far.display()
        );
        let mut diffs = Vec::new();
        for (p, d) in before {
            match after.get(p) {
                None => diffs.push(format!("{} disappeared", p.display())),
                Some(a) if a != d => diffs.push(format!("{}: {d} -> {a}", p.display())),
                _ => {}
            }
        }
        for p in after.keys().filter(|p| !before.contains_key(*p)) {
            diffs.push(format!("{} appeared: {}", p.display(), after[p]));
        }
        assert!(
            diffs.is_empty(),
            "restore changed things outside its target:\n  {}\n{out}",
            diffs.join("\n  ")
        );
        assert_eq!(
            fs::read(&self.secret).unwrap(),
            b"the secret\n",
            "the victim file changed\n{out}"
        );
    }

    pub(crate) fn ls(&self, id: &str) -> Output {
        let out = self.env.operator(["ls", id, "--json"]);
        out.expect_no_panic();
        out
    }

    pub(crate) fn cat(&self, id: &str, path: &str) -> Output {
        let out = self.env.operator(["cat", id, path]);
        out.expect_no_panic();
        out
    }
}

/// `coffer ARGS FLAGS` in `env` under the address-space limit (the message
/// shows ARGS only); checks that it neither panicked nor died from a signal.
pub(crate) fn run_limited_in(env: &TestEnv, args: &[OsString], flags: &[OsString]) -> Output {
    let cmdline = format!(
        "coffer {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut all = args.to_vec();
    all.extend_from_slice(flags);
    let mut cmd = env.command(&all);
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: ADDRESS_SPACE_LIMIT as libc::rlim_t,
                rlim_max: ADDRESS_SPACE_LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_command_peak(cmd, cmdline, command_timeout());
    out.expect_no_panic();
    assert!(
        out.code.is_some(),
        "coffer died from a signal (memory limit?)\n{out}"
    );
    out
}

/// The whole archive is refused: non-zero exit, a short message naming
/// `needle`, nothing restored.
#[track_caller]
pub(crate) fn assert_refused_whole(r: &Restored, needle: &str) {
    r.out.expect_failure();
    r.out.expect_short_stderr(2);
    r.out.expect_stderr_contains(needle);
    assert_eq!(
        count_entries(&r.target),
        0,
        "a refused archive must restore nothing\n{}",
        r.out
    );
}

/// The named entries are refused one by one (each named on stderr), the
/// restore fails, and the others restore.
#[track_caller]
pub(crate) fn assert_refused_entries(r: &Restored, refused: &[&str]) {
    r.out.expect_failure();
    r.out.expect_short_stderr(refused.len() + 3);
    for p in refused {
        assert!(
            r.out
                .stderr
                .lines()
                .any(|l| l.contains("could not restore") && l.contains(&format!("/{p}:"))),
            "expected a refusal naming /{p}\n{}",
            r.out
        );
    }
}

// ---------------------------------------------------------------------------
// The control: forged archives are real archives
// ---------------------------------------------------------------------------

/// The forger writes the exact line format a backup writes (a real backup's
/// file list, parsed and serialised again, is byte-identical), and a forged
/// archive of ordinary entries restores exactly under the same limits the
/// hostile cases run with.
#[test]
fn forged_archives_have_the_real_format_and_restore() {
    let s = Scene::new();
    let src = s.env.source_dir("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("sub/b.txt"), b"beta\n");
    write_file(&src.join("empty"), b"");
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    fs::hard_link(src.join("a.txt"), src.join("sub/hard")).unwrap();
    s.env.backup(&[&src]);
    let snaps = s.env.snapshots();
    let real = coffer::repo::ids::SnapshotId::from_hex(str_field(&snaps[0], "id")).unwrap();
    let snap = s.forger.repo.read_snapshot(&real).unwrap();
    let blobs = s.forger.blob_map();
    let mut list = Vec::new();
    for t in &snap.tree {
        let (pack, e) = &blobs[t];
        list.extend(s.forger.repo.read_blob(pack, e).unwrap());
    }
    let mut kinds = Vec::new();
    for line in list.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let e = Entry::parse_line(line).expect("a real line parses");
        kinds.push(e.kind);
        let mut again = Vec::new();
        e.write_line(&mut again);
        assert_eq!(
            String::from_utf8_lossy(&again),
            format!("{}\n", String::from_utf8_lossy(line)),
            "write_line must reproduce a real backup's line"
        );
    }
    for k in [
        EntryKind::Dir,
        EntryKind::File,
        EntryKind::Symlink,
        EntryKind::Hardlink,
    ] {
        assert!(kinds.contains(&k), "the real backup has no {k:?} entry");
    }

    let f = &s.forger;
    let (x, y) = (b"forged x\n".as_slice(), b"forged y, longer\n".as_slice());
    let entries = [
        dir("top"),
        file(f, "top/x", x),
        dir("top/sub"),
        file(f, "top/sub/y", y),
        file(f, "top/empty", b""),
        symlink("top/link", "sub/y"),
        hardlink("top/hard", "top/x"),
    ];
    // The list in two blobs cut mid-line: the cut is no damage.
    let all = lines(&entries);
    let tree = vec![all[..37].to_vec(), all[37..].to_vec()];
    let (id, r) = s.restore(&[x, y], &tree);
    r.out.expect_ok();
    let t = r.target.join("top");
    assert_eq!(fs::read(t.join("x")).unwrap(), x);
    assert_eq!(fs::read(t.join("sub/y")).unwrap(), y);
    assert_eq!(fs::read(t.join("empty")).unwrap(), b"");
    assert_eq!(
        fs::read_link(t.join("link")).unwrap(),
        PathBuf::from("sub/y")
    );
    assert_eq!(
        fs::metadata(t.join("hard")).unwrap().ino(),
        fs::metadata(t.join("x")).unwrap().ino()
    );
    assert_eq!(
        fs::symlink_metadata(t.join("x")).unwrap().mtime_nsec(),
        MTIME % 1_000_000_000
    );
    let ls = s.ls(&id);
    ls.expect_ok();
    assert_eq!(ls.json().as_array().unwrap().len(), entries.len(), "{ls}");
    let cat = s.cat(&id, "top/sub/y");
    cat.expect_ok();
    assert_eq!(cat.stdout.as_bytes(), y);
}

// ---------------------------------------------------------------------------
// (1) and (2): paths that leave the target
// ---------------------------------------------------------------------------

/// `a/../../outside/x` and friends: the whole archive is refused with one
/// line naming the entry; `ls` and `cat` refuse it the same way.
#[test]
fn path_traversal_is_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let evil = b"written through a traversal\n".as_slice();
    let ok = b"an honest file\n".as_slice();
    for bad in [
        "a/../../outside/x",
        "../outside/x",
        "a/b/../../../outside/x",
    ] {
        let mut tree = lines(&[dir("a"), file(f, "a/ok", ok)]);
        tree.extend(lines(&[file(f, bad, evil)]));
        let (id, r) = s.restore(&[ok, evil], &[tree]);
        assert_refused_whole(&r, bad);
        r.out.expect_stderr_contains("unsafe path");
        let ls = s.ls(&id);
        ls.expect_failure();
        ls.expect_stderr_contains(bad);
        s.cat(&id, "a/ok").expect_failure();
        s.cat(&id, bad).expect_failure();
    }
    // The same traversal hidden in `path_hex` (how non-UTF-8 names are stored).
    let bad = "a/../../outside/hex";
    let line = format!(
        r#"{{"path_hex":"{}","type":"file","mode":420,"mtime":0,"size":{},"content":[["{}",0,{}]]}}"#,
        hex::encode(bad),
        evil.len(),
        f.id(evil),
        evil.len()
    );
    let (_, r) = s.restore(&[evil], &[format!("{line}\n").into_bytes()]);
    assert_refused_whole(&r, bad);
}

/// A path starting with `/` (into the sentinel, into /tmp, or `//`): the
/// whole archive is refused, naming it.
#[test]
fn absolute_paths_are_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let evil = b"written to an absolute path\n".as_slice();
    let into_sentinel = s.abs("outside/abs");
    let far = s.far.display().to_string();
    for bad in [into_sentinel.as_str(), far.as_str(), "//outside/x", "/"] {
        let tree = lines(&[dir("a"), file(f, bad, evil)]);
        let (id, r) = s.restore(&[evil], &[tree]);
        assert_refused_whole(&r, bad);
        s.ls(&id).expect_failure();
    }
    // An absolute folder with a file below it.
    let bad = s.abs("outside/d");
    let tree = lines(&[dir(&bad), file(f, &format!("{bad}/x"), evil)]);
    let (_, r) = s.restore(&[evil], &[tree]);
    assert_refused_whole(&r, &bad);
}

// ---------------------------------------------------------------------------
// (3): symlinked parents
// ---------------------------------------------------------------------------

/// `d` is a symlink out of the target and `d/x` a file: the file lands in a
/// real folder `d` inside the target, and the symlink `d` is refused, named.
/// Also with an absolute link target, with a hard link `d/y` below the
/// symlink, and with a fifo and a symlink below it.
#[test]
fn symlinked_parents_are_never_written_through() {
    let s = Scene::new();
    let f = &s.forger;
    let x = b"must stay inside the target\n".as_slice();
    let outside_abs = s.abs("outside");
    for link_target in ["../outside", outside_abs.as_str()] {
        // File below the symlink.
        let tree = lines(&[symlink("d", link_target), file(f, "d/x", x)]);
        let (_, r) = s.restore(&[x], &[tree]);
        assert_refused_entries(&r, &["d"]);
        let d = r.target.join("d");
        assert!(
            fs::symlink_metadata(&d).unwrap().is_dir(),
            "d must be a real folder inside the target\n{}",
            r.out
        );
        assert_eq!(fs::read(d.join("x")).unwrap(), x);

        // Hard link below the symlink, to an honest file.
        let tree = lines(&[
            file(f, "f", x),
            symlink("d", link_target),
            hardlink("d/y", "f"),
        ]);
        let (_, r) = s.restore(&[x], &[tree]);
        assert_refused_entries(&r, &["d"]);
        let y = r.target.join("d/y");
        assert_eq!(
            fs::metadata(&y).unwrap().ino(),
            fs::metadata(r.target.join("f")).unwrap().ino(),
            "{}",
            r.out
        );

        // Other kinds below the symlink: a symlink, an empty file, a folder.
        let tree = lines(&[
            symlink("d", link_target),
            symlink("d/s", "/etc/passwd"),
            file(f, "d/empty", b""),
            dir("d/sub"),
        ]);
        let (_, r) = s.restore(&[], &[tree]);
        assert_refused_entries(&r, &["d"]);
        assert!(r.target.join("d/sub").is_dir());
    }
}

/// A hard link whose target goes through a symlink of the same archive:
/// `s -> ../victim` (or an absolute path), then `h => s/secret`. Linking
/// would put the victim file's inode into the target; it is refused, named.
#[test]
fn hard_links_through_symlinks_are_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let ok = b"honest\n".as_slice();
    let victim_abs = s.abs("victim");
    for link_target in ["../victim", victim_abs.as_str()] {
        let tree = lines(&[
            file(f, "a", ok),
            symlink("s", link_target),
            hardlink("h", "s/secret"),
            hardlink("t/deeper", "s/secret"),
        ]);
        let (id, r) = s.restore(&[ok], &[tree]);
        assert_refused_entries(&r, &["h", "t/deeper"]);
        assert!(fs::symlink_metadata(r.target.join("h")).is_err());
        assert_eq!(fs::read(r.target.join("a")).unwrap(), ok);
        assert_eq!(fs::metadata(&s.secret).unwrap().nlink(), 1);
        // cat follows the link inside the snapshot only: `s/secret` is no
        // file of the snapshot.
        let cat = s.cat(&id, "h");
        cat.expect_failure();
        assert!(!cat.stdout.contains("the secret"), "{cat}");
    }
}

// ---------------------------------------------------------------------------
// (4): hard links out of the target
// ---------------------------------------------------------------------------

#[test]
fn hard_links_out_of_the_target_are_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let ok = b"honest\n".as_slice();
    let secret_abs = s.secret.display().to_string();
    for bad in [
        "../../victim/secret",
        "../victim/secret",
        "a/../../victim/secret",
        secret_abs.as_str(),
    ] {
        let tree = lines(&[file(f, "a", ok), hardlink("h", bad)]);
        let (id, r) = s.restore(&[ok], &[tree]);
        assert_refused_whole(&r, "h: unsafe hard link target");
        s.ls(&id).expect_failure();
        let cat = s.cat(&id, "h");
        cat.expect_failure();
        assert!(!cat.stdout.contains("the secret"), "{cat}");
    }
    assert_eq!(fs::metadata(&s.secret).unwrap().nlink(), 1);
}

// ---------------------------------------------------------------------------
// (5): huge declared sizes, extents outside their blob
// ---------------------------------------------------------------------------

#[test]
fn huge_sizes_and_extents_outside_their_blob_are_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let data = b"0123456789".as_slice(); // 10 bytes
    let b = f.id(data);
    let ok = b"an honest file\n".as_slice();
    const HUGE: u64 = 1 << 60;

    // A size of 2^60 that the pieces do not add up to: the list is refused,
    // naming the file.
    let tree = lines(&[file(f, "ok", ok), file_with("big", HUGE, &[(b, 0, 10)])]);
    let (id, r) = s.restore(&[data, ok], &[tree]);
    assert_refused_whole(&r, "big");
    s.ls(&id).expect_failure();

    // Piece lengths whose sum overflows 64 bits (and would wrap to the size).
    let tree = lines(&[file_with("wrap", 4, &[(b, 0, u64::MAX), (b, 0, 5)])]);
    let (_, r) = s.restore(&[data], &[tree]);
    assert_refused_whole(&r, "wrap");

    // Pieces that add up to the declared size but point outside their blob:
    // each such file is refused by name before anything is created for it
    // (no 2^60-byte sparse file), and the honest file restores.
    let tree = lines(&[
        file(f, "ok", ok),
        file_with("big", HUGE, &[(b, 0, HUGE - 5), (b, 0, 5)]),
        file_with("tail", HUGE, &[(b, 0, 5), (b, 0, HUGE - 5)]),
        file_with("past-end", 20, &[(b, 5, 15), (b, 0, 5)]),
        file_with("offset-wraps", 1, &[(b, u64::MAX, 1)]),
        file_with("far-offset", 5, &[(b, 1 << 40, 5)]),
    ]);
    let (id, r) = s.restore(&[data, ok], &[tree]);
    assert_refused_entries(
        &r,
        &["big", "tail", "past-end", "offset-wraps", "far-offset"],
    );
    r.out.expect_stderr_contains("outside");
    assert_eq!(fs::read(r.target.join("ok")).unwrap(), ok);
    for name in ["big", "tail", "past-end", "offset-wraps", "far-offset"] {
        assert!(
            fs::symlink_metadata(r.target.join(name)).is_err(),
            "{name} must not exist after its refusal\n{}",
            r.out
        );
    }
    // ls shows what the list declares; cat refuses without writing 2^60 bytes.
    let ls = s.ls(&id);
    ls.expect_ok();
    let cat = s.cat(&id, "big");
    cat.expect_failure();
    cat.expect_stderr_contains("outside");
    assert!(cat.stdout.len() < 100, "{cat}");
    s.cat(&id, "past-end").expect_failure();
    s.cat(&id, "offset-wraps").expect_failure();
}

// ---------------------------------------------------------------------------
// (6): truncated and malformed file lists
// ---------------------------------------------------------------------------

#[test]
fn truncated_and_malformed_file_lists_are_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let ok = b"an honest file\n".as_slice();
    let good = lines(&[dir("a"), file(f, "a/ok", ok), file(f, "a/ok2", ok)]);

    // Cut in the middle of the last line.
    let cut = good[..good.len() - 20].to_vec();
    let (id, r) = s.restore(&[ok], &[cut]);
    assert_refused_whole(&r, "middle of an entry");
    s.ls(&id).expect_failure();
    s.cat(&id, "a/ok").expect_failure();

    let blob = f.id(ok);
    let cases: Vec<(String, &str)> = vec![
        ("{\"path\":\"a/x\",\"type\":\"file\",".into(), "EOF"),
        ("this is not json".into(), "expected"),
        (String::new(), "EOF"),
        (r#"{"path":"a/x","type":"file","mtime":0}"#.into(), "mode"),
        (r#"{"path":"a/x","mode":420,"mtime":0}"#.into(), "type"),
        (
            r#"{"type":"dir","mode":493,"mtime":0}"#.into(),
            "without a path",
        ),
        (
            r#"{"path":"a/x","type":"socket","mode":420,"mtime":0}"#.into(),
            "socket",
        ),
        (
            r#"{"path":"a/x","type":"file","mode":420,"mtime":0,"size":1,"content":[["zz",0,1]]}"#
                .into(),
            "BlobId",
        ),
        (
            format!(
                r#"{{"path":"a/x","type":"file","mode":420,"mtime":0,"size":1,"content":[["{blob}",0]]}}"#
            ),
            "invalid length",
        ),
        (
            r#"{"path":"a/x","type":"symlink","mode":511,"mtime":0}"#.into(),
            "without target",
        ),
        (
            r#"{"path":"a/x","type":"dir","mode":493,"mtime":0,"extra":1}"#.into(),
            "extra",
        ),
        (
            r#"{"path":"a/x","path_hex":"61","type":"dir","mode":493,"mtime":0}"#.into(),
            "both path and path_hex",
        ),
        (
            r#"{"path":"a/x\u0000y","type":"dir","mode":493,"mtime":0}"#.into(),
            "unsafe path",
        ),
    ];
    for (line, needle) in cases {
        let mut tree = good.clone();
        tree.extend_from_slice(line.as_bytes());
        tree.push(b'\n');
        let (_, r) = s.restore(&[ok], &[tree]);
        assert_refused_whole(&r, needle);
        r.out.expect_stderr_contains("file list");
    }
}

// ---------------------------------------------------------------------------
// (7): duplicates and entries out of walk order
// ---------------------------------------------------------------------------

#[test]
fn duplicate_and_out_of_order_entries_are_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let first = b"the first dup\n".as_slice();
    let second = b"the second dup, another size\n".as_slice();
    let ok = b"honest\n".as_slice();

    // The same file twice, with different contents: the first wins, the
    // second is refused by name.
    let tree = lines(&[
        file(f, "ok", ok),
        file(f, "dup", first),
        file(f, "dup", second),
    ]);
    let (_, r) = s.restore(&[ok, first, second], &[tree]);
    assert_refused_entries(&r, &["dup"]);
    assert_eq!(fs::read(r.target.join("dup")).unwrap(), first);
    assert_eq!(fs::read(r.target.join("ok")).unwrap(), ok);

    // An empty file, then a symlink of the same name into the victim's
    // folder: the file's metadata (mode 0777) must never be applied through
    // the symlink to the victim.
    let mut wide = file(f, "x", b"");
    wide.mode = 0o777;
    let fifo = {
        let mut e = entry(b"p", EntryKind::Fifo);
        e.mode = 0o666;
        e
    };
    let tree = lines(&[
        wide,
        symlink("x", "../victim/secret"),
        fifo,
        symlink("p", &s.secret.display().to_string()),
    ]);
    let (_, r) = s.restore(&[], &[tree]);
    assert_refused_entries(&r, &["x", "p"]);
    assert_eq!(
        fs::metadata(&s.secret).unwrap().permissions().mode() & 0o7777,
        0o600
    );

    // A folder after the files below it (not walk order): the folder entry
    // is refused by name; what is below it restores.
    let mut late = dir("a");
    late.mode = 0o700;
    let tree = lines(&[dir("b"), file(f, "a/f", ok), late, file(f, "b/g", ok)]);
    let (_, r) = s.restore(&[ok], &[tree]);
    assert_refused_entries(&r, &["a"]);
    assert_eq!(fs::read(r.target.join("a/f")).unwrap(), ok);
    assert_eq!(fs::read(r.target.join("b/g")).unwrap(), ok);

    // A folder twice, and a file where a folder was.
    let tree = lines(&[dir("c"), file(f, "c/f", ok), dir("c"), file(f, "c", ok)]);
    let (_, r) = s.restore(&[ok], &[tree]);
    assert_refused_entries(&r, &["c"]);
    assert_eq!(fs::read(r.target.join("c/f")).unwrap(), ok);
}

// ---------------------------------------------------------------------------
// A hostile tree index (format 2)
// ---------------------------------------------------------------------------

/// The tree index only says where to start reading: one that points past
/// its blob, into the middle of a line, at a blob that does not exist, at an
/// entry other than the one it names, or that is no index at all, makes
/// `cat` and `restore --include PATH` fail with a clear error; never a panic,
/// never a silent "0 files", never a write outside. A whole restore does not
/// use the index and restores.
#[test]
fn hostile_tree_indexes_are_refused() {
    let s = Scene::new();
    let f = &s.forger;
    let ok = b"an honest file\n".as_slice();
    let list = lines(&[dir("a"), file(f, "a/ok", ok), file(f, "b", ok)]);
    let indexes: [(&str, &str); 6] = [
        (r#"{"blob":0,"offset":4000000,"path":"a"}"#, "points past"),
        (r#"{"blob":0,"offset":7,"path":"a"}"#, "bad file list entry"),
        (r#"{"blob":9,"offset":0,"path":"a"}"#, "does not have"),
        (r#"{"blob":0,"offset":0,"path":"a/ok"}"#, "does not match"),
        ("not an index", "index is corrupt"),
        (
            "{\"blob\":1,\"offset\":0,\"path\":\"b\"}\n{\"blob\":0,\"offset\":0,\"path\":\"a\"}",
            "index is corrupt",
        ),
    ];
    for (ix, needle) in indexes {
        let ix = format!("{ix}\n");
        let id = f.snapshot_with_index(&[ok], std::slice::from_ref(&list), Some(ix.as_bytes()));
        let cat = s.cat(&id, "a/ok");
        cat.expect_failure();
        cat.expect_short_stderr(2);
        cat.expect_stderr_contains(needle);
        let target = s.env.unique_path("t");
        fs::create_dir(&target).unwrap();
        let before = s.state(&target);
        let out = s.run_limited(&[
            "restore".into(),
            id.clone().into(),
            "--target".into(),
            target.clone().into(),
            "--include".into(),
            "a/ok".into(),
        ]);
        let after = s.state(&target);
        s.assert_untouched(&before, &after, &out);
        out.expect_failure();
        out.expect_short_stderr(2);
        out.expect_stderr_contains(needle);
        assert_eq!(count_entries(&target), 0, "{out}");
        // A whole restore does not need the index.
        let r = s.restore_id(&id);
        r.out.expect_ok();
        assert_eq!(fs::read(r.target.join("a/ok")).unwrap(), ok);
    }
}

/// `coffer export` (when this coffer has it) on hostile archives: it
/// writes an archive, never files, and must refuse what restore refuses as
/// a whole, and never write a 2^60-byte archive for a file whose pieces lie
/// outside their blob.
#[test]
fn export_refuses_hostile_file_lists() {
    let s = Scene::new();
    if !s.env.run(["export", "--help"]).ok() {
        eprintln!("note: this coffer has no `export` command; nothing to test");
        return;
    }
    let f = &s.forger;
    let evil = b"evil\n".as_slice();
    let export = |id: &str| {
        let out_file = s.env.unique_path("export.tar");
        let out = s.run_limited(&[
            "export".into(),
            id.into(),
            "--output".into(),
            out_file.clone().into(),
        ]);
        assert!(fs::read_dir(&s.outside).unwrap().next().is_none());
        let size = fs::metadata(&out_file).map(|m| m.len()).unwrap_or(0);
        assert!(size < MIB, "export wrote {size} bytes\n{out}");
        out
    };
    for bad in ["a/../../outside/x", "/abs/x"] {
        let id = f.snapshot(&[evil], &[lines(&[file(f, bad, evil)])]);
        let out = export(&id);
        out.expect_failure();
        out.expect_short_stderr(2);
        out.expect_stderr_contains(bad);
    }
    let data = b"0123456789".as_slice();
    let b = f.id(data);
    const HUGE: u64 = 1 << 60;
    let id = f.snapshot(
        &[data, evil],
        &[lines(&[
            file(f, "ok", evil),
            file_with("big", HUGE, &[(b, 0, HUGE - 5), (b, 0, 5)]),
        ])],
    );
    let out = export(&id);
    out.expect_failure();
    out.expect_stderr_contains("big");
}
