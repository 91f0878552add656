//! Every `zilla.*` property the engine's and the components' code names is declared by the
//! engine or a registered component, so `-P <name>=<value>` is accepted rather than refused as
//! unknown. The names are the string literals of the production code (each `src/` file up to
//! its `#[cfg(test)]` module); the binary's own properties (`crates/zilla/src`) are declared by
//! the binary and checked by its own start.

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

/// Property names written as whole string literals in production code, with a file naming
/// each.
fn named_properties() -> BTreeMap<String, PathBuf> {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ROOTS {
        rust_sources(&root.join(dir), &mut files);
    }
    let mut names = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap().to_path_buf();
        let text = relative.to_string_lossy().replace('\\', "/");
        if !text.contains("/src/") || text.starts_with("crates/zilla/") || text.contains("/fuzz/") {
            continue;
        }
        let source = std::fs::read_to_string(&file).unwrap();
        let production = source.split("#[cfg(test)]").next().unwrap_or_default();
        for literal in production.split('"').skip(1).step_by(2) {
            let whole = FAMILIES.iter().any(|family| literal.starts_with(family))
                && literal
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
                && !literal.ends_with('.');
            if whole {
                names.entry(literal.to_owned()).or_insert(relative.clone());
            }
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
