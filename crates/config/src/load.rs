//! The config pipeline up to (not including) building: substituted text → YAML documents →
//! schema validation (the namespace shape, then each component's own schema) → typed model →
//! references resolved → pipeline stream kinds checked. Every problem found is reported, each
//! with file, line, column, config path and what was expected.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::error::{ConfigError, ConfigErrors};
use super::model::{
    BindingConfig, BindingKind, ComponentConfig, Config, Namespace, Origin, QualifiedName,
    RouteConfig, Telemetry, display_path,
};
use super::node::Node;
use super::refused::refusals;
use super::source::Source;
use super::types::{Category, Types, namespace_schema};

/// Loads and checks a whole config.
pub fn load(source: Source, registry: &dyn Types) -> Result<Config, ConfigErrors> {
    let documents = Node::parse_documents(&source).map_err(ConfigErrors::one)?;
    let mut config = Config {
        source,
        documents,
        namespaces: Vec::new(),
        base_dir: std::path::PathBuf::from("."),
        expanded: None,
    };
    let mut errors = Vec::new();
    let base = jsonschema::validator_for(&namespace_schema()).map_err(|error| {
        ConfigErrors::one(ConfigError::new(
            &config.source.file,
            Default::default(),
            "",
            format!("internal schema error: {error}"),
        ))
    })?;
    let mut values = Vec::new();
    for (index, document) in config.documents.iter().enumerate() {
        let value = document.to_json();
        let origin = Origin {
            document: index,
            path: Vec::new(),
        };
        errors.extend(schema_errors(
            &config,
            &base,
            &namespace_schema(),
            &value,
            &origin,
        ));
        errors.extend(refusals(&config, &namespace_schema(), &value, &origin));
        values.push(value);
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    for (index, value) in values.iter().enumerate() {
        let origin = Origin {
            document: index,
            path: Vec::new(),
        };
        errors.extend(check_types(&config, registry, value, &origin));
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    config.namespaces = values
        .iter()
        .enumerate()
        .map(|(index, value)| namespace(index, value))
        .collect();
    errors.extend(check_names(&config));
    errors.extend(check_references(&config));
    errors.extend(check_pipeline(&config, registry));
    errors.extend(registry.check_telemetry(&config));
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(errors.into())
    }
}

/// Validates each type-specific part against its component's schema.
fn check_types(
    config: &Config,
    registry: &dyn Types,
    document: &Value,
    origin: &Origin,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    if let Some(bindings) = document.get("bindings").and_then(Value::as_object) {
        for (name, binding) in bindings {
            let origin = origin.child("bindings").child(name);
            let type_name = binding.get("type").and_then(Value::as_str).unwrap_or("");
            let Some(factory) = registry.binding(type_name) else {
                errors.push(config.error(
                    &origin.child("type"),
                    registry.unknown_type(Category::Binding, type_name),
                ));
                continue;
            };
            let kind_name = binding.get("kind").and_then(Value::as_str).unwrap_or("");
            let kind = factory.kinds().iter().find(|k| k.as_str() == kind_name);
            let Some(kind) = kind else {
                let kinds: Vec<&str> = factory.kinds().iter().map(|k| k.as_str()).collect();
                errors.push(config.error(
                    &origin.child("kind"),
                    format!(
                        "{type_name} binding has no kind `{kind_name}`; expected one of: {}",
                        kinds.join(", ")
                    ),
                ));
                continue;
            };
            let schema = factory.schema(*kind);
            let what = format!("{type_name} {kind}");
            errors.extend(check_part(
                config,
                binding.get("options"),
                schema.options.as_ref(),
                schema.options_required,
                &origin.child("options"),
                &format!("{what} binding takes no `options`"),
            ));
            if let Some(catalog) = binding.get("catalog") {
                let origin = origin.child("catalog");
                match factory.catalog_schema(*kind) {
                    Some(schema) => errors.extend(check_part(
                        config,
                        Some(catalog),
                        Some(&schema),
                        false,
                        &origin,
                        "",
                    )),
                    None => {
                        let reason = format!(
                            "a binding-level `catalog` is not supported yet by {what} bindings; \
                             name catalogs in the options' models"
                        );
                        let mut refusal = serde_json::Map::new();
                        refusal.insert(
                            super::refused::UNSUPPORTED.to_owned(),
                            Value::String(reason),
                        );
                        errors.extend(refusals(config, &Value::Object(refusal), catalog, &origin));
                    }
                }
            }
            if binding.get("vault").is_some() && !factory.uses_vault(*kind) {
                errors.push(config.error(
                    &origin.child("vault"),
                    format!(
                        "`vault` is not supported by {what} bindings: only tls bindings read keys and certificates from a vault"
                    ),
                ));
            }
            if binding.get("entry").is_some()
                && !matches!(kind, BindingKind::RemoteServer | BindingKind::RemoteClient)
            {
                errors.push(config.error(
                    &origin.child("entry"),
                    "only remote_server and remote_client bindings have an `entry`",
                ));
            }
            let routes = binding.get("routes").and_then(Value::as_array);
            for (index, route) in routes.into_iter().flatten().enumerate() {
                let route_origin = origin.child("routes").child(index.to_string());
                let when = route.get("when").and_then(Value::as_array);
                for (entry, condition) in when.into_iter().flatten().enumerate() {
                    errors.extend(check_part(
                        config,
                        Some(condition),
                        schema.when.as_ref(),
                        false,
                        &route_origin.child("when").child(entry.to_string()),
                        &format!("{what} routes take no `when` conditions"),
                    ));
                }
                errors.extend(check_part(
                    config,
                    route.get("with"),
                    schema.with.as_ref(),
                    false,
                    &route_origin.child("with"),
                    &format!("{what} routes take no `with`"),
                ));
            }
        }
    }
    let sections = [
        (Category::Vault, vec!["vaults"]),
        (Category::Guard, vec!["guards"]),
        (Category::Catalog, vec!["catalogs"]),
        (Category::Store, vec!["stores"]),
        (Category::Exporter, vec!["telemetry", "exporters"]),
    ];
    for (category, path) in sections {
        let mut value = Some(document);
        let mut section_origin = origin.clone();
        for key in &path {
            value = value.and_then(|v| v.get(*key));
            section_origin = section_origin.child(*key);
        }
        let Some(components) = value.and_then(Value::as_object) else {
            continue;
        };
        for (name, component) in components {
            let origin = section_origin.child(name);
            let type_name = component.get("type").and_then(Value::as_str).unwrap_or("");
            let Some((schema, required)) = registry.component_schema(category, type_name) else {
                errors.push(config.error(
                    &origin.child("type"),
                    registry.unknown_type(category, type_name),
                ));
                continue;
            };
            errors.extend(check_part(
                config,
                component.get("options"),
                schema.as_ref(),
                required,
                &origin.child("options"),
                &format!("{} type `{type_name}` takes no `options`", category.noun()),
            ));
            // No vault, guard, catalog, store or exporter type reads a component-level
            // `store`; bindings name their store in their own options.
            if component.get("store").is_some() {
                errors.push(config.error(
                    &origin.child("store"),
                    format!(
                        "`store` is not supported yet by {} type `{type_name}`",
                        category.noun()
                    ),
                ));
            }
            if component.get("vault").is_some()
                && !registry.component_uses_vault(category, type_name)
            {
                errors.push(config.error(
                    &origin.child("vault"),
                    format!(
                        "`vault` is not supported yet by {} type `{type_name}`",
                        category.noun()
                    ),
                ));
            }
        }
    }
    errors
}

/// Validates one type-specific part against its schema.
fn check_part(
    config: &Config,
    value: Option<&Value>,
    schema: Option<&Value>,
    required: bool,
    origin: &Origin,
    not_allowed: &str,
) -> Vec<ConfigError> {
    match (value, schema) {
        (None, _) if required => {
            let parent = Origin {
                document: origin.document,
                path: origin.path[..origin.path.len().saturating_sub(1)].to_vec(),
            };
            vec![config.error(
                &parent,
                format!(
                    "missing `{}`",
                    origin.path.last().map(String::as_str).unwrap_or("")
                ),
            )]
        }
        (None, _) => Vec::new(),
        (Some(_), None) => vec![config.error(origin, not_allowed)],
        (Some(value), Some(schema)) => match jsonschema::validator_for(schema) {
            Ok(validator) => {
                let mut errors = schema_errors(config, &validator, schema, value, origin);
                errors.extend(refusals(config, schema, value, origin));
                errors
            }
            Err(error) => vec![config.error(origin, format!("internal schema error: {error}"))],
        },
    }
}

/// Turns schema validation errors into config errors that point at the offending text.
fn schema_errors(
    config: &Config,
    validator: &jsonschema::Validator,
    schema: &Value,
    instance: &Value,
    origin: &Origin,
) -> Vec<ConfigError> {
    use jsonschema::error::ValidationErrorKind as Kind;
    let mut errors = Vec::new();
    for error in validator.iter_errors(instance) {
        let mut at = origin.clone();
        at.path
            .extend(pointer_segments(error.instance_path().as_str()));
        let schema_at = resolve_schema_path(schema, error.schema_path().as_str());
        let message = match error.kind() {
            Kind::AdditionalProperties { unexpected } => {
                let expected: Vec<String> = schema_at
                    .and_then(|s| s.get("properties"))
                    .and_then(Value::as_object)
                    .map(|p| p.keys().map(|k| format!("`{k}`")).collect())
                    .unwrap_or_default();
                for key in unexpected {
                    let key_at = at.child(key.clone());
                    let mut error = config.error(&key_at, format!("unknown key `{key}`"));
                    // Point at the key rather than its value.
                    if let Some(document) = config.documents.get(at.document)
                        && let Some(key_node) = document.locate(&at.path).key(key)
                    {
                        error.position = config
                            .source
                            .position_of_line_column(key_node.at.line, key_node.at.column);
                    }
                    if !expected.is_empty() {
                        error
                            .message
                            .push_str(&format!("; expected one of: {}", expected.join(", ")));
                    }
                    errors.push(error);
                }
                continue;
            }
            Kind::AnyOf { .. } | Kind::OneOfNotValid { .. } => {
                let expected = expected_of(schema, schema_at).or_else(|| {
                    schema_at
                        .and_then(|s| s.get("description"))
                        .and_then(Value::as_str)
                        .and_then(|d| d.lines().next())
                        .map(str::to_owned)
                });
                match expected {
                    Some(expected) => {
                        format!("{} is not valid; expected {expected}", error.instance())
                    }
                    None => error.to_string(),
                }
            }
            Kind::Type { .. } => {
                let message = type_message(&error.to_string(), error.instance());
                match expected_of(schema, schema_at) {
                    Some(expected) => format!("{message}; expected {expected}"),
                    None => message,
                }
            }
            _ => match expected_of(schema, schema_at) {
                Some(expected) => format!("{error}; expected {expected}"),
                None => error.to_string(),
            },
        };
        errors.push(config.error(&at, message));
    }
    errors
}

/// `"x" is not of types "null", "boolean"` reads better as `"x" is not a boolean`: an optional
/// key may be left out, but `null` is never what a user means to write.
fn type_message(message: &str, instance: &Value) -> String {
    let Some((_, types)) = message.split_once(" is not of type") else {
        return message.to_owned();
    };
    let names: Vec<&str> = types
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|name| *name != "null")
        .collect();
    if names.is_empty() {
        return message.to_owned();
    }
    let described: Vec<String> = names
        .iter()
        .map(|name| match *name {
            "integer" | "object" | "array" => format!("an {name}"),
            other => format!("a {other}"),
        })
        .collect();
    format!("{instance} is not {}", described.join(" or "))
}

