//! Engine and binding properties: `-P name=value` on the command line, Zilla's property names.
//!
//! Every component declares the properties it reads
//! ([`crate::registry::Registry::properties`]); a property no component declares is refused at
//! start, so a misspelt name is an error instead of a setting silently left at its default.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Properties by name. A bare `-P name` means `true`, as in Zilla.
#[derive(Debug, Clone, Default)]
pub struct Properties {
    values: BTreeMap<String, String>,
}

impl Properties {
    /// Parses `name=value` (or bare `name`) assignments.
    pub fn from_assignments<'a>(assignments: impl IntoIterator<Item = &'a str>) -> Self {
        let values = assignments
            .into_iter()
            .map(|assignment| match assignment.split_once('=') {
                Some((name, value)) => (name.trim().to_owned(), value.trim().to_owned()),
                None => (assignment.trim().to_owned(), "true".to_owned()),
            })
            .collect();
        Self { values }
    }

    /// Sets one property.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.values.insert(name.into(), value.into());
    }

    /// The raw value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A number, or `default` when unset or unparsable (a warning is logged for the latter).
    pub fn u64(&self, name: &str, default: u64) -> u64 {
        match self.get(name) {
            None => default,
            Some(value) => value.parse().unwrap_or_else(|_| {
                tracing::warn!(property = name, value, "not a number; using {default}");
                default
            }),
        }
    }

    /// A boolean (`true` or `false`, any case, or `1` or `0`), or `default` when unset or
    /// unparsable (a warning is logged for the latter).
    pub fn bool(&self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(value) if value.eq_ignore_ascii_case("true") || value == "1" => true,
            Some(value) if value.eq_ignore_ascii_case("false") || value == "0" => false,
            Some(value) => {
                tracing::warn!(property = name, value, "not a boolean; using {default}");
                default
            }
        }
    }

    /// A duration given in milliseconds, or `default`.
    pub fn millis(&self, name: &str, default: Duration) -> Duration {
        Duration::from_millis(self.u64(name, default.as_millis() as u64))
    }

    /// One message per property whose name is not in `declared`, naming it and the properties
    /// of the same component (`zilla.binding.<type>` or `zilla.engine`) that do exist.
    pub fn undeclared(&self, declared: &BTreeSet<&str>) -> Vec<String> {
        self.values
            .keys()
            .filter(|name| !declared.contains(name.as_str()))
            .map(|name| {
                let group = component_of(name);
                let siblings: Vec<&str> = declared
                    .iter()
                    .copied()
                    .filter(|known| component_of(known) == group)
                    .collect();
                if group.is_empty() || siblings.is_empty() {
                    format!("unknown property `{name}`: no component of this distribution reads it")
                } else {
                    format!(
                        "unknown property `{name}`; the `{group}.*` properties are: {}",
                        siblings.join(", ")
                    )
                }
            })
            .collect()
    }
}

/// `zilla.binding.<type>` or `zilla.engine` for Zilla's property names, empty for others.
fn component_of(name: &str) -> &str {
    let segments = if name.starts_with("zilla.binding.") {
        3
    } else if name.starts_with("zilla.engine.") {
        2
    } else {
        return "";
    };
    match name.match_indices('.').nth(segments - 1) {
        Some((end, _)) => &name[..end],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_are_true_false_one_or_zero_and_anything_else_keeps_the_default() {
        let properties =
            Properties::from_assignments(["a=true", "b=FALSE", "c=1", "d=0", "e=yes", "f"]);
        assert!(properties.bool("a", false));
        assert!(!properties.bool("b", true));
        assert!(properties.bool("c", false));
        assert!(!properties.bool("d", true));
        assert!(properties.bool("e", true));
        assert!(!properties.bool("e", false));
        // A bare name means true.
        assert!(properties.bool("f", false));
        assert!(properties.bool("unset", true));
    }

    #[test]
    fn undeclared_names_are_reported_with_their_component_siblings() {
        let declared = BTreeSet::from([
            "zilla.engine.drain.timeout.millis",
            "zilla.binding.tcp.idle.timeout.millis",
            "zilla.binding.tcp.maximum.connections",
        ]);
        let properties = Properties::from_assignments([
            "zilla.binding.tcp.idle.timeout.millis=5",
            "zilla.binding.tcp.idle.timout.millis=5",
            "zilla.binding.nope.x=1",
            "zilla.engine.verbose",
            "other=1",
        ]);
        let messages = properties.undeclared(&declared);
        assert_eq!(
            messages,
            [
                "unknown property `other`: no component of this distribution reads it",
                "unknown property `zilla.binding.nope.x`: no component of this distribution reads it",
                "unknown property `zilla.binding.tcp.idle.timout.millis`; the `zilla.binding.tcp.*` properties are: zilla.binding.tcp.idle.timeout.millis, zilla.binding.tcp.maximum.connections",
                "unknown property `zilla.engine.verbose`; the `zilla.engine.*` properties are: zilla.engine.drain.timeout.millis",
            ]
        );
    }
}
