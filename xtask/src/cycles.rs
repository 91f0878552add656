//! No module cycles: every crate's modules form a directed acyclic graph, both file by file
//! (`wire::codec` → `wire::error`) and between the modules directly under the crate root
//! (`config` → `registry`). A cycle means two modules cannot be understood, tested or moved
//! apart; the fix is to move the shared piece down or to invert a dependency.
//!
//! An edge is a `crate::` or `super::` path in a module's non-test code, resolved to the
//! deepest module it names. Paths to a module's own ancestors are not edges: a parent that
//! re-exports its children is a facade, not a dependency. Written here rather than taken from
//! a crate: `cargo-modules` does this through rust-analyzer, far too heavy to build for one
//! check, and nothing lighter is maintained.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Module path (`wire::codec`, `` for the root) → the modules it uses.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Fails listing every cycle in every crate under `workspace`.
pub fn check(workspace: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for src in crate_sources(workspace)? {
        let graph = module_graph(&src)?;
        let crate_name = src
            .parent()
            .and_then(|dir| dir.strip_prefix(workspace).ok())
            .map_or_else(
                || src.display().to_string(),
                |dir| dir.display().to_string(),
            );
        for cycle in cycles(&graph) {
            problems.push(format!("{crate_name}: {}", cycle.join(" -> ")));
        }
        for cycle in cycles(&top_level(&graph)) {
            problems.push(format!("{crate_name} (top level): {}", cycle.join(" -> ")));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("module cycles:\n  {}", problems.join("\n  "))
    }
}

/// The `src` directory of every crate in the workspace.
fn crate_sources(workspace: &Path) -> Result<Vec<PathBuf>> {
    let mut sources = Vec::new();
    let mut pending = vec![workspace.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !path.is_dir() || name.starts_with('.') || name == "target" || name == "fuzz" {
                continue;
            }
            if name == "src" && dir.join("Cargo.toml").is_file() {
                sources.push(path);
            } else if dir.join("Cargo.toml").is_file() && dir != workspace {
                // Inside a crate only `src` holds its modules.
            } else {
                pending.push(path);
            }
        }
    }
    sources.sort();
    Ok(sources)
}

/// The module path of a file under `src`: `lib.rs` is ``, `wire/mod.rs` is `wire`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    // Binaries under `src/bin` are crates of their own.
    (parts.first().map(String::as_str) != Some("bin")).then(|| parts.join("::"))
}

fn module_graph(src: &Path) -> Result<Graph> {
    let mut files = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_stem().is_some_and(|s| s != "tests")
                && let Some(module) = module_of(src, &path)
            {
                files.insert(module, path);
            }
        }
    }
    let mut graph = Graph::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path)?;
        let code = without_comments(production_part(&text));
        let here: Vec<&str> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").collect()
        };
        let mut uses = BTreeSet::new();
        for target in referenced_paths(&code, &here) {
            let Some(used) = deepest_module(&target, &files) else {
                continue;
            };
            let is_ancestor = used.is_empty() || module.starts_with(&format!("{used}::"));
            if used != *module && !is_ancestor {
                uses.insert(used);
            }
        }
        graph.insert(module.clone(), uses);
    }
    Ok(graph)
}

/// The code before the first `#[cfg(test)]`: test modules sit at the end of a file.
fn production_part(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |at| &text[..at])
}

