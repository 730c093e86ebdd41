//! The one glob rule, for backup excludes, restore and export includes and
//! excludes, and `find`: a pattern without `/` matches a name anywhere (the
//! last component of a path); a pattern with `/` matches the whole path from
//! the root (a leading `/` is optional: snapshot paths have none). `*` and
//! `?` stay within one component, `**` crosses them, `\` escapes.
//!
//! Paths are snapshot paths: the absolute path without its leading `/`.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// A glob that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum GlobError {
    /// `what` is the flag or key it came from (`exclude`, `include`, …).
    #[error("{what} {pattern:?}: {error}")]
    Pattern {
        what: &'static str,
        pattern: String,
        error: globset::Error,
    },
    /// The set of globs could not be compiled (globset's message).
    #[error("{0}")]
    Set(globset::Error),
}

/// Compiled globs under the rule above; each match says which pattern (its
/// place in the list given) matched.
pub struct Globs {
    by_name: GlobSet,
    /// The pattern index of each glob in `by_name`.
    name_ids: Vec<usize>,
    by_path: GlobSet,
    path_ids: Vec<usize>,
    patterns: Vec<String>,
}

impl Globs {
    /// Compiles `patterns`; `what` names them in an error.
    pub fn new(patterns: &[String], what: &'static str) -> Result<Globs, GlobError> {
        let (mut by_name, mut by_path) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        let (mut name_ids, mut path_ids) = (Vec::new(), Vec::new());
        for (i, p) in patterns.iter().enumerate() {
            let anchored = p.contains('/');
            let g = GlobBuilder::new(p.trim_start_matches('/'))
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|error| GlobError::Pattern {
                    what,
                    pattern: p.clone(),
                    error,
                })?;
            if anchored {
                by_path.add(g);
                path_ids.push(i);
            } else {
                by_name.add(g);
                name_ids.push(i);
            }
        }
        Ok(Globs {
            by_name: by_name.build().map_err(GlobError::Set)?,
            name_ids,
            by_path: by_path.build().map_err(GlobError::Set)?,
            path_ids,
            patterns: patterns.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Whether a pattern matches `path` itself.
    pub fn is_match(&self, path: &[u8]) -> bool {
        !path.is_empty()
            && (self.by_name.is_match(OsStr::from_bytes(last(path)))
                || self.by_path.is_match(OsStr::from_bytes(path)))
    }

    /// Whether a pattern matches `path` or a folder above it (a match takes
    /// what is below it).
    pub fn is_match_here_or_above(&self, path: &[u8]) -> bool {
        ancestry(path).any(|p| self.is_match(p))
    }

    /// Adds to `out` the index of every pattern that matches `path` or a
    /// folder above it.
    pub fn which_here_or_above(&self, path: &[u8], out: &mut Vec<usize>) {
        for p in ancestry(path).filter(|p| !p.is_empty()) {
            for i in self.by_name.matches(OsStr::from_bytes(last(p))) {
                out.push(self.name_ids[i]);
            }
            for i in self.by_path.matches(OsStr::from_bytes(p)) {
                out.push(self.path_ids[i]);
            }
        }
    }
}

/// The last component of a path.
fn last(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// `a/b/c`, `a/b`, `a`.
fn ancestry(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::successors(Some(path), |p| {
        p.iter().rposition(|&b| b == b'/').map(|i| &p[..i])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(p: &[&str]) -> Globs {
        let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
        Globs::new(&p, "include").unwrap()
    }

    #[test]
    fn without_a_slash_a_name_anywhere_with_one_the_path_from_the_root() {
        let g = globs(&["*.bin"]);
        assert!(g.is_match(b"a.bin") && g.is_match(b"srv/deep/a.bin"));
        assert!(!g.is_match(b"srv/a.bin/x") && !g.is_match(b"a.binx"));
        let g = globs(&["/srv/*.log"]);
        assert!(g.is_match(b"srv/a.log"));
        assert!(!g.is_match(b"srv/x/a.log") && !g.is_match(b"x/srv/a.log"));
        // The leading '/' is optional.
        let g = globs(&["srv/www/**"]);
        assert!(g.is_match(b"srv/www/a/b") && !g.is_match(b"x/srv/www/a"));
        let g = globs(&["**/cache"]);
        assert!(g.is_match(b"cache") && g.is_match(b"var/cache"));
        let g = globs(&["a\\*b"]);
        assert!(g.is_match(b"x/a*b") && !g.is_match(b"x/axb"));
        assert!(!globs(&["*"]).is_match(b""));
    }

    #[test]
    fn a_match_above_takes_what_is_below_and_says_which_pattern() {
        let g = globs(&["/etc", "*.bin", "logs"]);
        assert!(g.is_match_here_or_above(b"etc/passwd"));
        assert!(g.is_match_here_or_above(b"srv/x.bin/inner"));
        assert!(!g.is_match_here_or_above(b"srv/etc2/a"));
        let mut which = Vec::new();
        g.which_here_or_above(b"var/logs/a.bin", &mut which);
        which.sort();
        assert_eq!(which, [1, 2]);
        which.clear();
        g.which_here_or_above(b"etc/x", &mut which);
        assert_eq!(which, [0]);
    }

    #[test]
    fn a_bad_pattern_is_named_with_its_flag() {
        let err = Globs::new(&["ok".into(), "[".into()], "exclude")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("exclude \"[\": "), "{err}");
    }
}
