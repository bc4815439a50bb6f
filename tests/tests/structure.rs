//! The layering the code promises (ARCHITECTURE.md, "Inside `functions`"): no import cycle among the modules
//! of `functions/`, among the top-level modules of `shared/` (so each stands above all it imports), or among
//! the files of `shared::tags`. Read from the sources, test code left out; a cycle fails with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A unit of code and the units it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir` that is not test code.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    todo.push(path);
                }
            } else if name.ends_with(".rs") && !name.ends_with("tests.rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The file's code without comments and without its inline test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => &text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The first path segment after each `prefix` in `code` (each item of a `prefix{a, b::c}` group).
fn named_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| s.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut end) = (1, group.len());
            for (i, c) in group.char_indices() {
                depth += match c {
                    '{' => 1,
                    '}' => -1,
                    _ => 0,
                };
                if depth == 0 {
                    end = i;
                    break;
                }
            }
            let mut item_depth = 0;
            let mut start = 0;
            for (i, c) in group[..end].char_indices() {
                match c {
                    '{' => item_depth += 1,
                    '}' => item_depth -= 1,
                    ',' if item_depth == 0 => {
                        out.insert(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            out.insert(ident(&group[start..end]));
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out
}

/// The top-level modules of the crate at `src`, each with those it names through `crate::`.
fn crate_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for path in sources(src) {
        let relative = path.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let unit = first.trim_end_matches(".rs").to_string();
        if ["lib", "main", "bin", "testing"].contains(&unit.as_str()) {
            continue;
        }
        let names = named_after(&code(&path), "crate::");
        graph.entry(unit.clone()).or_default().extend(names.into_iter().filter(|n| *n != unit));
    }
    let units: BTreeSet<String> = graph.keys().cloned().collect();
    for names in graph.values_mut() {
        names.retain(|n| units.contains(n));
    }
    graph
}

/// The files of `shared/src/tags` (a folder counts as one), each with the siblings it names.
fn tags_graph() -> Graph {
    let tags = root().join("shared/src/tags");
    let mut graph = Graph::new();
    for path in sources(&tags) {
        let relative = path.strip_prefix(&tags).unwrap();
        let nested = relative.components().count() > 1;
        let unit =
            relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if unit == "mod" {
            continue;
        }
        let code = code(&path);
        let mut names = named_after(&code, "crate::tags::");
        names.extend(named_after(&code, if nested { "super::super::" } else { "super::" }));
        graph.entry(unit.clone()).or_default().extend(names.into_iter().filter(|n| *n != unit));
    }
    let units: BTreeSet<String> = graph.keys().cloned().collect();
    for names in graph.values_mut() {
        names.retain(|n| units.contains(n));
    }
    graph
}

/// A cycle of `graph`, as a path that comes back to its start; `None` when it has none.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(unit: &str, graph: &Graph, done: &mut BTreeSet<String>, path: &mut Vec<String>) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == unit) {
            let mut found = path[at..].to_vec();
            found.push(unit.to_string());
            return Some(found);
        }
        if done.contains(unit) {
            return None;
        }
        path.push(unit.to_string());
        for next in graph.get(unit).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, path) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(unit.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|unit| visit(unit, graph, &mut done, &mut Vec::new()))
}

#[test]
fn the_reader_finds_names_and_cycles() {
    let code = "use crate::{state::Transaction, vault};\nlet x = crate::lake::parts(); a::crate::no;";
    assert_eq!(named_after(code, "crate::"), ["lake", "state", "vault"].map(String::from).into());
    let graph: Graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
        .collect();
    assert_eq!(cycle(&graph), Some(["a", "b", "c", "a"].map(String::from).to_vec()));
    let mut dag = graph.clone();
    dag.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&dag), None);
}

#[test]
fn no_module_of_functions_imports_one_that_imports_it_back() {
    let graph = crate_graph(&root().join("functions/src"));
    assert!(graph.len() > 15, "the modules were read: {graph:?}");
    assert!(graph["ingest"].contains("snapshot") && graph["tagging"].contains("state"), "{graph:?}");
    assert_eq!(cycle(&graph), None, "an import cycle among the modules of functions/");
}

#[test]
fn the_modules_of_shared_stand_in_layers() {
    let graph = crate_graph(&root().join("shared/src"));
    assert!(graph["activation"].contains("tags"), "{graph:?}");
    assert_eq!(cycle(&graph), None, "a module of shared/ imports one that imports it back");
}

#[test]
fn no_file_of_shared_tags_imports_one_that_imports_it_back() {
    let graph = tags_graph();
    assert!(graph["eval"].contains("check") && graph["predict"].contains("columnar"), "{graph:?}");
    assert_eq!(cycle(&graph), None, "an import cycle among the files of shared::tags");
}