/// `text` without `//` and `/* */` comments (doc comments included).
fn without_comments(text: &str) -> String {
    // A quote as a char literal would open a string below.
    let text = text.replace("'\"'", "' '").replace("'\\\"'", "' '");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("r#\"") {
            rest = after.find("\"#").map_or("", |at| &after[at + 2..]);
        } else if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |at| &after[at..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |at| &after[at + 2..]);
        } else if let Some(after) = rest.strip_prefix('"') {
            // Skip string literals: a path inside one is text, not a dependency.
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((at, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '"' => {
                        end = at + 1;
                        break;
                    }
                    _ => {}
                }
            }
            out.push_str("\"\"");
            rest = &after[end.min(after.len())..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Every `crate::…`, `super::…` and `self::…` path in `code`, as absolute segments; groups
/// (`crate::{a::B, c}`) give one path per item.
fn referenced_paths(code: &str, here: &[&str]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("::") {
        let before = &code[..at];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let base: Vec<String> = match &before[start..] {
            "crate" => Vec::new(),
            // The parent of the module, whether it is `a/b.rs` or `a/b/mod.rs`.
            "super" => {
                let depth = here.len().saturating_sub(1);
                here[..depth].iter().map(|s| (*s).to_owned()).collect()
            }
            "self" => here.iter().map(|s| (*s).to_owned()).collect(),
            _ => continue,
        };
        // Only the head of a path: `crate::a::b` once, not again at `a::b`.
        if start >= 2 && code[..start].ends_with("::") {
            continue;
        }
        let tail = &code[at + 2..];
        for item in path_items(tail) {
            let mut path = base.clone();
            path.extend(item);
            paths.push(path);
        }
    }
    paths
}

/// The paths `tail` starts with: `a::b::C` → `[a, b, C]`; `{a::B, c}` → `[a, B]`, `[c]`.
fn path_items(tail: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut rest = tail;
    loop {
        let rest_trimmed = rest.trim_start();
        if let Some(group) = rest_trimmed.strip_prefix('{') {
            let mut depth = 1;
            let mut end = group.len();
            for (at, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = at;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut items = Vec::new();
            for item in split_top_level(&group[..end]) {
                for sub in path_items(item) {
                    let mut path = segments.clone();
                    path.extend(sub);
                    items.push(path);
                }
            }
            return items;
        }
        let word_end = rest_trimmed
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest_trimmed.len());
        if word_end == 0 {
            return vec![segments];
        }
        segments.push(rest_trimmed[..word_end].to_owned());
        match rest_trimmed[word_end..].strip_prefix("::") {
            Some(after) => rest = after,
            None => return vec![segments],
        }
    }
}

/// `a::B, c::{D, E}` split at the commas outside braces.
fn split_top_level(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (at, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// The deepest module file that `path` names (a path to an item names its module).
fn deepest_module(path: &[String], files: &BTreeMap<String, PathBuf>) -> Option<String> {
    (0..=path.len())
        .rev()
        .map(|len| path[..len].join("::"))
        .find(|candidate| files.contains_key(candidate))
}

/// The graph between the modules directly under the crate root.
fn top_level(graph: &Graph) -> Graph {
    let mut top = Graph::new();
    for (module, uses) in graph {
        let Some(from) = module.split("::").next().filter(|m| !m.is_empty()) else {
            continue;
        };
        for used in uses {
            let to = used.split("::").next().unwrap_or("");
            if !to.is_empty() && to != from {
                top.entry(from.to_owned())
                    .or_default()
                    .insert(to.to_owned());
            }
        }
    }
    top
}

/// The strongly connected components with more than one module (Tarjan), each as a path.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Search<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Search<'a> {
        fn visit(&mut self, node: &'a str) {
            let index = self.index.len();
            self.index.insert(node, index);
            self.low.insert(node, index);
            self.stack.push(node);
            for next in self.graph.get(node).into_iter().flatten() {
                let next = next.as_str();
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node, low);
                } else if self.stack.contains(&next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node, low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    component.push(member.to_owned());
                    if member == node {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.reverse();
                    self.found.push(component);
                }
            }
        }
    }
    let mut search = Search {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !search.index.contains_key(node.as_str()) {
            search.visit(node);
        }
    }
    search.found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_has_no_module_cycles() -> Result<()> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("workspace")?;
        check(workspace)
    }

    #[test]
    fn finds_a_cycle_and_reads_groups_and_super() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("wire"))?;
        std::fs::write(src.join("lib.rs"), "pub mod wire;\npub mod other;\n")?;
        std::fs::write(src.join("wire/mod.rs"), "mod a;\nmod b;\npub use a::X;\n")?;
        std::fs::write(
            src.join("wire/a.rs"),
            "use super::b::Y;\n// crate::other is only mentioned here\n",
        )?;
        std::fs::write(
            src.join("wire/b.rs"),
            "use crate::{other::Z, wire::a::X};\n#[cfg(test)]\nmod t { use crate::other; }\n",
        )?;
        std::fs::write(
            src.join("other.rs"),
            "const S: &str = \"crate::wire::a\";\nconst Q: char = '\"';\nconst R: &str = r#\"crate::wire\"#;\n",
        )?;
        let graph = module_graph(&src)?;
        assert_eq!(
            graph["wire::a"],
            BTreeSet::from(["wire::b".to_owned()]),
            "comments are not edges"
        );
        assert_eq!(
            graph["wire::b"],
            BTreeSet::from(["other".to_owned(), "wire::a".to_owned()])
        );
        assert!(graph["other"].is_empty(), "strings are not edges");
        assert!(
            graph["wire"].is_empty(),
            "children of a facade are not edges"
        );
        assert_eq!(
            cycles(&graph),
            vec![vec!["wire::a".to_owned(), "wire::b".to_owned()]]
        );
        assert!(cycles(&top_level(&graph)).is_empty());
        Ok(())
    }
}