/// The closest of `candidates` to `name`, when close enough to be a likely typo.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut previous: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut current = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                let cost = usize::from(ca != *cb);
                current.push(
                    (previous[j] + cost)
                        .min(previous[j + 1] + 1)
                        .min(current[j] + 1),
                );
            }
            previous = current;
        }
        previous[b.len()]
    }
    candidates
        .map(|candidate| (distance(name, candidate), candidate))
        .filter(|(d, candidate)| *d <= 2.max(candidate.len() / 4) && *d < candidate.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// The `x-expected` phrase a schema gives for messages, e.g. "a port number from 0 to 65535".
/// Looks in the node and, for `anyOf`/`oneOf`, in its branches (an `Option<T>` field is an
/// `anyOf` of `T` and null).
fn expected_of(root: &Value, schema: Option<&Value>) -> Option<String> {
    let schema = schema?;
    if let Some(expected) = schema.get("x-expected").and_then(Value::as_str) {
        return Some(expected.to_owned());
    }
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|keyword| schema.get(*keyword).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| {
            let branch = match branch.get("$ref").and_then(Value::as_str) {
                Some(reference) => root.pointer(reference.strip_prefix('#')?)?,
                None => branch,
            };
            branch
                .get("x-expected")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
}

/// The schema node an error's schema path ends at (its parent for keyword errors), following
/// `$ref`s.
fn resolve_schema_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let segments = pointer_segments(path);
    let mut node = root;
    let mut parent = root;
    for segment in &segments {
        if segment == "$ref" {
            let target = node.get("$ref")?.as_str()?.strip_prefix('#')?;
            parent = node;
            node = root.pointer(target)?;
            continue;
        }
        parent = node;
        node = match node {
            Value::Object(object) => object.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    // The last segment is the failing keyword: its owner schema is the parent.
    Some(if segments.is_empty() { node } else { parent })
}

fn pointer_segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn string_pairs(value: Option<&Value>) -> Vec<(String, String)> {
    value
        .and_then(Value::as_object)
        .map(|object| {
            object
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn components(value: Option<&Value>, origin: &Origin) -> Vec<(String, ComponentConfig)> {
    value
        .and_then(Value::as_object)
        .map(|object| {
            object
                .iter()
                .map(|(name, component)| {
                    let text = |key: &str| {
                        component
                            .get(key)
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    };
                    (
                        name.clone(),
                        ComponentConfig {
                            type_name: text("type").unwrap_or_default(),
                            options: component.get("options").cloned(),
                            vault: text("vault"),
                            store: text("store"),
                            origin: origin.child(name.clone()),
                        },
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The typed model of a schema-valid document.
fn namespace(index: usize, value: &Value) -> Namespace {
    let root = Origin {
        document: index,
        path: Vec::new(),
    };
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let telemetry = value.get("telemetry");
    let bindings = value
        .get("bindings")
        .and_then(Value::as_object)
        .map(|bindings| {
            bindings
                .iter()
                .map(|(binding_name, binding)| {
                    let origin = root.child("bindings").child(binding_name.clone());
                    (binding_name.clone(), binding_config(&name, binding, origin))
                })
                .collect()
        })
        .unwrap_or_default();
    Namespace {
        bindings,
        vaults: components(value.get("vaults"), &root.child("vaults")),
        guards: components(value.get("guards"), &root.child("guards")),
        catalogs: components(value.get("catalogs"), &root.child("catalogs")),
        stores: components(value.get("stores"), &root.child("stores")),
        telemetry: Telemetry {
            attributes: string_pairs(telemetry.and_then(|t| t.get("attributes"))),
            metrics: strings(telemetry.and_then(|t| t.get("metrics"))),
            exporters: components(
                telemetry.and_then(|t| t.get("exporters")),
                &root.child("telemetry").child("exporters"),
            ),
        },
        name,
    }
}

fn binding_config(namespace: &str, binding: &Value, origin: Origin) -> BindingConfig {
    let text = |key: &str| binding.get(key).and_then(Value::as_str).map(str::to_owned);
    let kind = binding
        .get("kind")
        .cloned()
        .and_then(|kind| serde_json::from_value(kind).ok())
        .unwrap_or(BindingKind::Server);
    let routes = binding
        .get("routes")
        .and_then(Value::as_array)
        .map(|routes| {
            routes
                .iter()
                .enumerate()
                .map(|(index, route)| RouteConfig {
                    when: route
                        .get("when")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                    guarded: route
                        .get("guarded")
                        .and_then(Value::as_object)
                        .map(|guarded| {
                            guarded
                                .iter()
                                .map(|(guard, roles)| (guard.clone(), strings(Some(roles))))
                                .collect()
                        })
                        .unwrap_or_default(),
                    exit: route
                        .get("exit")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    with: route.get("with").cloned(),
                    origin: origin.child("routes").child(index.to_string()),
                })
                .collect()
        })
        .unwrap_or_default();
    let telemetry = binding.get("telemetry");
    BindingConfig {
        type_name: text("type").unwrap_or_default(),
        kind,
        entry: text("entry"),
        vault: text("vault"),
        catalog: binding.get("catalog").cloned(),
        options: binding.get("options").cloned(),
        exit: text("exit"),
        routes,
        telemetry_metrics: strings(telemetry.and_then(|t| t.get("metrics"))),
        telemetry_attributes: string_pairs(telemetry.and_then(|t| t.get("attributes"))),
        json: binding.clone(),
        origin,
        namespace: namespace.to_owned(),
    }
}

/// Namespace names are unique.
fn check_names(config: &Config) -> Vec<ConfigError> {
    let mut seen = HashSet::new();
    let mut errors = Vec::new();
    for (index, namespace) in config.namespaces.iter().enumerate() {
        if !seen.insert(namespace.name.clone()) {
            errors.push(config.error(
                &Origin {
                    document: index,
                    path: vec!["name".into()],
                },
                format!("namespace `{}` is defined twice", namespace.name),
            ));
        }
    }
    errors
}

/// The exits (and entry) a binding references, with the config path of each.
pub fn exits_of(binding: &BindingConfig) -> Vec<(String, Origin)> {
    let mut exits = Vec::new();
    if let Some(exit) = &binding.exit {
        exits.push((exit.clone(), binding.origin.child("exit")));
    }
    for route in binding.routes.iter().filter(|route| !route.exit.is_empty()) {
        exits.push((route.exit.clone(), route.origin.child("exit")));
    }
    if let Some(entry) = &binding.entry {
        exits.push((entry.clone(), binding.origin.child("entry")));
    }
    exits
}

/// Every `exit`, `entry`, `vault` and `guarded` guard names something that exists.
fn check_references(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let bindings: HashSet<QualifiedName> = config.bindings().map(|(name, _)| name).collect();
    let named =
        |select: fn(&Namespace) -> &Vec<(String, ComponentConfig)>| -> HashSet<QualifiedName> {
            config
                .namespaces
                .iter()
                .flat_map(|ns| {
                    select(ns)
                        .iter()
                        .map(|(name, _)| QualifiedName::new(&ns.name, name))
                })
                .collect()
        };
    let vaults = named(|ns| &ns.vaults);
    let guards = named(|ns| &ns.guards);
    let stores = named(|ns| &ns.stores);
    for (name, binding) in config.bindings() {
        for (exit, origin) in exits_of(binding) {
            let target = name.resolve(&exit);
            if !bindings.contains(&target) {
                let suggestion = closest(
                    &target.name,
                    bindings
                        .iter()
                        .filter(|b| b.namespace == target.namespace)
                        .map(|b| b.name.as_str()),
                )
                .map(|name| format!("; did you mean `{name}`?"))
                .unwrap_or_else(|| "; expected the name of a binding".to_owned());
                errors.push(config.error(&origin, format!("unknown binding `{exit}`{suggestion}")));
            }
        }
        if let Some(vault) = &binding.vault
            && !vaults.contains(&name.resolve(vault))
        {
            errors.push(config.error(
                &binding.origin.child("vault"),
                format!("unknown vault `{vault}`; expected the name of a vault"),
            ));
        }
        for route in &binding.routes {
            for (guard, _) in &route.guarded {
                if !guards.contains(&name.resolve(guard)) {
                    let mut origin = route.origin.child("guarded");
                    origin.path.push(guard.clone());
                    errors.push(config.error(
                        &origin,
                        format!("unknown guard `{guard}`; expected the name of a guard"),
                    ));
                }
            }
        }
    }
    for namespace in &config.namespaces {
        let here = QualifiedName::new(&namespace.name, "");
        let components = namespace
            .guards
            .iter()
            .chain(&namespace.catalogs)
            .chain(&namespace.telemetry.exporters);
        for (_, component) in components {
            if let Some(vault) = &component.vault
                && !vaults.contains(&here.resolve(vault))
            {
                errors.push(config.error(
                    &component.origin.child("vault"),
                    format!("unknown vault `{vault}`; expected the name of a vault"),
                ));
            }
            if let Some(store) = &component.store
                && !stores.contains(&here.resolve(store))
            {
                errors.push(config.error(
                    &component.origin.child("store"),
                    format!("unknown store `{store}`; expected the name of a store"),
                ));
            }
        }
    }
    errors
}

/// Every exit accepts the stream kind its caller emits, and exits form no cycle.
fn check_pipeline(config: &Config, registry: &dyn Types) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let by_name: HashMap<QualifiedName, &BindingConfig> = config.bindings().collect();
    let describe = |binding: &BindingConfig| format!("{} {}", binding.type_name, binding.kind);
    for (name, binding) in config.bindings() {
        let Some(factory) = registry.binding(&binding.type_name) else {
            continue;
        };
        let emits = factory.emits(binding.kind);
        if emits.is_some() {
            for route in binding.routes.iter().filter(|route| route.exit.is_empty()) {
                errors.push(config.error(
                    &route.origin,
                    format!(
                        "missing `exit`: routes of a {} binding need one",
                        describe(binding)
                    ),
                ));
            }
        }
        let exits = exits_of(binding);
        // `exits_of` lists the entry last.
        let entry_index = binding.entry.as_ref().map(|_| exits.len() - 1);
        for (index, (exit, origin)) in exits.into_iter().enumerate() {
            let target_name = name.resolve(&exit);
            let Some(target) = by_name.get(&target_name) else {
                continue;
            };
            let emitted = if Some(index) == entry_index {
                factory.entry_emits(binding.kind)
            } else {
                emits
            };
            let Some(kind) = emitted else {
                errors.push(config.error(
                    &origin,
                    format!("a {} binding has no exit", describe(binding)),
                ));
                continue;
            };
            let accepts = registry
                .binding(&target.type_name)
                .map(|f| f.accepts(target.kind))
                .unwrap_or_default();
            if !accepts
                .iter()
                .any(|accepted| registry.carries(kind, accepted))
            {
                let accepted = if accepts.is_empty() {
                    "no streams".to_owned()
                } else {
                    format!("only {} streams", accepts.join(", "))
                };
                errors.push(config.error(
                    &origin,
                    format!(
                        "`{}` ({}) does not accept {kind} streams, which `{}` ({}) opens; it accepts {accepted}",
                        target_name.name,
                        describe(target),
                        name.name,
                        describe(binding),
                    ),
                ));
            }
        }
    }
    if errors.is_empty()
        && let Err(cycle) = build_order(config)
    {
        let origin = by_name
            .get(&cycle[0])
            .map(|b| b.origin.clone())
            .unwrap_or_default();
        let names: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        errors.push(config.error(
            &origin,
            format!("exits form a cycle: {}", names.join(" -> ")),
        ));
    }
    errors
}

/// Bindings ordered so that every exit comes before the bindings that use it. `Err` holds a
/// cycle.
pub fn build_order(config: &Config) -> Result<Vec<QualifiedName>, Vec<QualifiedName>> {
    let by_name: HashMap<QualifiedName, &BindingConfig> = config.bindings().collect();
    let mut order = Vec::new();
    let mut done = HashSet::new();
    let mut visiting = Vec::new();
    fn visit(
        name: &QualifiedName,
        by_name: &HashMap<QualifiedName, &BindingConfig>,
        order: &mut Vec<QualifiedName>,
        done: &mut HashSet<QualifiedName>,
        visiting: &mut Vec<QualifiedName>,
    ) -> Result<(), Vec<QualifiedName>> {
        if done.contains(name) {
            return Ok(());
        }
        if let Some(start) = visiting.iter().position(|n| n == name) {
            let mut cycle = visiting[start..].to_vec();
            cycle.push(name.clone());
            return Err(cycle);
        }
        let Some(binding) = by_name.get(name) else {
            return Ok(());
        };
        visiting.push(name.clone());
        for (exit, _) in exits_of(binding) {
            visit(&name.resolve(&exit), by_name, order, done, visiting)?;
        }
        visiting.pop();
        done.insert(name.clone());
        order.push(name.clone());
        Ok(())
    }
    for (name, _) in config.bindings() {
        visit(&name, &by_name, &mut order, &mut done, &mut visiting)?;
    }
    Ok(order)
}

/// The message for a config path, for callers that build errors themselves.
pub fn path_of(origin: &Origin) -> String {
    display_path(&origin.path)
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;

    use super::super::types::{BindingSchema, BindingType};
    use super::*;

    /// A binding type that opens `bytes` streams on its exit when `server`, and accepts them
    /// when `client`.
    struct Pipe;

    impl BindingType for Pipe {
        fn kinds(&self) -> &'static [BindingKind] {
            &[BindingKind::Server, BindingKind::Client]
        }
        fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
            match kind {
                BindingKind::Client => &["bytes"],
                _ => &[],
            }
        }
        fn emits(&self, kind: BindingKind) -> Option<&'static str> {
            (kind == BindingKind::Server).then_some("bytes")
        }
        fn schema(&self, _kind: BindingKind) -> BindingSchema {
            BindingSchema {
                options: Some(serde_json::json!({
                    "type": "object",
                    "properties": {
                        "size": {"type": "integer", "maximum": 10},
                        "items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                    },
                    "additionalProperties": false,
                    "$defs": {"item": {"type": "object", "properties": {
                        "name": {"type": "string"},
                        "shape": {"type": "string", "x-unsupported": "item `shape` is not supported yet"},
                    }}},
                })),
                options_required: false,
                when: Some(serde_json::json!({"type": "object"})),
                with: None,
            }
        }
    }

    /// The types of these tests: `pipe` is built in; `kafka`, `jwt` and `memory` are known but
    /// not built in.
    struct PipeOnly;

    impl Types for PipeOnly {
        fn binding(&self, type_name: &str) -> Option<Box<dyn BindingType + '_>> {
            (type_name == "pipe").then(|| Box::new(Pipe) as Box<dyn BindingType>)
        }
        fn component_schema(&self, _: Category, _: &str) -> Option<(Option<Value>, bool)> {
            None
        }
        fn unknown_type(&self, category: Category, type_name: &str) -> String {
            if ["kafka", "jwt", "memory"].contains(&type_name) {
                format!(
                    "{} type `{type_name}` is not built into this distribution",
                    category.noun()
                )
            } else {
                format!("unknown {} type `{type_name}`", category.noun())
            }
        }
        fn carries(&self, emitted: &str, accepted: &str) -> bool {
            emitted == accepted
        }
    }

    /// Component types `plain` (no vault of its own) and `keyed` (uses one), in every category.
    struct PlainAndKeyed;

    impl Types for PlainAndKeyed {
        fn binding(&self, type_name: &str) -> Option<Box<dyn BindingType + '_>> {
            PipeOnly.binding(type_name)
        }
        fn component_schema(&self, _: Category, type_name: &str) -> Option<(Option<Value>, bool)> {
            ["plain", "keyed"]
                .contains(&type_name)
                .then_some((None, false))
        }
        fn unknown_type(&self, category: Category, type_name: &str) -> String {
            PipeOnly.unknown_type(category, type_name)
        }
        fn carries(&self, emitted: &str, accepted: &str) -> bool {
            emitted == accepted
        }
        fn component_uses_vault(&self, _: Category, type_name: &str) -> bool {
            type_name == "keyed"
        }
    }

    fn registry() -> PipeOnly {
        PipeOnly
    }

    fn errors(text: &str) -> Vec<String> {
        match load(Source::plain("z.yaml", text), &registry()) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_valid_pipeline_loads_in_build_order() {
        let text = "name: a\nbindings:\n  in:\n    type: pipe\n    kind: server\n    exit: b:out\n---\nname: b\nbindings:\n  out:\n    type: pipe\n    kind: client\n";
        let config = load(Source::plain("z.yaml", text), &registry()).unwrap();
        let order: Vec<String> = build_order(&config)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(order, vec!["b:out", "a:in"]);
    }

    #[test]
    fn several_errors_are_reported_at_once_with_positions() {
        let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: server\n    options:\n      size: 11\n      extra: true\n";
        let errors = errors(text);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "z.yaml:7:13: bindings.one.options.size: 11 is greater than the maximum of 10"
            ),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("z.yaml:8:7: bindings.one.options.extra: unknown key `extra`"),
            "{errors:?}"
        );
    }

    #[test]
    fn references_and_kinds_are_checked() {
        let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: server\n    exit: two\n  two:\n    type: pipe\n    kind: server\n    routes:\n      - exit: nowhere\n        guarded:\n          jwt0: [read]\n";
        let errors = errors(text);
        assert!(
            errors.iter().any(|e| e.starts_with(
                "z.yaml:6:11: bindings.one.exit: `two` (pipe server) does not accept bytes streams"
            )),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.contains("bindings.two.routes[0].exit: unknown binding `nowhere`")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("unknown guard `jwt0`")),
            "{errors:?}"
        );
    }

    #[test]
    fn cycles_are_rejected() {
        let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: server\n    exit: one\n";
        let errors = errors(text);
        assert!(
            errors.iter().any(|e| e.contains("does not accept")),
            "{errors:?}"
        );
    }

    #[test]
    fn names_and_types_are_checked() {
        let errors = errors("name: 1abc\nbindings:\n  x:\n    type: kafka\n    kind: client\n");
        assert!(errors[0].starts_with("z.yaml:1:7: name:"), "{errors:?}");
        let errors = errors_of("name: a\nbindings:\n  x:\n    type: kafka\n    kind: client\n");
        assert_eq!(
            errors,
            vec![
                "z.yaml:4:11: bindings.x.type: binding type `kafka` is not built into this distribution"
            ]
        );
        let errors = errors_of("name: a\nbindings:\n  x:\n    type: pipe\n    kind: proxy\n");
        assert_eq!(
            errors,
            vec![
                "z.yaml:5:11: bindings.x.kind: pipe binding has no kind `proxy`; expected one of: server, client"
            ]
        );
    }

    fn errors_of(text: &str) -> Vec<String> {
        errors(text)
    }

    #[test]
    fn keys_marked_unsupported_are_refused_at_their_position() {
        let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: client\n    options:\n      items:\n        - name: x\n        - name: z\n          shape: round\n";
        assert_eq!(
            errors_of(text),
            vec![
                "z.yaml:10:11: bindings.one.options.items[1].shape: item `shape` is not supported yet"
            ]
        );
        let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: client\n    options:\n      items:\n        - name: x\n";
        assert_eq!(errors_of(text), Vec::<String>::new());
    }

    #[test]
    fn entry_is_refused_outside_remote_kinds() {
        let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: server\n    entry: two\n    exit: two\n  two:\n    type: pipe\n    kind: client\n";
        assert_eq!(
            errors_of(text),
            vec![
                "z.yaml:6:12: bindings.one.entry: only remote_server and remote_client bindings have an `entry`"
            ]
        );
    }

    #[test]
    fn types_not_built_are_refused() {
        let text = "name: a\nguards:\n  g0:\n    type: jwt\n    options: {}\n    store: s0\nstores:\n  s0:\n    type: memory\n    vault: v0\n";
        let errors = errors_of(text);
        for expected in [
            "guards.g0.type: guard type `jwt` is not built into this distribution",
            "stores.s0.type: store type `memory` is not built into this distribution",
        ] {
            assert!(errors.iter().any(|e| e.contains(expected)), "{errors:?}");
        }
    }

    #[test]
    fn a_binding_level_catalog_is_refused() {
        let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: client\n    catalog:\n      c0: []\n";
        let errors = errors_of(text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "z.yaml:6:5: bindings.one.catalog: a binding-level `catalog` is not supported yet"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn a_binding_vault_is_refused_unless_the_type_reads_it() {
        // `pipe` reads no vault (the trait's default).
        let text = "name: a\nvaults:\n  v0:\n    type: plain\nbindings:\n  one:\n    type: pipe\n    kind: client\n    vault: v0\n";
        let errors = errors_of(text);
        assert!(
            errors.iter().any(|e| e.starts_with(
                "z.yaml:9:12: bindings.one.vault: `vault` is not supported by pipe client bindings"
            )),
            "{errors:?}"
        );
    }

    #[test]
    fn a_component_store_is_refused() {
        let text = "name: a\ncatalogs:\n  c0:\n    type: plain\n    store: s0\n";
        let errors = match load(Source::plain("z.yaml", text), &PlainAndKeyed) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        };
        assert!(
            errors.iter().any(|e| e
                == "z.yaml:5:12: catalogs.c0.store: `store` is not supported yet by catalog type `plain`"),
            "{errors:?}"
        );
    }

    #[test]
    fn component_vault_is_refused_unless_the_type_uses_it() {
        let registry = PlainAndKeyed;
        let load = |text: &str| match load(Source::plain("z.yaml", text), &registry) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            load(
                "name: a\nvaults:\n  v0:\n    type: plain\n  v1:\n    type: plain\n    vault: v0\n"
            ),
            vec![
                "z.yaml:7:12: vaults.v1.vault: `vault` is not supported yet by vault type `plain`"
            ]
        );
        assert_eq!(
            load(
                "name: a\nvaults:\n  v0:\n    type: plain\n  v1:\n    type: keyed\n    vault: v0\n"
            ),
            Vec::<String>::new()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn arbitrary_text_never_panics(text in "(name|bindings|type|kind|pipe|server|exit|:| |\n|-|\\[|\\]|\\{|\\}|'|\"|[a-z0-9]){0,120}") {
            let _ = load(Source::plain("z.yaml", text), &registry());
        }
    }
}
