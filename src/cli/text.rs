//! Names in human output. A file name, a host or a profile name comes from
//! whoever could name a file on a server or write a snapshot; printed raw,
//! ESC, BEL or a newline in it would reach the operator's terminal. So every
//! name the CLI prints for people goes through [`name`], which escapes as
//! `ls -b` does: `\a \b \t \n \v \f \r`, a backslash as `\\`, any other
//! control character (C0, DEL, C1) and every byte of invalid UTF-8 as
//! `\ooo` octal bytes. Printable text, non-ASCII letters included, stays as
//! it is. `--json` output keeps the exact names (JSON escapes by itself).

use std::borrow::Cow;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `1 file`, `2 files`, `0 files`: a count and its noun, in the singular
/// only for one. Every count the CLI prints for people goes through here.
pub fn count(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// A name (raw bytes: a snapshot path, a file name) for a terminal.
pub fn name(raw: &[u8]) -> Cow<'_, str> {
    if raw.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\') {
        // Printable ASCII: always valid UTF-8.
        if let Ok(s) = std::str::from_utf8(raw) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(raw.len() + 8);
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            push(&mut out, c, true);
        }
        for &b in chunk.invalid() {
            octal(&mut out, b);
        }
    }
    Cow::Owned(out)
}

/// [`name`] of a string (a host, a profile, a path already made text).
pub fn name_str(s: &str) -> Cow<'_, str> {
    name(s.as_bytes())
}

/// [`name`] of a local path.
pub fn path(p: &Path) -> Cow<'_, str> {
    name(p.as_os_str().as_bytes())
}

/// A message that may hold names (an error, a warning): its control
/// characters are escaped, a backslash stays (messages quote globs).
pub fn message(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push(&mut out, c, false);
    }
    Cow::Owned(out)
}

fn push(out: &mut String, c: char, backslash: bool) {
    match c {
        '\\' if backslash => out.push_str("\\\\"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\x0b' => out.push_str("\\v"),
        '\x0c' => out.push_str("\\f"),
        '\r' => out.push_str("\\r"),
        c if c.is_control() => {
            let mut buf = [0u8; 4];
            for &b in c.encode_utf8(&mut buf).as_bytes() {
                octal(out, b);
            }
        }
        c => out.push(c),
    }
}

fn octal(out: &mut String, b: u8) {
    out.push('\\');
    for shift in [6, 3, 0] {
        out.push(char::from(b'0' + ((b >> shift) & 7)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bad_bytes_are_escaped_as_ls_b_does() {
        assert_eq!(name(b"plain/name.txt"), "plain/name.txt");
        assert!(matches!(name(b"plain"), Cow::Borrowed(_)));
        assert_eq!(name("café ünï 日本".as_bytes()), "café ünï 日本");
        assert_eq!(name(b"a\x1b[31mred\x07"), "a\\033[31mred\\a");
        assert_eq!(name(b"line\nbreak\r\ttab"), "line\\nbreak\\r\\ttab");
        assert_eq!(name(b"del\x7f"), "del\\177");
        assert_eq!(name(b"back\\slash"), "back\\\\slash");
        // U+009B (CSI, a C1 control) is two bytes in UTF-8.
        assert_eq!(name("c1\u{9b}2J".as_bytes()), "c1\\302\\2332J");
        assert_eq!(name(b"bad\xff\xfeutf8"), "bad\\377\\376utf8");
        assert_eq!(name(b"\0"), "\\000");
        for b in 0u8..=255 {
            let raw = [b'x', b, b'y'];
            let shown = name(&raw);
            assert!(
                !shown.chars().any(char::is_control),
                "byte {b:#x} shown as {shown:?}"
            );
        }
    }

    #[test]
    fn counts_take_the_singular_only_for_one() {
        assert_eq!(count(0, "file", "files"), "0 files");
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(2, "entry", "entries"), "2 entries");
        assert_eq!(count(1, "entry", "entries"), "1 entry");
        assert_eq!(count(45008, "file", "files"), "45008 files");
    }

    #[test]
    fn messages_keep_backslashes_and_escape_controls() {
        assert_eq!(message("glob \"a\\*\": bad"), "glob \"a\\*\": bad");
        assert_eq!(
            message("/src/x\x1b]0;pwned\x07: gone"),
            "/src/x\\033]0;pwned\\a: gone"
        );
        assert!(matches!(message("fine"), Cow::Borrowed(_)));
    }
}
