//! A snapshot's file list: one JSON object per line, in walk order (parents
//! before children, names sorted bytewise), stored as CDC-split `tree` blobs.
//! JSON lines keep it readable after `age -d | zstd -d` in a disaster.

use super::ids::BlobId;
use super::limits::{MAX_ENTRY_LINE, MAX_PATH, TREE_BLOB};
use super::{Malformed, RepoError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// A further name of a file stored earlier in the same snapshot (`target`).
    Hardlink,
    Fifo,
    Chardev,
    Blockdev,
}

impl EntryKind {
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Symlink => "symlink",
            EntryKind::Hardlink => "hardlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Chardev => "chardev",
            EntryKind::Blockdev => "blockdev",
        }
    }
}

/// A piece of file content: `length` bytes at `offset` in blob `blob`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub blob: BlobId,
    pub offset: u64,
    pub length: u64,
}

impl Serialize for Extent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.blob, self.offset, self.length).serialize(s)
    }
}
impl<'de> Deserialize<'de> for Extent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (blob, offset, length) = <(BlobId, u64, u64)>::deserialize(d)?;
        Ok(Extent {
            blob,
            offset,
            length,
        })
    }
}

/// One entry of the file list. Paths are relative to `/` (no leading slash),
/// as raw bytes: names need not be UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    pub ctime: i64,
    pub ino: u64,
    pub size: u64,
    pub content: Vec<Extent>,
    /// Symlink target, or the earlier path of a hard link.
    pub target: Option<Vec<u8>>,
    pub rdev: u64,
}

/// The JSON shape: byte strings are `"path"` when UTF-8, else `"path_hex"`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    path_hex: Option<String>,
    #[serde(rename = "type")]
    kind: EntryKind,
    mode: u32,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    mtime: i64,
    #[serde(default)]
    ctime: i64,
    #[serde(default)]
    ino: u64,
    #[serde(default)]
    size: u64,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    content: Vec<Extent>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    target_hex: Option<String>,
    #[serde(skip_serializing_if = "is_zero", default)]
    rdev: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn split_bytes(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(hex::encode(b))),
    }
}

fn join_bytes(
    s: Option<String>,
    h: Option<String>,
    field: &'static str,
) -> Result<Option<Vec<u8>>, Malformed> {
    match (s, h) {
        (Some(s), None) => Ok(Some(s.into_bytes())),
        (None, Some(h)) => hex::decode(h)
            .map(Some)
            .map_err(|_| Malformed::NotHex { field }),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(Malformed::BothForms { field }),
    }
}

impl Entry {
    pub fn path_display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    pub fn path_os(&self) -> &std::ffi::OsStr {
        std::ffi::OsStr::from_bytes(&self.path)
    }

