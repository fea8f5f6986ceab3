// SPDX-License-Identifier: MIT
//! Import cycles between the modules of a crate (issue #15): for each
//! `src/**.rs`, the modules its `crate::`, `super::` and `self::` paths (and
//! its child modules) name, at two levels: between the files, tests left
//! out (a module's unit tests may go through its parent's entry point), and
//! between the top-level modules, tests included. ferry-init's and
//! ferry-daemon's unit tests (`import_cycles.rs` in each) read their own
//! sources with it and fail on a cycle.
//!
//! A test tool only (a dev-dependency), MIT so that ferry-init
//! (GPL-2.0-only) may use it; nothing but std.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Edges from a module to the modules it names (`config::store`).
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// What becomes of the crate's root (`lib.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    /// A node of the files' graph, named `crate`.
    AsCrate,
    /// Neither a node nor a target.
    LeftOut,
}

type ModPath = Vec<String>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module a file holds: `config/mod.rs` and `config.rs` are `config`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        m.pop();
    }
    m
}

/// The code without comments, string and character literals (they would
/// hold `crate::` too, as this file does).
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let (mut out, mut i) = (String::new(), 0);
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let at = |i: usize, k: usize| c.get(i + k).copied().unwrap_or('\0');
        if at(i, 0) == '/' && at(i, 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if at(i, 0) == '/' && at(i, 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i, 0) == '/' && at(i, 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i, 0) == '*' && at(i, 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else if i >= c.len() {
                    break;
                } else {
                    i += 1;
                }
            }
        } else if (at(i, 0) == 'r' || (at(i, 0) == 'b' && at(i, 1) == 'r'))
            && (i == 0 || !ident(c[i - 1]))
            && {
                let k = if at(i, 0) == 'b' { 2 } else { 1 };
                let mut h = k;
                while at(i, h) == '#' {
                    h += 1;
                }
                at(i, h) == '"'
            }
        {
            // a raw string: r"…", r#"…"#, br"…"
            i += if at(i, 0) == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while at(i, 0) == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"' && (1..=hashes).all(|h| at(i, h) == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if at(i, 0) == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if at(i, 0) == '\'' && (at(i, 1) == '\\' || at(i, 2) == '\'') {
            // a character literal ('a', '\n', '\'', '\u{7f}'), not a lifetime
            i += if at(i, 1) == '\\' { 3 } else { 2 };
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// A use tree without its whitespace and renames (`a as b` is `a`).
fn without_renames(tree: &str) -> String {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for ch in tree.chars() {
        if ch.is_alphanumeric() || ch == '_' {
            word.push(ch);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if !ch.is_whitespace() {
            tokens.push(ch.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    let mut out = String::new();
    let mut t = tokens.into_iter();
    while let Some(x) = t.next() {
        if x == "as" {
            t.next(); // the new name
        } else {
            out.push_str(&x);
        }
    }
    out
}

/// The paths of a use tree (`a::{b, c::{self, D}}`) or a plain path, as
/// segments (`self` dropped).
fn paths(tree: &str) -> Vec<Vec<String>> {
    let tree = without_renames(tree);
    let Some(open) = tree.find('{') else {
        return vec![tree
            .split("::")
            .filter(|s| !s.is_empty() && *s != "self" && *s != "*")
            .map(str::to_string)
            .collect()];
    };
    let prefix: Vec<String> = tree[..open]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (k, ch) in inner.char_indices().chain([(inner.len(), ',')]) {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                for p in paths(&inner[start..k]) {
                    out.push(prefix.iter().cloned().chain(p).collect());
                }
                start = k + 1;
            }
            _ => {}
        }
    }
    out
}

/// What a file names.
struct Named {
    /// Each `crate::`, `super::` or `self::` path (inline modules such as
    /// `mod tests { … }` counted for `super`), and each use of a child
    /// module declared in the file by its name; true when in test code
    /// (a `#[cfg(test)]` module).
    paths: Vec<(ModPath, bool)>,
    /// Child modules in files of their own that are test code
    /// (`#[cfg(test)] mod tests;`).
    test_children: Vec<String>,
}

fn named(file_mod: &ModPath, code: &str, children: &[String]) -> Named {
    let c: Vec<char> = code.chars().collect();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let word_at = |i: usize| -> String {
        c[i..]
            .iter()
            .take_while(|ch| ident(**ch))
            .collect::<String>()
    };
    let mut out = Named {
        paths: Vec::new(),
        test_children: Vec::new(),
    };
    // inline modules open at a brace depth, and whether they are tests
    let mut inline: Vec<(String, usize, bool)> = Vec::new();
    let mut depth = 0;
    let mut pending_test = false;
    let mut pending_mod: Option<(String, bool)> = None;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '{' {
            depth += 1;
            if let Some((m, test)) = pending_mod.take() {
                inline.push((m, depth, test));
            }
            pending_test = false;
            i += 1;
            continue;
        }
        if ch == '}' {
            if inline.last().is_some_and(|(_, d, _)| *d == depth) {
                inline.pop();
            }
            depth -= 1;
            i += 1;
            continue;
        }
        if ch == ';' {
            if let Some((m, true)) = pending_mod.take() {
                out.test_children.push(m);
            }
            pending_test = false;
        }
        if !ident(ch) || (i > 0 && (ident(c[i - 1]) || c[i - 1] == ':' || c[i - 1] == '$')) {
            i += 1;
            continue;
        }
        let w = word_at(i);
        if w == "cfg" && c[i + 3..].starts_with(&['(', 't', 'e', 's', 't', ')']) {
            pending_test = true;
        }
        if w == "mod" {
            let mut k = i + 3;
            while k < c.len() && c[k].is_whitespace() {
                k += 1;
            }
            pending_mod = Some((word_at(k), std::mem::take(&mut pending_test)));
            i = k;
            continue;
        }
        let head = matches!(w.as_str(), "crate" | "super" | "self") || children.contains(&w);
        if !(head && c.get(i + w.len()) == Some(&':') && c.get(i + w.len() + 1) == Some(&':')) {
            i += w.len();
            continue;
        }
        // the whole path or use tree
        let mut k = i;
        let mut braces = 0;
        while k < c.len() {
            match c[k] {
                '{' => braces += 1,
                '}' if braces == 0 => break,
                '}' => braces -= 1,
                ch if braces == 0 && !(ident(ch) || ch == ':' || ch == '*') => break,
                _ => {}
            }
            k += 1;
        }
        let text: String = c[i..k].iter().collect();
        let here: ModPath = file_mod
            .iter()
            .cloned()
            .chain(inline.iter().map(|(m, _, _)| m.clone()))
            .collect();
        let in_test = inline.iter().any(|(_, _, t)| *t);
        for p in paths(&text) {
            let mut segs = p.into_iter().peekable();
            let mut base = match segs.peek().map(String::as_str) {
                Some("crate") => {
                    segs.next();
                    Vec::new()
                }
                // a child module is the file's, also in its inline `mod tests`
                Some(w) if children.iter().any(|k| k == w) => file_mod.clone(),
                _ => here.clone(),
            };
            while segs.peek().is_some_and(|s| s == "super") {
                segs.next();
                base.pop();
            }
            out.paths
                .push((base.into_iter().chain(segs).collect(), in_test));
        }
        i = k;
    }
    out
}

/// The strongly connected components with more than one node (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        for w in t.edges.get(v).into_iter().flatten() {
            if !t.index.contains_key(w.as_str()) {
                visit(t, w);
                let l = t.low[w.as_str()].min(t.low[v]);
                t.low.insert(v, l);
            } else if t.stack.contains(&w.as_str()) {
                let l = t.index[w.as_str()].min(t.low[v]);
                t.low.insert(v, l);
            }
        }
        if t.low[v] == t.index[v] {
            let at = t.stack.iter().rposition(|x| *x == v).unwrap();
            let comp: Vec<String> = t.stack.drain(at..).map(str::to_string).collect();
            if comp.len() > 1 {
                t.found.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.found
}

/// The graph of the files (`config::store`; tests left out) and of the
/// top-level modules (`config`; tests included, the root left out) of the
/// crate whose sources are `src`, the files `skip` names left out (a
/// binary's).
pub fn graphs(src: &Path, skip: impl Fn(&Path) -> bool, root: Root) -> [Graph; 2] {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mods: BTreeMap<ModPath, PathBuf> = files
        .iter()
        .filter(|f| !skip(f))
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let named: BTreeMap<&ModPath, Named> = mods
        .iter()
        .map(|(m, f)| {
            let children: Vec<String> = mods
                .keys()
                .filter(|k| k.len() == m.len() + 1 && k.starts_with(m))
                .map(|k| k[m.len()].clone())
                .collect();
            let code = code_only(&fs::read_to_string(f).unwrap());
            (m, named(m, &code, &children))
        })
        .collect();
    // files of test code (`console/tests.rs`), and the files under them
    let test_files: Vec<ModPath> = named
        .iter()
        .flat_map(|(m, n)| {
            n.test_children
                .iter()
                .map(|c| m.iter().cloned().chain([c.clone()]).collect())
        })
        .collect();
    let (mut by_file, mut by_top) = (BTreeMap::new(), BTreeMap::new());
    let name = |m: &ModPath| {
        if m.is_empty() {
            "crate".to_string()
        } else {
            m.join("::")
        }
    };
    for (m, n) in &named {
        if m.is_empty() && root == Root::LeftOut {
            continue;
        }
        let test_file = test_files.iter().any(|t| m.starts_with(t));
        for (p, in_test) in &n.paths {
            // the longest module the path starts with (the rest are items)
            let shortest = match root {
                Root::AsCrate => 0,
                Root::LeftOut => 1,
            };
            let Some(to) = (shortest..=p.len())
                .rev()
                .map(|n| p[..n].to_vec())
                .find(|q| mods.contains_key(q))
            else {
                continue;
            };
            if &to != *m && !(*in_test || test_file) {
                by_file
                    .entry(name(m))
                    .or_insert_with(BTreeSet::new)
                    .insert(name(&to));
            }
            if !m.is_empty() && !to.is_empty() && to[0] != m[0] {
                by_top
                    .entry(m[0].clone())
                    .or_insert_with(BTreeSet::new)
                    .insert(to[0].clone());
            }
        }
    }
    [by_file, by_top]
}

/// The cycles of both graphs, each as its edges (`files: a -> b, b -> a`);
/// empty when there is none.
pub fn cycles_found(by_file: &Graph, by_top: &Graph) -> Vec<String> {
    let mut found = Vec::new();
    for (level, g) in [("files", by_file), ("top-level modules", by_top)] {
        for comp in cycles(g) {
            let edges: Vec<String> = comp
                .iter()
                .flat_map(|a| {
                    g[a].iter()
                        .filter(|b| comp.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            found.push(format!("{level}: {}", edges.join(", ")));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_only_drops_comments_and_literals() {
        let code = code_only(
            "use crate::a; // crate::b\nlet s = \"crate::c\"; let r = r#\"crate::d\"#; let q = '\"'; /* crate::e */ fn f<'a>(x: &'a str) {}",
        );
        assert!(code.contains("crate::a"), "{code}");
        for gone in ["crate::b", "crate::c", "crate::d", "crate::e"] {
            assert!(!code.contains(gone), "{code}");
        }
        assert!(code.contains("fn f<'a>(x: &'a str)"), "{code}");
        let m: ModPath = vec!["x".into(), "y".into()];
        let got = named(
            &m,
            "use crate::{a::{self, B}, c as d};\nuse super::z;\n#[cfg(test)]\nmod tests { use super::*; use super::super::w; }\nkid::f();\n#[cfg(test)]\nmod more;",
            &["kid".into()],
        );
        let want: Vec<(ModPath, bool)> = [
            (&["a"][..], false),
            (&["a", "B"], false),
            (&["c"], false),
            (&["x", "z"], false),
            (&["x", "y"], true),
            (&["x", "w"], true),
            (&["x", "y", "kid", "f"], false),
        ]
        .iter()
        .map(|(p, t)| (p.iter().map(|s| s.to_string()).collect(), *t))
        .collect();
        assert_eq!(got.paths, want);
        assert_eq!(got.test_children, ["more"]);
    }
}
