// SPDX-License-Identifier: MIT
//! DataSync SIMPLE_PATTERN filters: `|`-separated patterns with `*` as the
//! only wildcard.
//!
//! Paths are seen from the root of the location (`/photos/2024/a.jpg`). A
//! pattern that starts with `/` is anchored there; any other pattern matches
//! at any depth (`*.tmp` and `.snapshot` match in every directory). `*`
//! matches any run of bytes, `/` included. A pattern that matches a directory
//! matches everything below it.

use std::collections::HashSet;
use std::sync::Arc;

/// A filter string the engine refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("the {which} filter {value:?} has an empty pattern: patterns are separated by '|' and none may be empty")]
    EmptyPattern { which: &'static str, value: String },
    #[error("the {which} filter pattern {pattern:?} contains a NUL byte")]
    NulByte {
        which: &'static str,
        pattern: String,
    },
}

/// The paths a manifest names (rooted, `/a/b`), and the directories above
/// them: only these are transferred and verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestPaths {
    pub files: HashSet<Vec<u8>>,
    pub dirs: HashSet<Vec<u8>>,
}

impl ManifestPaths {
    /// Adds a rooted path (`/a/b/c`) and the directories above it.
    pub fn insert(&mut self, path: Vec<u8>) {
        let mut end = path.len();
        while let Some(i) = path[..end].iter().rposition(|&b| b == b'/') {
            if i == 0 {
                break;
            }
            if !self.dirs.insert(path[..i].to_vec()) {
                break; // and those above it, by an earlier path
            }
            end = i;
        }
        self.files.insert(path);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern(Vec<u8>);

impl Pattern {
    fn parse(which: &'static str, text: &str) -> Result<Pattern, FilterError> {
        if text.contains('\0') {
            return Err(FilterError::NulByte {
                which,
                pattern: text.to_string(),
            });
        }
        let text = text.strip_suffix('/').unwrap_or(text);
        let glob = if text.starts_with('/') || text.starts_with('*') {
            text.as_bytes().to_vec()
        } else {
            // Unanchored: the pattern may start at any directory level.
            [b"*/", text.as_bytes()].concat()
        };
        Ok(Pattern(glob))
    }

    fn matches(&self, path: &[u8]) -> bool {
        glob_match(&self.0, path)
    }

    /// Could this pattern match something inside directory `dir`?
    fn may_match_below(&self, dir: &[u8]) -> bool {
        let mut prefix = dir.to_vec();
        if prefix.last() != Some(&b'/') {
            prefix.push(b'/');
        }
        glob_prefix(&self.0, &prefix)
    }
}

/// `*`-only glob matching of the whole text.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// True when some text that starts with `prefix` matches the pattern.
fn glob_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    // Once a `*` is reached, anything can follow.
    for (i, &c) in pattern.iter().enumerate() {
        if c == b'*' {
            return true;
        }
        match prefix.get(i) {
            None => return true,
            Some(&t) if t != c => return false,
            Some(_) => {}
        }
    }
    pattern.len() >= prefix.len()
}

fn split(which: &'static str, values: &[String]) -> Result<Vec<Pattern>, FilterError> {
    let mut patterns = Vec::new();
    for value in values {
        for part in value.split('|') {
            if part.is_empty() {
                return Err(FilterError::EmptyPattern {
                    which,
                    value: value.clone(),
                });
            }
            patterns.push(Pattern::parse(which, part)?);
        }
    }
    Ok(patterns)
}

/// The include and exclude filters of a task, and its manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    includes: Vec<Pattern>,
    excludes: Vec<Pattern>,
    manifest: Option<Arc<ManifestPaths>>,
}

/// What the filters say of one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Copy it (and, for a directory, everything below it that is not excluded).
    Included,
    /// A directory that is not included itself but may hold included entries:
    /// walk it, create it, but apply the filters again below.
    Traverse,
    /// Leave it alone, on both sides.
    Excluded,
}

impl Filters {
    pub fn parse(includes: &[String], excludes: &[String]) -> Result<Filters, FilterError> {
        Ok(Filters {
            includes: split("include", includes)?,
            excludes: split("exclude", excludes)?,
            manifest: None,
        })
    }

    /// Only what `manifest` names (and the directories above it), less
    /// what the excludes leave out.
    pub fn with_manifest(mut self, manifest: Arc<ManifestPaths>) -> Filters {
        self.manifest = Some(manifest);
        self
    }

    pub fn manifest(&self) -> Option<&ManifestPaths> {
        self.manifest.as_deref()
    }

    /// Whether the root itself is included (no include filter or manifest
    /// narrows it).
    pub fn root_included(&self) -> bool {
        self.includes.is_empty() && self.manifest.is_none()
    }

