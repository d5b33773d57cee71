//! The module map holds: data flows one way. Reads every `use crate::…` of `src/` and fails if
//! `kafka/` and `sink/` import each other, if `pipeline/` or `event/` import `kafka/`, `sink/`
//! or `app`, or if the imports between modules form a cycle (two modules importing each other
//! included). A module is a file (`foo.rs`, `foo/mod.rs`); a `*_tests.rs` file counts as part of
//! the module it tests.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let file = parts.pop().expect("a file");
    let stem = file.trim_end_matches(".rs").trim_end_matches("_tests");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    if parts.is_empty() { "crate".to_owned() } else { parts.join("::") }
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `use crate::…;` statement of `text` (statements may span lines), as the paths it
/// names: `use crate::a::{b, c::{self, D}}` gives `a::b`, `a::c`, `a::c::D`.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("use crate::") {
        let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
        let is_code = !rest[line_start..at].trim_start().starts_with("//");
        let body_start = at + "use crate::".len();
        let end = rest[body_start..].find(';').map_or(rest.len(), |i| body_start + i);
        if is_code {
            expand("", &rest[body_start..end], &mut out);
        }
        rest = &rest[end..];
    }
    out
}

fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ").replace(" as ", "@").replace(' ', "");
    match tree.find('{') {
        None => {
            let path = tree.split('@').next().unwrap_or(&tree).trim_end_matches("::self");
            out.push(format!("{prefix}{path}"));
        }
        Some(open) => {
            let head = &tree[..open];
            let inner = &tree[open + 1..tree.rfind('}').expect("balanced braces")];
            let mut depth = 0;
            let mut start = 0;
            let bytes = inner.as_bytes();
            for i in 0..=bytes.len() {
                let c = bytes.get(i).copied();
                match c {
                    Some(b'{') => depth += 1,
                    Some(b'}') => depth -= 1,
                    Some(b',') | None if depth == 0 => {
                        let item = &inner[start..i];
                        if item == "self" {
                            out.push(format!("{prefix}{}", head.trim_end_matches("::")));
                        } else if !item.is_empty() {
                            expand(&format!("{prefix}{head}"), item, out);
                        }
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The module an imported path lands in: its longest prefix that is a module of the tree.
fn target(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| modules.contains(m))
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    files(&src, &mut paths);
    let modules: BTreeSet<String> = paths.iter().map(|p| module_of(p.strip_prefix(&src).unwrap())).collect();
    let mut g = Graph::new();
    for p in &paths {
        let from = module_of(p.strip_prefix(&src).unwrap());
        let text = fs::read_to_string(p).expect("a source file");
        for imported in imports(&text) {
            if let Some(to) = target(&imported, &modules)
                && to != from
            {
                g.entry(from.clone()).or_default().insert(to);
            }
        }
        g.entry(from).or_default();
    }
    g
}

fn in_group(module: &str, group: &str) -> bool {
    module == group || module.starts_with(&format!("{group}::"))
}

fn cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(n: &str, g: &Graph, state: &mut BTreeMap<String, u8>, stack: &mut Vec<String>) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|s| s == m).unwrap();
                    let mut c = stack[from..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, g, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn imports_are_parsed_as_written() {
    let got = imports("use crate::a::{b, c::{self, D}};\n// use crate::nope;\nuse crate::e::F as G;\n");
    assert_eq!(got, ["a::b", "a::c", "a::c::D", "e::F"]);
    assert_eq!(module_of(Path::new("kafka/state_tests.rs")), "kafka::state");
    assert_eq!(module_of(Path::new("kafka/mod.rs")), "kafka");
}

#[test]
fn the_module_map_points_one_way() {
    let g = graph();
    assert!(g.contains_key("kafka::poller") && g.contains_key("sink::worker"), "the tree was read: {:?}", g.keys());
    let mut wrong = Vec::new();
    for (from, tos) in &g {
        for to in tos {
            let forbidden = (in_group(from, "kafka") && in_group(to, "sink"))
                || (in_group(from, "sink") && in_group(to, "kafka"))
                || ((in_group(from, "pipeline") || in_group(from, "event"))
                    && ["kafka", "sink", "app"].iter().any(|g| in_group(to, g)));
            if forbidden {
                wrong.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that run the wrong way: {wrong:?}");
    assert_eq!(cycle(&g), None, "modules that import each other, in a circle");
}
