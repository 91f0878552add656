//! Engine and binding properties: `-P name=value` on the command line, Zilla's property names.

use std::collections::BTreeMap;
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

    /// A boolean, or `default`.
    pub fn bool(&self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(value) => value.eq_ignore_ascii_case("true"),
        }
    }

    /// A duration given in milliseconds, or `default`.
    pub fn millis(&self, name: &str, default: Duration) -> Duration {
        Duration::from_millis(self.u64(name, default.as_millis() as u64))
    }
}