    /// Appends this entry as one JSON line.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let (path, path_hex) = split_bytes(&self.path);
        let (target, target_hex) = match &self.target {
            Some(t) => split_bytes(t),
            None => (None, None),
        };
        let raw = RawEntry {
            path,
            path_hex,
            kind: self.kind,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime: self.mtime,
            ctime: self.ctime,
            ino: self.ino,
            size: self.size,
            content: self.content.clone(),
            target,
            target_hex,
            rdev: self.rdev,
        };
        // Serializing plain data into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &raw);
        out.push(b'\n');
    }

    /// Parses one line, validating what restore relies on.
    pub fn parse_line(line: &[u8]) -> Result<Entry, Malformed> {
        let raw: RawEntry =
            serde_json::from_slice(line).map_err(|e| Malformed::EntryJson(e.to_string()))?;
        let path = join_bytes(raw.path, raw.path_hex, "path")?.ok_or(Malformed::NoPath)?;
        let target = join_bytes(raw.target, raw.target_hex, "target")?;
        let e = Entry {
            path,
            kind: raw.kind,
            mode: raw.mode,
            uid: raw.uid,
            gid: raw.gid,
            mtime: raw.mtime,
            ctime: raw.ctime,
            ino: raw.ino,
            size: raw.size,
            content: raw.content,
            target,
            rdev: raw.rdev,
        };
        let path = || e.path_display();
        if e.path.len() > MAX_PATH {
            return Err(Malformed::PathTooLong {
                len: e.path.len(),
                start: String::from_utf8_lossy(&e.path[..200]).into_owned(),
            });
        }
        if e.target.as_ref().is_some_and(|t| t.len() > MAX_PATH) {
            return Err(Malformed::TargetTooLong { path: path() });
        }
        if !is_safe_relative(&e.path) {
            return Err(Malformed::UnsafePath { path: path() });
        }
        // Lengths come from storage: a sum that overflows must not wrap
        // around to the declared size (nor panic).
        let covered = e
            .content
            .iter()
            .try_fold(0u64, |n, x| n.checked_add(x.length));
        if e.kind == EntryKind::File && covered != Some(e.size) {
            return Err(match covered {
                Some(covered) => Malformed::ContentShort {
                    path: path(),
                    covered,
                    size: e.size,
                },
                None => Malformed::ContentOverflow { path: path() },
            });
        }
        if matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink) && e.target.is_none() {
            return Err(Malformed::NoTarget { path: path() });
        }
        if e.kind == EntryKind::Hardlink && !is_safe_relative(e.target.as_deref().unwrap_or(b"")) {
            return Err(Malformed::UnsafeHardLink { path: path() });
        }
        Ok(e)
    }
}

/// A relative path with no empty, `.` or `..` component and no NUL.
pub fn is_safe_relative(p: &[u8]) -> bool {
    !p.is_empty()
        && !p.starts_with(b"/")
        && !p.contains(&0)
        && p.split(|&b| b == b'/')
            .all(|c| !c.is_empty() && c != b"." && c != b"..")
}

/// Refuses a file list entry (line) longer than [`MAX_ENTRY_LINE`]: `len`
/// bytes of it are known so far.
pub fn check_line_length(len: usize) -> Result<(), Malformed> {
    if len > MAX_ENTRY_LINE {
        return Err(Malformed::LineTooLong);
    }
    Ok(())
}

/// Reassembles entries from the concatenated tree blobs, line by line. Only
/// an unfinished line is kept between blobs, and at most
/// [`MAX_ENTRY_LINE`] of it: a list that never ends a line is refused there.
#[derive(Default)]
pub struct TreeParser {
    pending: Vec<u8>,
}

impl TreeParser {
    /// Feeds the next blob; returns the complete entries it finished.
    pub fn feed(&mut self, blob: &[u8], what: &str) -> Result<Vec<Entry>, RepoError> {
        let corrupt = |m: Malformed| RepoError::Corrupt {
            object: what.to_string(),
            reason: format!("bad file list entry: {m}"),
        };
        let parse = |line: &[u8]| {
            check_line_length(line.len())
                .and_then(|()| Entry::parse_line(line))
                .map_err(corrupt)
        };
        let mut out = Vec::new();
        let mut rest = blob;
        if !self.pending.is_empty() {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                return self.hold(rest).map_err(corrupt).map(|()| out);
            };
            self.hold(&rest[..nl]).map_err(corrupt)?;
            out.push(parse(&self.pending)?);
            self.pending.clear();
            rest = &rest[nl + 1..];
        }
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            out.push(parse(&rest[..nl])?);
            rest = &rest[nl + 1..];
        }
        self.hold(rest).map_err(corrupt)?;
        Ok(out)
    }

    /// Keeps the start of an unfinished line, refusing it past the cap
    /// before anything is copied.
    fn hold(&mut self, part: &[u8]) -> Result<(), Malformed> {
        check_line_length(self.pending.len() + part.len())?;
        self.pending.extend_from_slice(part);
        if self.pending.is_empty() {
            // A finished list drops the buffer of its longest line.
            self.pending = Vec::new();
        }
        Ok(())
    }

    /// Whether the blob fed next continues an unfinished line (rather than
    /// starting with a new entry).
    pub fn in_line(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn finish(self, what: &str) -> Result<(), RepoError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(RepoError::Corrupt {
                object: what.to_string(),
                reason: "file list ends in the middle of an entry".into(),
            })
        }
    }
}

