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
        let covered: u64 = e.content.iter().map(|x| x.length).sum();
        if e.kind == EntryKind::File && covered != e.size {
            return Err(format!(
                "{}: content covers {covered} of {} bytes",
                e.path_display(),
                e.size
            ));
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

#[cfg(test)]
mod tests {
    use super::*;

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
