//! The crate's architecture, checked: which file uses which, from the `crate::`, `super::`
//! and `self::` paths of every file under `src/` (code compiled only for tests or for `loom`
//! left out, as is `mod x;`, a declaration and not a use).
//!
//! - No cycle between files. A file's use of the module it is declared in (`super::`) is
//!   not counted: a module and its own children may use each other (`ops/http/mod.rs` and
//!   `ops/http/server.rs`). `lib.rs` is not such a module: it is the crate's facade, above
//!   everything.
//! - Every use goes down the layers of [`LAYERS`] or stays inside one layer.
//!
//! Run alone with `cargo test --test layering -- --nocapture` to see the layer of each file
//! and the files each file uses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first: a file may use files of its own layer and of the layers below.
/// A file belongs to the first layer one of whose prefixes its path (relative to `src/`,
/// without `.rs`) starts with.
const LAYERS: &[(&str, &[&str])] = &[
    ("base", &["base/"]),
    ("unwinding", &["unwind/"]),
    ("allocator and its stores", &["alloc/"]),
    ("encoding", &["pprof/"]),
    ("profile kinds", &["profiles/"]),
    ("public API", &["api/"]),
    ("operations", &["ops/"]),
    ("the crate root", &["lib", "lock_order", "__private"]),
];