impl Entry {
    /// Why a piece of this file lies outside its blob, given each blob's
    /// plaintext length (`raw_length` from the index; None for a blob the
    /// index lacks, which is missing data, not a bad list).
    pub fn piece_outside(&self, raw_length: impl Fn(&BlobId) -> Option<u64>) -> Option<String> {
        self.content.iter().find_map(|x| {
            let len = raw_length(&x.blob)?;
            x.offset
                .checked_add(x.length)
                .is_none_or(|end| end > len)
                .then(|| {
                    format!(
                        "the file list points outside blob {} ({} + {} > {len} bytes)",
                        x.blob.short(),
                        x.offset,
                        x.length
                    )
                })
        })
    }
}

/// Why an entry that parses is not restored as listed (see [`ListCheck`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its path was listed before: only the first is restored.
    Duplicate,
    /// It comes after entries below it (not walk order): not restored.
    AfterChildren,
    /// It lies below `ancestor`, an entry that is not a folder: restore
    /// never writes through one, and refuses one of the two (the ancestor,
    /// or this entry when the ancestor is a fifo or a device).
    BelowNonFolder { ancestor: Vec<u8>, kind: EntryKind },
}

impl Refusal {
    pub fn reason(&self) -> String {
        match self {
            Refusal::Duplicate => {
                "appears more than once in the file list; only the first is restored".into()
            }
            Refusal::AfterChildren => {
                "comes after entries below it in the file list (not in walk order); not restored"
                    .into()
            }
            Refusal::BelowNonFolder { ancestor, kind } => format!(
                "lies below /{}, which is a {}, not a folder; restore does not write through it",
                String::from_utf8_lossy(ancestor),
                kind.name()
            ),
        }
    }
}

/// What [`ListCheck`] says of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Refused(Refusal),
    /// A streaming check met an entry out of walk order: its history is
    /// gone, so the list must be gone over again with [`ListCheck::remembering`].
    Unordered,
}

/// The rules over a whole file list that restore applies beyond each line
/// ([`Entry::parse_line`]) and each piece ([`Entry::piece_outside`]), fed
/// entry by entry in list order; `restore` and `check --read-data` share it.
///
/// A list in walk order (what every backup writes) can hold no duplicate
/// and no entry after those below it, and the entries below a path follow
/// it directly: [`ListCheck::streaming`] checks it in O(1) memory (the last
/// path, and the last entry that is not a folder). A list out of order (a
/// hostile one, or one written before sources were sorted in walk order)
/// needs every earlier path: [`ListCheck::remembering`] keeps them.
pub struct ListCheck {
    last: Option<Vec<u8>>,
    /// The latest entry that is not a folder, while entries may follow below it.
    non_folder: Option<(Vec<u8>, EntryKind)>,
    /// Every path accepted so far and its kind, when remembering.
    seen: Option<BTreeMap<Vec<u8>, EntryKind>>,
}

fn is_below(path: &[u8], ancestor: &[u8]) -> bool {
    path.len() > ancestor.len() && path.starts_with(ancestor) && path[ancestor.len()] == b'/'
}

impl ListCheck {
    /// O(1) memory; answers [`Verdict::Unordered`] at the first entry out of
    /// walk order, and must not be fed after that.
    pub fn streaming() -> ListCheck {
        ListCheck {
            last: None,
            non_folder: None,
            seen: None,
        }
    }

    /// Remembers every path: any order, memory in proportion to the list.
    pub fn remembering() -> ListCheck {
        ListCheck {
            seen: Some(BTreeMap::new()),
            ..ListCheck::streaming()
        }
    }

