//! The module graph of `hallmark-ca`: no import cycle between its top-level modules, and
//! nothing but the server wiring imports the gRPC layer (`api`).
//!
//! Reads the sources: every `crate::X` path (in `use` items, grouped `use crate::{X, Y}` and
//! inline paths) in the non-test code of a top-level module (`src/X.rs` or `src/X/`) is an
//! edge to `X`. Test-only code (`#[cfg(test)] mod tests { .. }` and `#[cfg(test)] mod x;`
//! files) is left out: tests may reach upwards.

// Test code: helpers panic with the failure (clippy.toml allows that in `#[test]`s only).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules allowed to import `api`: the wiring above it.
const API_USERS: &[&str] = &["server"];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code of `text` without comments and without `#[cfg(test)]` inline modules; the names
/// of `#[cfg(test)] mod x;` files it declares go to `test_files`.
fn non_test_code(text: &str, test_files: &mut BTreeSet<String>) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[cfg(test)]") {
            // The item that follows: a module file, or an inline module skipped to its end.
            let Some(next) = lines.peek().map(|l| l.trim().to_owned()) else {
                break;
            };
            let item = next
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = item.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                test_files.insert(name.trim().to_owned());
                lines.next();
                continue;
            }
            if item.starts_with("mod ") && item.ends_with('{') {
                lines.next();
                let mut depth = 1i32;
                for l in lines.by_ref() {
                    if l.trim_start().starts_with("//") {
                        continue;
                    }
                    depth += l.matches('{').count() as i32 - l.matches('}').count() as i32;
                    if depth <= 0 {
                        break;
                    }
                }
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Top-level modules named by `crate::` paths in `code`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        // `$crate::` (macros) and `hallmark_crate::`-like names are not this crate's paths.
        if before.is_some_and(|c| c == '$' || c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let s = rest.trim_start();
        if let Some(group) = s.strip_prefix('{') {
            // `crate::{a::b, c, d::{e, f}}`: the first name of every top-level item.
            let mut depth = 0;
            let mut at_item = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => at_item = true,
                    c if at_item && (c.is_ascii_alphabetic() || c == '_') => {
                        refs.insert(ident_at(&group[j..]).to_owned());
                        at_item = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident_at(s);
            if !name.is_empty() {
                refs.insert(name.to_owned());
            }
        }
    }
    refs
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The edges between top-level modules of `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // Test-only module files, by their path without `.rs`.
    let mut test_only: BTreeSet<PathBuf> = BTreeSet::new();
    let mut code_of = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let mut test_files = BTreeSet::new();
        let code = non_test_code(&text, &mut test_files);
        let parent = if f
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            f.parent().unwrap().to_owned()
        } else {
            f.with_extension("")
        };
        for t in test_files {
            test_only.insert(parent.join(t));
        }
        code_of.insert(f.clone(), code);
    }
    let mut graph = Graph::new();
    for (f, code) in code_of {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_owned();
        // The crate roots are not modules of the graph.
        if top == "lib" || top == "main" {
            continue;
        }
        let without_ext = f.with_extension("");
        if test_only.contains(&without_ext) || test_only.contains(f.parent().unwrap()) {
            continue;
        }
        let deps = graph.entry(top.clone()).or_default();
        for r in crate_refs(&code) {
            if r != top {
                deps.insert(r);
            }
        }
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.g.contains_key(w) {
                    continue;
                }
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

/// The edges of `graph` inside the module set `comp`, to say how a cycle closes.
fn edges_within(graph: &Graph, comp: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for a in comp {
        for b in graph.get(a).into_iter().flatten() {
            if comp.contains(b) {
                out.push(format!("{a} -> {b}"));
            }
        }
    }
    out
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = module_graph(&src_dir());
    assert!(graph.contains_key("authority") && graph.contains_key("store"));
    // The map, for `cargo test --test module_graph -- --nocapture`.
    for (module, deps) in &graph {
        let deps: Vec<&str> = deps
            .iter()
            .filter(|d| graph.contains_key(*d))
            .map(String::as_str)
            .collect();
        println!("{module} -> {}", deps.join(", "));
    }
    let found = cycles(&graph);
    let report: Vec<String> = found
        .iter()
        .map(|c| {
            format!(
                "{{{}}}: {}",
                c.join(", "),
                edges_within(&graph, c).join(", ")
            )
        })
        .collect();
    assert!(
        found.is_empty(),
        "import cycles between modules of ca-service/src:\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn only_the_wiring_imports_api() {
    let graph = module_graph(&src_dir());
    let users: Vec<&str> = graph
        .iter()
        .filter(|(m, deps)| deps.contains("api") && !API_USERS.contains(&m.as_str()))
        .map(|(m, _)| m.as_str())
        .collect();
    assert!(
        users.is_empty(),
        "modules below the gRPC layer import `api`: {users:?}"
    );
}

#[test]
fn the_parser_sees_grouped_and_inline_paths() {
    let code =
        "use crate::{a::b, c, d::{e, f}};\nuse crate::g;\nlet x = crate::h::y();\n$crate::i\n";
    let refs: Vec<String> = crate_refs(code).into_iter().collect();
    assert_eq!(refs, ["a", "c", "d", "g", "h"]);
    let mut files = BTreeSet::new();
    let code = non_test_code(
        "use crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n#[cfg(test)]\nmod t;\nuse crate::d;\n",
        &mut files,
    );
    let refs: Vec<String> = crate_refs(&code).into_iter().collect();
    assert_eq!(refs, ["a", "d"]);
    assert_eq!(files.into_iter().collect::<Vec<_>>(), ["t"]);
}