#[test]
fn no_cycle_between_files_and_uses_go_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let crate_ = Crate::load(&src);
    let edges = crate_.edges();
    let mut problems = Vec::new();
    for (from, tos) in &edges {
        let lf = layer_of(from);
        for to in tos {
            let lt = layer_of(to);
            match (lf, lt) {
                (Some(a), Some(b)) if b > a => problems.push(format!(
                    "{from} ({}) uses {to} ({}), a higher layer",
                    LAYERS[a].0, LAYERS[b].0
                )),
                (None, _) => problems.push(format!("{from} is in no layer")),
                _ => {}
            }
        }
    }
    for cycle in cycles(&edges) {
        problems.push(format!("import cycle: {}", cycle.join(" ⇄ ")));
    }
    if std::env::args().any(|a| a == "--nocapture") {
        for (i, (name, _)) in LAYERS.iter().enumerate() {
            let files: Vec<_> = crate_
                .files
                .keys()
                .filter(|f| layer_of(f) == Some(i))
                .cloned()
                .collect();
            println!("{i} {name}: {}", files.join(" "));
        }
        for (from, tos) in &edges {
            let tos: Vec<_> = tos.iter().cloned().collect();
            println!("{from} -> {}", tos.join(" "));
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// The checker itself: a cycle and an upward use are found, a child's use of its parent is
/// not a cycle, code for tests only is left out.
#[test]
fn the_checker_finds_what_it_must() {
    let dir = std::env::temp_dir().join(format!("heaprof-layering-{}", std::process::id()));
    let write = |f: &str, text: &str| {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "mod base; mod ops; pub use ops::x::Y;");
    write("base/mod.rs", "pub mod a; pub mod b; pub use a::A;");
    write(
        "base/a.rs",
        "use super::b::B; pub struct A(crate::ops::x::Y);",
    );
    write(
        "base/b.rs",
        "use super::A; use crate::base::a; pub struct B;",
    );
    write(
        "ops/x.rs",
        "use super::*; pub struct Y; #[cfg(test)] use crate::lib_only;",
    );
    write("ops/mod.rs", "pub mod x; #[cfg(test)] mod t;");
    write("ops/t.rs", "use crate::Y;");
    let g = Crate::load(&dir).edges();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(g["base/a"], ["base/b", "ops/x"].map(String::from).into());
    assert_eq!(g["base/b"], ["base/a"].map(String::from).into());
    assert!(
        g["ops/x"].is_empty(),
        "a child's use of its parent is not counted"
    );
    assert_eq!(cycles(&g), [["base/a", "base/b"]]);
    assert_eq!(layer_of("base/a"), Some(0));
    assert!(layer_of("ops/x") > layer_of("base/a"));
    assert_eq!(layer_of("lib"), Some(LAYERS.len() - 1));

    let src = "use crate::{a::b, c::{d, e as f}};\n\
               #[cfg(test)] mod tests { use crate::z::y; }\n\
               #[cfg(all(test, loom))] fn m() { crate::z::w(); }\n\
               fn g() { super::h::i(); let s = \"crate::q::r\"; /* crate::q */ }\n\
               mod inner { fn k() { super::super::t::u(); } }";
    let paths = use_paths(&tokens(src), &["x".to_string(), "y".to_string()]);
    assert_eq!(
        paths,
        [
            vec!["a", "b"],
            vec!["c", "d"],
            vec!["c", "e"],
            vec!["x", "h", "i"],
            vec!["x", "t", "u"]
        ]
    );
}

// ---- the crate's files and their uses ----

struct Crate {
    /// File name (relative to `src/`, without `.rs`) → its module path.
    files: BTreeMap<String, Vec<String>>,
    /// Module path → the file that holds it.
    modules: BTreeMap<Vec<String>, String>,
    src: PathBuf,
}

impl Crate {
    fn load(src: &Path) -> Crate {
        let mut found = Vec::new();
        walk(src, &mut found);
        let mut files = BTreeMap::new();
        let mut modules = BTreeMap::new();
        for path in found {
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let name = rel.to_string_lossy().replace('\\', "/");
            let mut module: Vec<String> = name.split('/').map(String::from).collect();
            if module.last().map(String::as_str) == Some("mod") || name == "lib" {
                module.pop();
            }
            files.insert(name.clone(), module.clone());
            modules.insert(module, name);
        }
        let mut c = Crate {
            files,
            modules,
            src: src.to_path_buf(),
        };
        c.apply_path_attributes();
        c.drop_test_only_files();
        c
    }

    /// Leaves out the files of modules declared for tests only (`#[cfg(test)] mod tests;`).
    fn drop_test_only_files(&mut self) {
        let mut test_only = Vec::new();
        for (name, module) in &self.files {
            let text = std::fs::read_to_string(self.src.join(format!("{name}.rs"))).unwrap();
            let t = tokens(&text);
            for i in 0..t.len() {
                if t[i] == "#"
                    && t.get(i + 1).map(String::as_str) == Some("[")
                    && t.get(i + 2).map(String::as_str) == Some("cfg")
                {
                    let end = matching(&t, i + 1);
                    let decl = &t[(end + 1).min(t.len())..];
                    if !cfg_true(&t[i + 3..end])
                        && decl.len() >= 3
                        && decl[0] == "mod"
                        && decl[2] == ";"
                    {
                        let mut m = module.clone();
                        m.push(decl[1].clone());
                        test_only.push(m);
                    }
                }
            }
        }
        for m in test_only {
            if let Some(f) = self.modules.remove(&m) {
                self.files.remove(&f);
            }
        }
    }

    /// `#[path = "f.rs"] mod m;` in `dir/x.rs` puts `dir/f.rs` at module `x::m`.
    fn apply_path_attributes(&mut self) {
        let entries: Vec<_> = self.files.clone().into_iter().collect();
        for (name, module) in entries {
            let text = std::fs::read_to_string(self.src.join(format!("{name}.rs"))).unwrap();
            let toks = tokens(&text);
            for w in toks.windows(9) {
                if w[0] == "#" && w[1] == "[" && w[2] == "path" && w[3] == "=" && w[6] == "mod" {
                    let file = w[4].trim_matches('"').trim_end_matches(".rs");
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    let target = if dir.is_empty() {
                        file.to_string()
                    } else {
                        format!("{dir}/{file}")
                    };
                    let mut m = module.clone();
                    m.push(w[7].clone());
                    if let Some(old) = self.files.get(&target).cloned() {
                        self.modules.remove(&old);
                    }
                    self.files.insert(target.clone(), m.clone());
                    self.modules.insert(m, target);
                }
            }
        }
    }

    /// The file holding the longest prefix of `path` that is a module of its own.
    fn file_of(&self, path: &[String]) -> Option<&String> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.modules.get(&path[..n]))
    }

    /// File → the other files it uses.
    fn edges(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut edges = BTreeMap::new();
        for (name, module) in &self.files {
            let text = std::fs::read_to_string(self.src.join(format!("{name}.rs"))).unwrap();
            let mut to = BTreeSet::new();
            for p in use_paths(&tokens(&text), module) {
                let Some(f) = self.file_of(&p) else { continue };
                let parent = !self.files[f].is_empty() && module.starts_with(&self.files[f]);
                if f != name && !parent {
                    to.insert(f.clone());
                }
            }
            edges.insert(name.clone(), to);
        }
        edges
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn layer_of(file: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, prefixes)| prefixes.iter().any(|p| file.starts_with(p)))
}

/// The strongly connected components with more than one file (Tarjan's algorithm).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

// ---- a small Rust lexer: enough for paths ----