    /// The verdict on the next entry of the list.
    pub fn entry(&mut self, path: &[u8], kind: EntryKind) -> Verdict {
        let Some(seen) = &mut self.seen else {
            if self
                .last
                .as_deref()
                .is_some_and(|l| walk_order(l, path).is_ge())
            {
                return Verdict::Unordered;
            }
            let last = self.last.get_or_insert_with(Vec::new);
            last.clear();
            last.extend_from_slice(path);
            return match &self.non_folder {
                Some((a, k)) if is_below(path, a) => Verdict::Refused(Refusal::BelowNonFolder {
                    ancestor: a.clone(),
                    kind: *k,
                }),
                _ => {
                    self.non_folder = (kind != EntryKind::Dir).then(|| (path.to_vec(), kind));
                    Verdict::Ok
                }
            };
        };
        if seen.contains_key(path) {
            return Verdict::Refused(Refusal::Duplicate);
        }
        // Everything below `path` sorts bytewise right after `path/`.
        let mut below = path.to_vec();
        below.push(b'/');
        if seen
            .range(below.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&below))
        {
            return Verdict::Refused(Refusal::AfterChildren);
        }
        let mut up = path;
        let mut verdict = Verdict::Ok;
        while let Some(i) = up.iter().rposition(|&b| b == b'/') {
            up = &up[..i];
            if let Some(&k) = seen.get(up).filter(|k| **k != EntryKind::Dir) {
                verdict = Verdict::Refused(Refusal::BelowNonFolder {
                    ancestor: up.to_vec(),
                    kind: k,
                });
                break;
            }
        }
        seen.insert(path.to_vec(), kind);
        verdict
    }

    /// The refusals of a list held in memory, by position: streaming, and
    /// once more remembering if the list is out of walk order.
    pub fn refusals(entries: &[Entry]) -> Vec<(usize, Refusal)> {
        let mut check = ListCheck::streaming();
        let mut out = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match check.entry(&e.path, e.kind) {
                Verdict::Ok => {}
                Verdict::Refused(r) => out.push((i, r)),
                Verdict::Unordered => {
                    let mut check = ListCheck::remembering();
                    return entries
                        .iter()
                        .enumerate()
                        .filter_map(|(i, e)| match check.entry(&e.path, e.kind) {
                            Verdict::Refused(r) => Some((i, r)),
                            _ => None,
                        })
                        .collect();
                }
            }
        }
        out
    }
}

