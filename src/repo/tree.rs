//! A snapshot's file list: one JSON object per line, in walk order (parents
//! before children, names sorted bytewise), stored as CDC-split `tree` blobs.
//! JSON lines keep it readable after `age -d | zstd -d` in a disaster.

use super::RepoError;
use super::ids::BlobId;
use serde::{Deserialize, Serialize};
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
    field: &str,
) -> Result<Option<Vec<u8>>, String> {
    match (s, h) {
        (Some(s), None) => Ok(Some(s.into_bytes())),
        (None, Some(h)) => hex::decode(h)
            .map(Some)
            .map_err(|_| format!("{field}_hex is not hex")),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(format!("both {field} and {field}_hex")),
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
    pub fn parse_line(line: &[u8]) -> Result<Entry, String> {
        let raw: RawEntry = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let path = join_bytes(raw.path, raw.path_hex, "path")?.ok_or("entry without a path")?;
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
        if !is_safe_relative(&e.path) {
            return Err(format!("unsafe path {:?}", e.path_display()));
        }
        // Lengths come from storage: a sum that overflows must not wrap
        // around to the declared size (nor panic).
        let covered = e
            .content
            .iter()
            .try_fold(0u64, |n, x| n.checked_add(x.length));
        if e.kind == EntryKind::File && covered != Some(e.size) {
            return Err(match covered {
                Some(covered) => format!(
                    "{}: content covers {covered} of {} bytes",
                    e.path_display(),
                    e.size
                ),
                None => format!(
                    "{}: content lengths add up to more than 2^64 bytes",
                    e.path_display()
                ),
            });
        }
        if matches!(e.kind, EntryKind::Symlink | EntryKind::Hardlink) && e.target.is_none() {
            return Err(format!("{}: link without target", e.path_display()));
        }
        if e.kind == EntryKind::Hardlink && !is_safe_relative(e.target.as_deref().unwrap_or(b"")) {
            return Err(format!("{}: unsafe hard link target", e.path_display()));
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

/// Reassembles entries from the concatenated tree blobs, line by line.
#[derive(Default)]
pub struct TreeParser {
    pending: Vec<u8>,
}

impl TreeParser {
    /// Feeds the next blob; returns the complete entries it finished.
    pub fn feed(&mut self, blob: &[u8], what: &str) -> Result<Vec<Entry>, RepoError> {
        self.pending.extend_from_slice(blob);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + nl];
            out.push(
                Entry::parse_line(line).map_err(|reason| RepoError::Corrupt {
                    object: what.to_string(),
                    reason: format!("bad file list entry: {reason}"),
                })?,
            );
            start += nl + 1;
        }
        self.pending.drain(..start);
        Ok(out)
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
    /// order: a lookup would then stop too early, so readers must scan.
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
        }
        Some(out)
    }
}

/// Parses a tree index blob.
pub fn parse_index(data: &[u8]) -> Result<Vec<IndexLine>, String> {
    let mut out: Vec<IndexLine> = Vec::new();
    for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let raw: RawIndexLine = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        let path =
            join_bytes(raw.path, raw.path_hex, "path")?.ok_or("index line without a path")?;
        if out
            .last()
            .is_some_and(|p| p.blob >= raw.blob || walk_order(&p.path, &path).is_gt())
        {
            return Err("tree index out of order".into());
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