/// Identifiers, `::`, string literals (kept whole, for `#[path]`) and single punctuation;
/// comments, char literals and lifetimes dropped.
fn tokens(text: &str) -> Vec<String> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(b.get(i + 1), Some('#') | Some('"')) && raw_start(&b, i) {
            let start = i;
            i += 1;
            let mut hashes = 0;
            while b[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            loop {
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == '"' {
            let start = i;
            i += 1;
            while b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(b[start..i].iter().collect());
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&'\\') {
                i += 2;
                while b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// `r"` or `r#"` (or `br"`) starting a raw string, not the end of an identifier such as
/// `for`, nor a raw identifier (`r#type`).
fn raw_start(b: &[char], i: usize) -> bool {
    let ident = |k: usize| b[k].is_alphanumeric() || b[k] == '_';
    let after_prefix = i == 0 || !ident(i - 1) || (b[i - 1] == 'b' && (i == 1 || !ident(i - 2)));
    let mut j = i + 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    after_prefix && b.get(j) == Some(&'"')
}

/// The absolute module paths named by `crate::`, `super::` and `self::` paths in the
/// tokens of the file at module path `module`, outside code compiled only for tests.
fn use_paths(t: &[String], module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    // The inline modules we are in: (name, brace depth inside them).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        let tok = t[i].as_str();
        if tok == "#" && t.get(i + 1).map(String::as_str) == Some("[") {
            let end = matching(t, i + 1);
            if t.get(i + 2).map(String::as_str) == Some("cfg") && !cfg_true(&t[i + 3..end]) {
                i = skip_item(t, end + 1);
            } else {
                i = end + 1;
            }
            continue;
        }
        match tok {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if t.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((t[i + 1].clone(), depth));
            }
            "crate" | "super" | "self" if t.get(i + 1).map(String::as_str) == Some("::") => {
                if i > 0 && t[i - 1] == "$" {
                    i += 1;
                    continue;
                }
                let mut here: Vec<String> = module.to_vec();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut base = if tok == "crate" { Vec::new() } else { here };
                let mut j = i;
                while t.get(j).map(String::as_str) == Some("super")
                    && t.get(j + 1).map(String::as_str) == Some("::")
                {
                    base.pop();
                    j += 2;
                }
                if tok != "super" {
                    j += 2;
                }
                i = tree(t, j, base, &mut out);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads a path or use tree starting at `t[i]` under `prefix`; returns the index after it.
fn tree(t: &[String], mut i: usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    loop {
        match t.get(i).map(String::as_str) {
            Some("{") => {
                let end = matching(t, i);
                let mut j = i + 1;
                while j < end {
                    j = tree(t, j, prefix.clone(), out);
                    while j < end && t[j] != "," {
                        j += 1;
                    }
                    j += 1;
                }
                return end + 1;
            }
            Some(id) if is_ident(id) => {
                prefix.push(id.to_string());
                if t.get(i + 1).map(String::as_str) == Some("::") {
                    i += 2;
                } else {
                    out.push(prefix);
                    return i + 1;
                }
            }
            _ => {
                // `crate::*` or `super::*`: the module itself.
                out.push(prefix);
                return i + 1;
            }
        }
    }
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The index of the bracket closing the one at `t[i]`.
fn matching(t: &[String], i: usize) -> usize {
    let (open, close) = match t[i].as_str() {
        "[" => ("[", "]"),
        "(" => ("(", ")"),
        _ => ("{", "}"),
    };
    let mut depth = 0;
    for (j, tok) in t.iter().enumerate().skip(i) {
        if tok == open {
            depth += 1;
        } else if tok == close {
            depth -= 1;
            if depth == 0 {
                return j;
            }
        }
    }
    t.len()
}

/// Skips the item starting at `t[i]` (its other attributes, then up to `;` or a `{...}`).
fn skip_item(t: &[String], mut i: usize) -> usize {
    while i < t.len() {
        match t[i].as_str() {
            "#" => i = matching(t, i + 1) + 1,
            ";" => return i + 1,
            "{" => return matching(t, i) + 1,
            "(" | "[" => i = matching(t, i) + 1,
            _ => i += 1,
        }
    }
    i
}

/// Evaluates `(predicate)` of a `cfg` with `test` and `loom` off and everything else on.
fn cfg_true(t: &[String]) -> bool {
    fn eval(t: &[String], i: &mut usize) -> bool {
        let name = t[*i].clone();
        *i += 1;
        if t.get(*i).map(String::as_str) == Some("=") {
            *i += 2;
            return true;
        }
        if t.get(*i).map(String::as_str) != Some("(") {
            return !matches!(name.as_str(), "test" | "loom");
        }
        *i += 1;
        let mut vals = Vec::new();
        while t[*i] != ")" {
            vals.push(eval(t, i));
            if t[*i] == "," {
                *i += 1;
            }
        }
        *i += 1;
        match name.as_str() {
            "all" => vals.iter().all(|v| *v),
            "any" => vals.iter().any(|v| *v),
            "not" => !vals[0],
            _ => true,
        }
    }
    let mut i = 1; // after `(`
    eval(t, &mut i)
}
