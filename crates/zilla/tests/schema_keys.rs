//! Every key the composed schema (`zilla schema`) accepts is handled: either a named test
//! covers what it does, or it is refused at load with "not supported". The table is
//! `schema_keys.txt` next to this file; adding a key to a component's schema without adding it
//! there (with its test, or marked `x-unsupported` and listed as `refused`) fails this test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use zilla::engine::config::refused::{UNSUPPORTED, key_paths};

/// Keys implemented or owned elsewhere that no test covers yet. Nothing may be added here:
/// a new key needs a test or a refusal.
const UNTESTED: &[&str] = &[];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `schema_keys.txt`: key path → how it is handled (`test <file>::<fn>`, `refused`, or
/// `zilla-ignores <why>` for what Zilla itself accepts and ignores).
fn table() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema_keys.txt"),
    )
    .expect("schema_keys.txt");
    let mut table = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, handling) = line
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("schema_keys.txt:{}: no handling given", number + 1));
        let previous = table.insert(key.to_owned(), handling.trim().to_owned());
        assert!(
            previous.is_none(),
            "schema_keys.txt:{}: {key} twice",
            number + 1
        );
    }
    table
}

#[test]
fn every_schema_key_is_tested_or_refused() {
    let schema = zilla::registry().schema();
    let all = key_paths(&schema);
    let keys: Vec<String> = all.iter().map(|(key, _)| key.clone()).collect();
    let refused: Vec<String> = all
        .iter()
        .filter(|(_, reason)| reason.is_some())
        .map(|(key, _)| key.clone())
        .collect();
    let table = table();
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !table.contains_key(*key))
        .collect();
    assert!(
        missing.is_empty(),
        "keys the schema accepts that schema_keys.txt does not list: name the test that \
         covers each, or mark it `x-unsupported` in its schema and list it as `refused`:\n{}",
        missing
            .iter()
            .map(|key| key.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let stale: Vec<&String> = table.keys().filter(|key| !keys.contains(key)).collect();
    assert!(
        stale.is_empty(),
        "schema_keys.txt lists keys the schema does not have: {stale:#?}"
    );
    let mut sources: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (key, handling) in &table {
        if handling == "refused" {
            assert!(
                refused.contains(key),
                "{key} is listed as refused but its schema has no `{UNSUPPORTED}`"
            );
        } else if let Some(test) = handling.strip_prefix("test ") {
            let (file, function) = test
                .split_once("::")
                .unwrap_or_else(|| panic!("{key}: `test <file>::<fn>` expected, got {test}"));
            let source = sources
                .entry(workspace().join(file))
                .or_insert_with_key(|path| {
                    std::fs::read_to_string(path)
                        .unwrap_or_else(|_| panic!("{key}: no file {file}"))
                });
            assert!(
                source.contains(&format!("fn {function}(")),
                "{key}: no test `{function}` in {file}"
            );
        } else if let Some(why) = handling.strip_prefix("untested ") {
            assert!(
                UNTESTED.contains(&key.as_str()) && !why.trim().is_empty(),
                "{key}: `untested` is allowed only for the keys in UNTESTED, with a reason"
            );
        } else {
            assert!(
                handling
                    .strip_prefix("zilla-ignores ")
                    .is_some_and(|why| !why.trim().is_empty()),
                "{key}: unknown handling `{handling}`"
            );
        }
    }
    for key in &refused {
        assert!(
            table
                .iter()
                .any(|(listed, handling)| handling == "refused" && listed == key),
            "{key} is marked `{UNSUPPORTED}` but schema_keys.txt does not list it as refused"
        );
    }
}

/// A config that sets `key` (a path from the table) and little else.
fn config_setting(key: &str) -> (String, String) {
    let mut document = json!({"name": "test"});
    let mut instance_path = Vec::new();
    let segments: Vec<&str> = key.split('.').collect();
    let mut node = &mut document;
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        let (name, qualifiers) = match segment.split_once('[') {
            Some((name, rest)) => (name, format!("[{rest}")),
            None => (*segment, String::new()),
        };
        let (name, is_array) = if qualifiers == "[]" {
            (name, true)
        } else {
            (name, false)
        };
        let name = if name == "*" { "item0" } else { name };
        instance_path.push(name.to_owned());
        let object = node.as_object_mut().expect("an object on the path");
        let child = object.entry(name.to_owned()).or_insert_with(|| {
            if last {
                json!({})
            } else if is_array {
                json!([{}])
            } else {
                json!({})
            }
        });
        let mut qualifier_values = qualifiers
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split("][")
            .filter(|value| !value.is_empty() && *value != "]");
        if name == "item0" && !last {
            if let Some(type_name) = qualifier_values.next() {
                child["type"] = json!(type_name);
            }
            if let Some(kind) = qualifier_values.next() {
                child["kind"] = json!(kind);
            }
            if segments.first() == Some(&"bindings") && child.get("type").is_none() {
                child["type"] = json!("echo");
                child["kind"] = json!("server");
            }
        }
        node = if is_array && !last {
            instance_path.push("0".to_owned());
            &mut child[0]
        } else {
            child
        };
    }
    let mut display = String::new();
    for segment in &instance_path {
        if segment.parse::<usize>().is_ok() {
            display.push_str(&format!("[{segment}]"));
        } else if display.is_empty() {
            display.push_str(segment);
        } else {
            display.push_str(&format!(".{segment}"));
        }
    }
    (
        serde_json::to_string_pretty(&Value::Object(
            document.as_object().cloned().unwrap_or_else(Map::new),
        ))
        .unwrap(),
        display,
    )
}

#[test]
fn every_refused_key_fails_the_load_with_not_supported() {
    let registry = zilla::registry();
    let table = table();
    let mut checked = 0;
    for (key, _) in table.iter().filter(|(_, handling)| *handling == "refused") {
        let (text, path) = config_setting(key);
        let errors =
            match zilla::engine::engine::load_config(&registry, Path::new("zilla.yaml"), &text) {
                Ok(_) => panic!("{key}: a config setting it loaded:\n{text}"),
                Err(errors) => errors.to_string(),
            };
        assert!(
            errors
                .lines()
                .any(|line| line.contains(&format!(" {path}: ")) && line.contains("not supported")),
            "{key}: no `not supported` error at {path}:\n{errors}\n{text}"
        );
        checked += 1;
    }
    assert!(checked > 0, "no refused keys checked");
}
