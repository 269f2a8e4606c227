//! The crate's module graph: no import cycle among its modules, and no module importing a
//! module of a higher layer (`daemon` → `api` → services → `store` → model and utilities).
//!
//! The graph is read from the sources: every `crate::…`, `super::…` and `self::…` path in
//! code (comments stripped, `use` groups expanded) is an edge from the file's module to the
//! deepest module the path names. A module's uses of its own descendants are not edges: a
//! parent declares and wires its children, and a child may use its parent's items, so only
//! edges between siblings or across subtrees can close a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and string literals (doc links and messages name modules
/// without depending on them).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3; // a char literal such as '"'
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Every path that starts with `crate`, `super` or `self`, with `{…}` groups expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        if starts_word {
            for root in ["crate::", "super::", "self::"] {
                let r: Vec<char> = root.chars().collect();
                if bytes[i..].starts_with(&r) {
                    let (mut expanded, end) = parse_path(&bytes, i);
                    found.append(&mut expanded);
                    i = end;
                    break;
                }
            }
        }
        i += 1;
    }
    found
}

/// Parses `a::b::{c, d::e}` from `start`; returns the expanded paths and where it ended.
fn parse_path(s: &[char], start: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = start;
    loop {
        let seg_start = i;
        while i < s.len() && (s[i].is_alphanumeric() || s[i] == '_') {
            i += 1;
        }
        if i > seg_start {
            prefix.push(s[seg_start..i].iter().collect::<String>());
        }
        if i + 1 < s.len() && s[i] == ':' && s[i + 1] == ':' {
            i += 2;
            if i < s.len() && s[i] == '{' {
                i += 1;
                let mut all = Vec::new();
                loop {
                    while i < s.len() && (s[i].is_whitespace() || s[i] == ',') {
                        i += 1;
                    }
                    if i >= s.len() || s[i] == '}' {
                        break;
                    }
                    let (inner, end) = parse_path(s, i);
                    for p in inner {
                        let mut full = prefix.clone();
                        full.extend(p);
                        all.push(full);
                    }
                    i = end.max(i + 1);
                }
                if all.is_empty() {
                    all.push(prefix);
                }
                return (all, i + 1);
            }
            continue;
        }
        return (vec![prefix], i);
    }
}

/// The deepest known module `path` names, seen from `from`.
fn resolve(from: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let mut base: Module = Vec::new();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => rest = &path[1..],
        Some("super") => {
            base = from.clone();
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        Some("self") => {
            base = from.clone();
            rest = &path[1..];
        }
        _ => return None,
    }
    let mut best = base.clone();
    let mut current = base;
    for seg in rest {
        current.push(seg.clone());
        if modules.contains(&current) {
            best = current.clone();
        } else {
            break;
        }
    }
    Some(best)
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| f.file_name().unwrap() != "main.rs");
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for file in &files {
        let from = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        // A file's inline test module (always last) sees the file's module as `super`.
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let code = code_only(text);
        let targets = edges.entry(from.clone()).or_default();
        for path in paths(&code) {
            let Some(to) = resolve(&from, &path, &modules) else { continue };
            // Itself, or one of its own descendants: not an edge.
            if to.starts_with(&from) {
                continue;
            }
            targets.insert(to);
        }
    }
    edges
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn find_cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        node: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|m| m == next).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// The layer of a module: it may import from its own layer and lower ones only. A module's
/// layer is its top-level module's: every subtree lives in one layer.
fn layer(m: &Module) -> u8 {
    let Some(top) = m.first() else { return 5 }; // the crate root declares everything
    match top.as_str() {
        "daemon" => 4,
        "api" => 3,
        // The services: they call the stores and one another (downwards).
        "intake" | "control" | "remote" | "maintenance" | "wakeups" | "attempt" | "worker" | "handlers"
        | "http_worker" | "cwom_service" | "scheduling" | "queues" => 2,
        // The traits of domain operations and the drivers.
        "store" => 1,
        // The models (task, lease, registration, cwom, storable, failure), config, tunables,
        // shutdown, trace, metrics, logging; and the programs that talk to a JCT server over
        // HTTP only (`client`, `mcp`): at layer 0 they can import no store, service, API or
        // daemon.
        _ => 0,
    }
}

#[test]
fn the_module_graph_has_no_cycle() {
    let edges = graph();
    assert!(edges.len() > 20, "read only {} modules: is the parser broken?", edges.len());
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<String> = cycle.iter().map(name).collect();
        panic!("import cycle: {}", names.join(" -> "));
    }
}

#[test]
fn imports_point_down_the_layers() {
    let edges = graph();
    let mut wrong = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            if layer(to) > layer(from) {
                wrong.push(format!(
                    "{} (layer {}) imports {} (layer {})",
                    name(from),
                    layer(from),
                    name(to),
                    layer(to)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}

#[test]
fn the_checks_catch_what_they_look_for() {
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    // The parser sees grouped, nested and relative paths, and ignores comments and strings.
    let code = code_only(
        "use crate::{a::b, c::{d, e}};\n// crate::commented\nlet s = \"crate::quoted\";\nsuper::super::x::y();",
    );
    let found: BTreeSet<String> = paths(&code).iter().map(|p| p.join("::")).collect();
    let want: BTreeSet<String> =
        ["crate::a::b", "crate::c::d", "crate::c::e", "super::super::x::y"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, want);
    // A cycle between siblings is found; a tree is not a cycle.
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges.entry(m("w::executor")).or_default().insert(m("w::producer"));
    edges.entry(m("w::producer")).or_default().insert(m("w::buffer"));
    assert!(find_cycle(&edges).is_none());
    edges.entry(m("w::producer")).or_default().insert(m("w::executor"));
    assert!(find_cycle(&edges).is_some());
    // Upward imports are told apart.
    assert!(layer(&m("store::sqlite")) < layer(&m("api::tasks")));
    assert!(layer(&m("cwom::types")) < layer(&m("cwom_service")));
    assert!(layer(&m("mcp::agent")) < layer(&m("store")) && layer(&m("client")) < layer(&m("remote")));
    assert!(layer(&m("lease")) < layer(&m("store")) && layer(&m("cwom_service")) > layer(&m("store::postgres")));
}