    /// Judges `path` (rooted, e.g. `/a/b`). `parent_included` is true when an
    /// ancestor directory was already included.
    pub fn judge(&self, path: &[u8], is_dir: bool, parent_included: bool) -> Verdict {
        if self.excludes.iter().any(|p| p.matches(path)) {
            return Verdict::Excluded;
        }
        // A directory is never included whole: below it, only what is named.
        if let Some(m) = &self.manifest {
            let named = m.files.contains(path);
            return match (is_dir, named || m.dirs.contains(path)) {
                (true, true) => Verdict::Traverse,
                (false, true) if named => Verdict::Included,
                _ => Verdict::Excluded,
            };
        }
        if parent_included
            || self.includes.is_empty()
            || self.includes.iter().any(|p| p.matches(path))
        {
            return Verdict::Included;
        }
        if is_dir && self.includes.iter().any(|p| p.may_match_below(path)) {
            return Verdict::Traverse;
        }
        Verdict::Excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(inc: &[&str], exc: &[&str]) -> Filters {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filters::parse(&s(inc), &s(exc)).unwrap()
    }

    #[test]
    fn glob_basics() {
        assert!(glob_match(b"*.tmp", b"/a/b.tmp"));
        assert!(glob_match(b"/a/*", b"/a/b/c"));
        assert!(!glob_match(b"/a/*.jpg", b"/a/b.png"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"/x*y*z", b"/xaaybbz"));
        assert!(!glob_match(b"/x*y*z", b"/xaaybb"));
    }

    #[test]
    fn excludes_anchored_and_anywhere() {
        let f = filters(&[], &["/photos|*.tmp|.snapshot"]);
        assert_eq!(f.judge(b"/photos", true, false), Verdict::Excluded);
        assert_eq!(f.judge(b"/docs/photos", true, false), Verdict::Included);
        assert_eq!(f.judge(b"/a/b/c.tmp", false, false), Verdict::Excluded);
        assert_eq!(f.judge(b"/c.tmp", false, false), Verdict::Excluded);
        assert_eq!(f.judge(b"/a/.snapshot", true, false), Verdict::Excluded);
        assert_eq!(f.judge(b"/.snapshot", true, false), Verdict::Excluded);
        assert_eq!(f.judge(b"/a/x.snapshot", true, false), Verdict::Included);
        assert_eq!(f.judge(b"/a/c.txt", false, false), Verdict::Included);
    }

    #[test]
    fn includes_traverse_towards_matches() {
        let f = filters(&["/projects/alpha|*.jpg"], &[]);
        assert_eq!(f.judge(b"/projects", true, false), Verdict::Traverse);
        assert_eq!(f.judge(b"/projects/alpha", true, false), Verdict::Included);
        assert_eq!(
            f.judge(b"/projects/beta/x.txt", false, false),
            Verdict::Excluded
        );
        assert_eq!(
            f.judge(b"/projects/beta/x.jpg", false, false),
            Verdict::Included
        );
        assert_eq!(f.judge(b"/other.txt", false, false), Verdict::Excluded);
        // Below an included directory everything is included.
        assert_eq!(
            f.judge(b"/projects/alpha/x.txt", false, true),
            Verdict::Included
        );

        let f = filters(&["/projects/alpha"], &[]);
        assert_eq!(f.judge(b"/projects", true, false), Verdict::Traverse);
        assert_eq!(f.judge(b"/other", true, false), Verdict::Excluded);
        assert_eq!(
            f.judge(b"/projects/alphabet", true, false),
            Verdict::Excluded
        );
    }

    #[test]
    fn exclude_wins_over_include() {
        let f = filters(&["/data"], &["*.tmp"]);
        assert_eq!(f.judge(b"/data/x.tmp", false, true), Verdict::Excluded);
        assert_eq!(f.judge(b"/data/x.txt", false, true), Verdict::Included);
    }

    #[test]
    fn a_manifest_includes_what_it_names_and_the_directories_above() {
        let mut m = ManifestPaths::default();
        m.insert(b"/a/b/c.txt".to_vec());
        m.insert(b"/a/d.txt".to_vec());
        m.insert(b"/e".to_vec());
        assert_eq!(m.dirs.len(), 2);
        let f = filters(&[], &["*.tmp"]).with_manifest(Arc::new(m));
        assert!(!f.root_included());
        assert_eq!(f.judge(b"/a", true, false), Verdict::Traverse);
        assert_eq!(f.judge(b"/a/b", true, false), Verdict::Traverse);
        assert_eq!(f.judge(b"/a/b/c.txt", false, false), Verdict::Included);
        assert_eq!(f.judge(b"/a/d.txt", false, false), Verdict::Included);
        assert_eq!(f.judge(b"/a/other.txt", false, false), Verdict::Excluded);
        assert_eq!(f.judge(b"/a/other", true, false), Verdict::Excluded);
        // A named directory is made, and nothing below it that is not named.
        assert_eq!(f.judge(b"/e", true, false), Verdict::Traverse);
        assert_eq!(f.judge(b"/e/x", false, true), Verdict::Excluded);
        // A file where a directory above a named path is expected.
        assert_eq!(f.judge(b"/a", false, false), Verdict::Excluded);
        // Excludes still apply.
        let mut m = ManifestPaths::default();
        m.insert(b"/x.tmp".to_vec());
        let f = filters(&[], &["*.tmp"]).with_manifest(Arc::new(m));
        assert_eq!(f.judge(b"/x.tmp", false, false), Verdict::Excluded);
    }

    #[test]
    fn empty_patterns_are_refused() {
        let err = Filters::parse(&[], &["/a||/b".to_string()]).unwrap_err();
        assert!(err.to_string().contains("empty pattern"), "{err}");
        assert!(Filters::parse(&["".to_string()], &[]).is_err());
    }
}
