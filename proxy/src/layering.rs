//! The architecture, checked on the source: each layer uses only the layers below it, no two
//! modules use each other (directly or around a cycle), and no file is over 600 lines.
//!
//! A module here is a layer's direct child (`dual::journal`, with its own submodules and tests
//! counted as part of it); `config` and `metrics` are modules of their own at the bottom.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers from the bottom up. `config` and `metrics` share the bottom but do not use each other.
const LAYERS: &[(&str, u8)] = &[
    ("config", 0),
    ("metrics", 0),
    ("wire", 1),
    ("dual", 2),
    ("shadow", 3),
    ("session", 4),
    ("control", 5),
];

const MAX_LINES: usize = 600;

fn rank(layer: &str) -> Option<u8> {
    LAYERS.iter().find(|(l, _)| *l == layer).map(|(_, r)| *r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `dual/journal/tests.rs` -> ("dual", "dual::journal"); `metrics.rs` -> ("metrics", "metrics");
/// `lib.rs`, `main.rs` and this file -> None (the crate root uses everything).
fn module_of(rel: &Path) -> Option<(String, String)> {
    let parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let layer = parts[0].clone();
    if parts.len() == 1 && matches!(layer.as_str(), "lib" | "main" | "layering") {
        return None;
    }
    if rank(&layer).is_none() {
        panic!("{} is outside every layer; add it to one", rel.display());
    }
    let unit = match parts.get(1).map(String::as_str) {
        None | Some("mod") => layer.clone(),
        Some(_) if matches!(layer.as_str(), "config" | "metrics") => layer.clone(),
        Some(child) => format!("{layer}::{child}"),
    };
    Some((layer, unit))
}

/// Every `crate::a` or `crate::a::b` the text names, as the module it lands in.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut names = path.split("::").filter(|s| !s.is_empty());
        let Some(first) = names.next() else {
            continue;
        };
        match (rank(first), names.next()) {
            (Some(_), Some(second)) if !matches!(first, "config" | "metrics") => {
                out.insert(format!("{first}::{second}"));
            }
            (Some(_), _) => {
                out.insert(first.to_string());
            }
            // A crate-root item (a re-export or a function of lib.rs): not a layer's.
            (None, _) => {}
        }
    }
    out
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    problems: Vec<String>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut g = Graph {
        edges: BTreeMap::new(),
        problems: Vec::new(),
    };
    let mut units = BTreeSet::new();
    for path in files {
        let rel = path.strip_prefix(&src).expect("under src").to_path_buf();
        let text = std::fs::read_to_string(&path).expect("source is readable");
        let lines = text.lines().count();
        if lines > MAX_LINES {
            g.problems.push(format!(
                "{} has {lines} lines (at most {MAX_LINES}): split it along a seam",
                rel.display()
            ));
        }
        let Some((layer, unit)) = module_of(&rel) else {
            continue;
        };
        units.insert(unit.clone());
        if text.contains("use crate::{") {
            g.problems.push(format!(
                "{}: `use crate::{{..}}` hides which layers it uses; name each path",
                rel.display()
            ));
        }
        if text.contains("super::super") {
            g.problems.push(format!(
                "{}: `super::super` reaches out of its module; use a `crate::` path",
                rel.display()
            ));
        }
        let from = rank(&layer).expect("a layer");
        for target in references(&text) {
            if target == unit {
                continue;
            }
            let to_layer = target.split("::").next().expect("a name").to_string();
            let to = rank(&to_layer).expect("a layer");
            let allowed = to_layer == layer || to < from;
            if !allowed {
                g.problems.push(format!(
                    "{} ({layer}) uses {target} ({to_layer}): a layer may use only layers below it",
                    rel.display()
                ));
            }
            g.edges.entry(unit.clone()).or_default().insert(target);
        }
        g.edges.entry(unit).or_default();
    }
    for (from, targets) in &g.edges {
        for t in targets.iter().filter(|t| !units.contains(*t)) {
            g.problems.push(format!(
                "{from} names `crate::{t}`, which is no module: name the module that defines it"
            ));
        }
    }
    g
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = stack
                    .iter()
                    .position(|n| n == node)
                    .expect("open is on the stack");
                let mut c = stack[at..].to_vec();
                c.push(node.to_string());
                return Some(c);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in edges.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(node, edges, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

#[test]
fn layers_only_use_layers_below_and_files_stay_small() {
    let g = graph();
    assert!(g.problems.is_empty(), "\n{}", g.problems.join("\n"));
}

#[test]
fn no_module_imports_another_in_a_cycle() {
    let g = graph();
    if let Some(c) = cycle(&g.edges) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn the_check_sees_a_cycle_and_an_upward_import() {
    let text =
        "use crate::session::shared::Shared;\nfn f() { crate::dual::order::parse_lsn(b\"0/0\"); }";
    let refs = references(text);
    assert!(refs.contains("session::shared"));
    assert!(refs.contains("dual::order"));
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(
        cycle(&edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}