/// The order of a file list: paths compared component by component, which
/// is walk order (parents before children, siblings sorted bytewise).
pub fn walk_order(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// One line of a tree index: tree blob `blob` (its position in the snapshot's
/// `tree`) has its first line start at byte `offset`, the entry for `path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexLine {
    pub blob: u32,
    pub offset: u32,
    pub path: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndexLine {
    blob: u32,
    offset: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    path_hex: Option<String>,
}

/// Builds a snapshot's tree index (format 2) as the file list is cut into
/// blobs: for each blob, where its first line starts and whose it is. With
/// it, one path is found by reading the index and one or two tree blobs.
#[derive(Default)]
pub struct TreeIndexBuilder {
    offset: u64,
    chunk_start: u64,
    chunks: u32,
    pending: std::collections::VecDeque<(u64, Vec<u8>)>,
    lines: Vec<IndexLine>,
    last: Option<Vec<u8>>,
    unordered: bool,
}

impl TreeIndexBuilder {
    /// A line of `len` bytes for `path` was appended to the stream.
    pub fn line(&mut self, path: &[u8], len: usize) {
        if self
            .last
            .as_deref()
            .is_some_and(|l| walk_order(l, path).is_ge())
        {
            self.unordered = true;
        }
        self.last = Some(path.to_vec());
        self.pending.push_back((self.offset, path.to_vec()));
        self.offset += len as u64;
    }

    /// The stream's next `len` bytes became a tree blob.
    pub fn chunk(&mut self, len: usize) {
        let end = self.chunk_start + len as u64;
        while self
            .pending
            .front()
            .is_some_and(|(s, _)| *s < self.chunk_start)
        {
            self.pending.pop_front();
        }
        if let Some((s, path)) = self.pending.front().filter(|(s, _)| *s < end) {
            self.lines.push(IndexLine {
                blob: self.chunks,
                offset: (s - self.chunk_start) as u32,
                path: path.clone(),
            });
        }
        while self.pending.front().is_some_and(|(s, _)| *s < end) {
            self.pending.pop_front();
        }
        self.chunk_start = end;
        self.chunks += 1;
    }

    /// The index as JSON lines, or None if the file list was not in walk
    /// order (a lookup would then stop too early, so readers must scan), or
    /// if the index would be larger than a tree blob can be
    /// ([`TREE_BLOB`]): readers then scan the whole list too.
    pub fn finish(self) -> Option<Vec<u8>> {
        if self.unordered {
            return None;
        }
        let mut out = Vec::new();
        for l in self.lines {
            let (path, path_hex) = split_bytes(&l.path);
            let _ = serde_json::to_writer(
                &mut out,
                &RawIndexLine {
                    blob: l.blob,
                    offset: l.offset,
                    path,
                    path_hex,
                },
            );
            out.push(b'\n');
            if out.len() as u64 > TREE_BLOB {
                return None;
            }
        }
        Some(out)
    }
}

/// Parses a tree index blob.
pub fn parse_index(data: &[u8]) -> Result<Vec<IndexLine>, Malformed> {
    let mut out: Vec<IndexLine> = Vec::new();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let raw: RawIndexLine =
            serde_json::from_slice(line).map_err(|e| Malformed::EntryJson(e.to_string()))?;
        let path = join_bytes(raw.path, raw.path_hex, "path")?.ok_or(Malformed::IndexLineNoPath)?;
        if out
            .last()
            .is_some_and(|p| p.blob >= raw.blob || walk_order(&p.path, &path).is_gt())
        {
            return Err(Malformed::IndexOrder);
        }
        out.push(IndexLine {
            blob: raw.blob,
            offset: raw.offset,
            path,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_points_at_the_first_line_of_each_blob() {
        let mut b = TreeIndexBuilder::default();
        // Lines of 10 bytes; blobs of 25, 10, 30 bytes.
        for p in ["a", "a/b", "a/c", "b", "c", "d"] {
            b.line(p.as_bytes(), 10);
        }
        b.chunk(25); // lines at 0, 10, 20
        b.chunk(10); // 25..35: the line at 30
        b.chunk(25); // 35..60: lines at 40, 50
        let lines = parse_index(&b.finish().unwrap()).unwrap();
        let got: Vec<(u32, u32, &[u8])> = lines
            .iter()
            .map(|l| (l.blob, l.offset, &l.path[..]))
            .collect();
        assert_eq!(got, [(0, 0, &b"a"[..]), (1, 5, b"b"), (2, 5, b"c")]);
        assert!(
            walk_order(b"a/b", b"a.txt").is_lt(),
            "children of a come before a.txt"
        );
    }

    #[test]
    fn a_file_list_out_of_walk_order_gets_no_index() {
        let mut b = TreeIndexBuilder::default();
        // Sorted as whole strings, `x/www-old` would come before `x/www/app`.
        for p in ["x", "x/www-old", "x/www", "x/www/app"] {
            b.line(p.as_bytes(), 10);
        }
        b.chunk(40);
        assert!(b.finish().is_none(), "an index over an unordered list");
    }

    #[test]
    fn odd_bytes_round_trip() {
        let e = Entry {
            path: b"home/\xff\xfe/na\nme".to_vec(),
            kind: EntryKind::Symlink,
            mode: 0o777,
            uid: 1,
            gid: 2,
            mtime: -5,
            ctime: 7,
            ino: 9,
            size: 0,
            content: vec![],
            target: Some(b"../\x80x".to_vec()),
            rdev: 0,
        };
        let mut line = Vec::new();
        e.write_line(&mut line);
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(Entry::parse_line(&line[..line.len() - 1]).unwrap(), e);
    }

    /// The rules restore applies over a list, streaming (in walk order) and
    /// remembering (out of order) alike.
    #[test]
    fn list_checks_refuse_what_restore_refuses() {
        let e = |p: &str, kind: EntryKind| Entry {
            path: p.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            ctime: 0,
            ino: 0,
            size: 0,
            content: vec![],
            target: None,
            rdev: 0,
        };
        use EntryKind::{Dir, File, Symlink};
        let ordered = [e("a", Dir), e("a/b", File), e("a/c", Dir), e("b", File)];
        assert!(ListCheck::refusals(&ordered).is_empty());
        let mut c = ListCheck::streaming();
        assert_eq!(c.entry(b"a", Dir), Verdict::Ok);
        assert_eq!(c.entry(b"a", Dir), Verdict::Unordered);
        // Duplicates and a folder after what is below it: by position.
        let list = [
            e("b", Dir),
            e("a/f", File),
            e("a", Dir),
            e("b", File),
            e("c", File),
        ];
        let got: Vec<(usize, Refusal)> = ListCheck::refusals(&list);
        assert_eq!(got, [(2, Refusal::AfterChildren), (3, Refusal::Duplicate)]);
        // Below a symlink: in order and out of order.
        let link = [
            e("d", Symlink),
            e("d/x", File),
            e("d/y/z", File),
            e("e", File),
        ];
        let below = Refusal::BelowNonFolder {
            ancestor: b"d".to_vec(),
            kind: Symlink,
        };
        assert_eq!(
            ListCheck::refusals(&link),
            [(1, below.clone()), (2, below.clone())]
        );
        let mut unordered = link.to_vec();
        unordered.push(e("0", File));
        assert_eq!(
            ListCheck::refusals(&unordered),
            [(1, below.clone()), (2, below)]
        );
    }

    /// A list that never ends a line is refused once the unfinished line
    /// passes the cap, without holding more than the cap.
    #[test]
    fn an_endless_line_is_refused_at_the_cap() {
        let blob = vec![b'x'; 8 << 20];
        let mut p = TreeParser::default();
        let mut fed = 0;
        let err = loop {
            match p.feed(&blob, "t") {
                Ok(v) => assert!(v.is_empty()),
                Err(e) => break e,
            }
            fed += blob.len();
            assert!(p.pending.len() <= MAX_ENTRY_LINE);
        };
        assert_eq!(
            fed, MAX_ENTRY_LINE,
            "refused at the first blob past the cap"
        );
        assert!(
            err.to_string()
                .contains("longer than a file list entry can be"),
            "{err}"
        );
        // A long path is refused by its length.
        let line = format!(
            r#"{{"path":"{}","type":"dir","mode":493,"mtime":0}}"#,
            vec!["a"; 3000].join("/")
        );
        let err = Entry::parse_line(line.as_bytes()).unwrap_err();
        assert!(
            matches!(err, Malformed::PathTooLong { len: 5999, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("longer than a path can be"),
            "{err}"
        );
    }

    #[test]
    fn traversal_is_refused() {
        for p in [
            &b"../etc/passwd"[..],
            b"/etc/passwd",
            b"a/../../b",
            b"a//b",
            b"a/./b",
        ] {
            let line = format!(
                r#"{{"path_hex":"{}","type":"dir","mode":493,"mtime":0}}"#,
                hex::encode(p)
            );
            assert!(
                Entry::parse_line(line.as_bytes()).is_err(),
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// File lists come from storage: any bytes must parse or fail, never panic.
        #[test]
        fn garbage_file_lists_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..5)) {
            let mut p = TreeParser::default();
            for c in &chunks {
                if p.feed(c, "t").is_err() {
                    break;
                }
            }
        }

        #[test]
        fn json_shaped_garbage_never_panics(path in ".{0,40}", size in any::<u64>(), off in any::<u64>(), len in any::<u64>()) {
            let line = serde_json::json!({"path": path, "type": "file", "mode": 420, "mtime": 0, "size": size,
                "content": [["00".repeat(32), off, len]]}).to_string();
            let _ = Entry::parse_line(line.as_bytes());
        }
    }
}
