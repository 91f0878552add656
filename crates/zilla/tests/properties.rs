//! Every `zilla.*` property the engine's and the components' code names is declared by the
//! engine or a registered component, so `-P <name>=<value>` is accepted rather than refused as
//! unknown; and every property declared by its literal name (in `.properties(&[...])`) is also
//! named outside the declaration, where it is read (one declared through a `const` counts as
//! read: the compiler warns about an unused one). The names are the string literals of the production code (each `src/` file up to
//! its `#[cfg(test)]` module); the binary's own properties (`crates/zilla/src`) are declared by
//! the binary and checked by its own start. Every one of them is listed in `README.md` or `docs/*.md`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zilla::engine::properties::Properties;

/// Where component and engine code lives.
const ROOTS: &[&str] = &[
    "bindings",
    "catalogs",
    "crates",
    "engine",
    "exporters",
    "guards",
    "stores",
    "validators",
    "vaults",
];

/// The property families Zilla defines.
const FAMILIES: &[&str] = &[
    "zilla.engine.",
    "zilla.binding.",
    "zilla.guard.",
    "zilla.catalog.",
    "zilla.exporter.",
    "zilla.vault.",
    "zilla.store.",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

fn is_property(literal: &str) -> bool {
    FAMILIES.iter().any(|family| literal.starts_with(family))
        && literal
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && !literal.ends_with('.')
}

/// The property names written as whole string literals in `code`.
fn literals(code: &str) -> impl Iterator<Item = &str> {
    code.split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| is_property(literal))
}

/// The production code of every component and engine `src/` file (up to its `#[cfg(test)]`
/// module), split into its `.properties(&[...])` declarations and everything else.
fn production_code() -> Vec<(PathBuf, String, String)> {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_sources(&root.join(dir), &mut files);
    }
    let mut code = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap().to_path_buf();
        let text = relative.to_string_lossy().replace('\\', "/");
        if !text.contains("/src/") || text.starts_with("crates/zilla/") || text.contains("/fuzz/") {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap();
        let production = source.split("#[cfg(test)]").next().unwrap_or_default();
        let (mut declarations, mut rest) = (String::new(), String::new());
        let mut remaining = production;
        while let Some(at) = remaining.find(".properties(&[") {
            rest.push_str(&remaining[..at]);
            let block = &remaining[at..];
            let end = block.find("])").map_or(block.len(), |end| end + 2);
            declarations.push_str(&block[..end]);
            remaining = &block[end..];
        }
        rest.push_str(remaining);
        code.push((relative, declarations, rest));
    }
    code
}

/// Property names written as whole string literals in production code, with a file naming
/// each.
fn named_properties() -> BTreeMap<String, PathBuf> {
    let mut names = BTreeMap::new();
    for (file, declarations, rest) in production_code() {
        for literal in literals(&declarations).chain(literals(&rest)) {
            names.entry(literal.to_owned()).or_insert(file.clone());
        }
    }
    names
}

#[test]
fn every_property_the_code_names_is_declared() {
    let names = named_properties();
    assert!(
        names.contains_key("zilla.binding.kafka.client.fetch.max.wait.millis")
            && names.contains_key("zilla.engine.drain.timeout.millis"),
        "the scan finds the properties: {names:#?}"
    );
    let registry = zilla::registry();
    let undeclared: Vec<String> = names
        .iter()
        .filter(|(name, _)| {
            let mut properties = Properties::default();
            properties.set(name.as_str(), "1");
            !registry.unknown_properties(&properties).is_empty()
        })
        .map(|(name, file)| format!("{name} (named in {})", file.display()))
        .collect();
    assert!(
        undeclared.is_empty(),
        "properties the code reads that no component declares (so `-P` refuses them): {undeclared:#?}"
    );
}

#[test]
fn every_property_declared_by_name_is_named_where_it_is_read() {
    let code = production_code();
    let declared: BTreeMap<&str, &PathBuf> = code
        .iter()
        .flat_map(|(file, declarations, _)| literals(declarations).map(move |name| (name, file)))
        .collect();
    assert!(
        declared.contains_key("zilla.binding.kafka.client.fetch.max.wait.millis"),
        "the scan finds the declarations: {declared:#?}"
    );
    let unread: Vec<String> = declared
        .iter()
        .filter(|(name, _)| {
            !code
                .iter()
                .any(|(_, _, rest)| literals(rest).any(|n| n == **name))
        })
        .map(|(name, file)| format!("{name} (declared in {})", file.display()))
        .collect();
    assert!(
        unread.is_empty(),
        "properties declared (so `-P` accepts them) that no code reads: {unread:#?}"
    );
}

#[test]
fn every_property_the_code_names_is_documented() {
    let names = named_properties();
    let mut docs = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    for entry in std::fs::read_dir(workspace().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            docs.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let undocumented: Vec<String> = names
        .iter()
        .filter(|(name, _)| !docs.contains(&format!("`{name}`")))
        .map(|(name, file)| format!("{name} (named in {})", file.display()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "properties the code reads that neither README.md nor docs/*.md lists: {undocumented:#?}"
    );
}
