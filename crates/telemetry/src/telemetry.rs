//! Checks of the `telemetry` sections against the metrics the registered components declare:
//! every key either does what Zilla documents or fails the load here.
//!
//! - Namespace `telemetry.metrics` entries name metrics some component declares.
//! - Binding `telemetry.metrics` entries are regexes that compile and match at least one
//!   metric the namespace lists and the binding's type records.
//! - Binding `telemetry.attributes` are label names Prometheus accepts, with values the
//!   binding's enabled metric groups resolve (e.g. `${http.request.method}` on `http.*`).
//!
//! Namespace `telemetry.attributes` need no check: they are literal resource attributes, which
//! the `otlp` exporter sends with every push as Zilla's does (the engine hands them to
//! exporters through their build context).

use std::collections::BTreeSet;

use crate::config::error::ConfigError;
use crate::config::model::{BindingConfig, Config, Origin};
use crate::metrics::{MetricGroup, MetricScope, metric_pattern};

/// Label names the exporters write themselves.
const RESERVED_LABELS: &[&str] = &["namespace", "binding", "le"];

/// Every problem with the `telemetry` sections of `config`. `groups` are the metric groups
/// declared by the components built in, `zilla_groups` the names of every group Zilla defines
/// (so that a metric this distribution lacks is told apart from a typo).
pub fn check_telemetry(
    config: &Config,
    groups: &[&'static MetricGroup],
    zilla_groups: &[&str],
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (index, namespace) in config.namespaces.iter().enumerate() {
        let telemetry = Origin {
            document: index,
            path: vec!["telemetry".to_owned()],
        };
        let mut listed = BTreeSet::new();
        for (position, metric) in namespace.telemetry.metrics.iter().enumerate() {
            let origin = telemetry.child("metrics").child(position.to_string());
            if groups
                .iter()
                .any(|group| group.metrics.iter().any(|m| m.name == metric))
            {
                listed.insert(metric.as_str());
            } else {
                errors.push(config.error(&origin, unknown_metric(groups, zilla_groups, metric)));
            }
        }
        for (_, binding) in &namespace.bindings {
            errors.extend(check_binding(config, groups, binding, &listed));
        }
    }
    errors
}

fn unknown_metric(groups: &[&'static MetricGroup], zilla_groups: &[&str], metric: &str) -> String {
    let group = metric.split('.').next().unwrap_or_default();
    if let Some(known) = groups.iter().copied().find(|known| known.name == group) {
        let names: Vec<&str> = known.metrics.iter().map(|m| m.name).collect();
        format!(
            "unknown metric `{metric}`; expected one of: {}",
            names.join(", ")
        )
    } else if zilla_groups.contains(&group) {
        format!("metric `{metric}` is not recorded by any component built into this distribution")
    } else {
        let known: Vec<&str> = groups
            .iter()
            .flat_map(|group| group.metrics.iter().map(|m| m.name))
            .collect();
        format!(
            "unknown metric `{metric}`; expected one of: {}",
            known.join(", ")
        )
    }
}

fn check_binding(
    config: &Config,
    groups: &[&'static MetricGroup],
    binding: &BindingConfig,
    listed: &BTreeSet<&str>,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let telemetry = binding.origin.child("telemetry");
    let groups: Vec<&MetricGroup> = groups
        .iter()
        .copied()
        .filter(|group| group.recorded_by(&binding.type_name))
        .collect();
    let recordable = |metric: &str| {
        groups.iter().any(|group| {
            group.metrics.iter().any(|m| m.name == metric)
                && group.scope_of(binding.kind, metric) != MetricScope::NotRecorded
        })
    };
    let mut enabled: BTreeSet<&str> = BTreeSet::new();
    for (position, pattern) in binding.telemetry_metrics.iter().enumerate() {
        let origin = telemetry.child("metrics").child(position.to_string());
        let regex = match metric_pattern(pattern) {
            Ok(regex) => regex,
            Err(error) => {
                errors.push(config.error(
                    &origin,
                    format!(
                        "`{pattern}` is not a valid regular expression: {}",
                        regex_problem(&error)
                    ),
                ));
                continue;
            }
        };
        let matched: Vec<&str> = listed
            .iter()
            .copied()
            .filter(|metric| regex.is_match(metric))
            .collect();
        if matched.is_empty() {
            let listed: Vec<&str> = listed.iter().copied().collect();
            let listed = if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(", ")
            };
            errors.push(config.error(
                &origin,
                format!(
                    "`{pattern}` matches no metric in the namespace's telemetry.metrics (listed: {listed})"
                ),
            ));
            continue;
        }
        let recorded: Vec<&str> = matched
            .iter()
            .copied()
            .filter(|metric| recordable(metric))
            .collect();
        if recorded.is_empty() {
            errors.push(config.error(
                &origin,
                format!(
                    "`{pattern}` matches only metrics a {} {} binding does not record ({})",
                    binding.type_name,
                    binding.kind,
                    matched.join(", ")
                ),
            ));
        }
        enabled.extend(recorded);
    }
    let labelled: Vec<&MetricGroup> = groups
        .iter()
        .copied()
        .filter(|group| group.attribute.is_some())
        .filter(|group| {
            group.metrics.iter().any(|m| {
                enabled.contains(m.name)
                    && group.scope_of(binding.kind, m.name) == MetricScope::Labelled
            })
        })
        .collect();
    for (label, value) in &binding.telemetry_attributes {
        let origin = telemetry.child("attributes").child(label.clone());
        if !is_label_name(label) || RESERVED_LABELS.contains(&label.as_str()) {
            errors.push(config.error(
                &origin,
                format!(
                    "`{label}` cannot be a metric label: a label is a letter or `_`, then letters, digits or `_`, and not one of {}",
                    RESERVED_LABELS.join(", ")
                ),
            ));
            continue;
        }
        if labelled.is_empty() {
            let supporting: Vec<String> = groups
                .iter()
                .filter(|group| group.attribute.is_some())
                .flat_map(|group| match group.scope {
                    None => vec![format!("{}.*", group.name)],
                    Some(_) => group
                        .metrics
                        .iter()
                        .filter(|m| group.scope_of(binding.kind, m.name) == MetricScope::Labelled)
                        .map(|m| m.name.to_owned())
                        .collect(),
                })
                .collect();
            let message = if supporting.is_empty() {
                format!(
                    "telemetry attributes are not supported on a {} {} binding: none of its metrics records attributes",
                    binding.type_name, binding.kind
                )
            } else {
                format!(
                    "telemetry attributes label only {} metrics, which this binding's telemetry.metrics does not enable",
                    supporting.join(", ")
                )
            };
            errors.push(config.error(&origin, message));
            continue;
        }
        let mut problems = Vec::new();
        let understood = labelled.iter().any(|group| match group.attribute {
            Some(check) => match check(value) {
                Ok(()) => true,
                Err(problem) => {
                    problems.push(problem);
                    false
                }
            },
            None => false,
        });
        if !understood {
            errors.push(config.error(
                &origin,
                format!("`{value}` is not supported: {}", problems.join("; ")),
            ));
        }
    }
    errors
}

/// The one-line cause of a regex error (its display spans several lines, with a caret).
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}
