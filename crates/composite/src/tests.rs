use super::*;

/// `pipe` server (opens bytes on its exit), proxy (both) and client (accepts bytes), built
/// as nothing.
struct Pipe;

struct Nothing;
impl Binding for Nothing {}

impl BindingFactory for Pipe {
    fn type_name(&self) -> &'static str {
        "pipe"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client, BindingKind::Proxy]
    }
    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Server => &[],
            _ => &["bytes"],
        }
    }
    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        (kind != BindingKind::Client).then_some("bytes")
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        BindingSchema {
            options: Some(serde_json::json!({"type": "object"})),
            ..Default::default()
        }
    }
    fn build(&self, _context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        Ok(Arc::new(Nothing))
    }
}

/// `relay` server: a pipe server in front of a pipe client that exits to the composite's
/// `exit`, all from the document `options.subject` names in catalog `catalog0`, whose text
/// is the port. `relay` client: a pipe client alone.
struct Relay;

impl Composite for Relay {
    fn type_name(&self) -> &'static str {
        "relay"
    }
    fn kinds(&self) -> &'static [BindingKind] {
        &[BindingKind::Server, BindingKind::Client]
    }
    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        Pipe.accepts(kind)
    }
    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        Pipe.emits(kind)
    }
    fn schema(&self, _kind: BindingKind) -> BindingSchema {
        Pipe.schema(BindingKind::Server)
    }
    fn generate(&self, context: &CompositeContext<'_>) -> Result<Generated, BuildError> {
        let options: Value = context.options()?;
        if context.config().kind == BindingKind::Client {
            return Ok(Generated {
                namespace: format!(
                    "name: {}\nbindings:\n  client:\n    type: pipe\n    kind: client\n",
                    context.namespace()
                ),
                entry: "client".into(),
            });
        }
        let subject = options["subject"].as_str().unwrap_or_default();
        let port = context
            .document("catalog0", subject, "latest")
            .map_err(|message| BuildError::at("options.subject", message))?;
        let exit = context.qualify(context.config().exit.as_deref().unwrap_or_default());
        Ok(Generated {
            namespace: format!(
                "name: {}\nbindings:\n  server:\n    type: pipe\n    kind: server\n    \
                 options: {{host: {}, port: {}}}\n    exit: inner\n  inner:\n    type: pipe\n    \
                 kind: proxy\n    exit: {exit}\n",
                context.namespace(),
                context.listen_host(Some("localhost")),
                port.trim()
            ),
            entry: "server".into(),
        })
    }
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.binding(Pipe);
    zilla_catalog_inline::register(&mut registry);
    register(&mut registry, Relay);
    registry
}

const CONFIG: &str = "name: example
catalogs:
  catalog0:
    type: inline
    options:
      subjects:
        ports:
          schema: '8080'
bindings:
  north:
    type: relay
    kind: server
    options:
      subject: ports
    exit: south
  south:
    type: relay
    kind: client
";

fn expanded(text: &str, properties: &Properties) -> Result<Config, Vec<String>> {
    let registry = registry();
    let config = zilla_engine::config::load(Source::plain("z.yaml", text), &registry)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    expand(&registry, properties, config)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

fn names(config: &Config) -> Vec<String> {
    config
        .bindings()
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn composites_become_their_entries_and_a_generated_namespace() {
    let config = expanded(CONFIG, &Properties::default()).unwrap();
    assert_eq!(
        names(&config),
        ["example:north", "example:south", "example.north:inner",]
    );
    let (_, north) = config.bindings().next().unwrap();
    assert_eq!(north.type_name, "pipe");
    assert_eq!(north.exit.as_deref(), Some("example.north:inner"));
    assert_eq!(north.options.as_ref().unwrap()["port"], 8080);
    assert_eq!(north.options.as_ref().unwrap()["host"], "localhost");
    let inner = config.bindings().nth(2).unwrap().1;
    assert_eq!(inner.exit.as_deref(), Some("example:south"));
    // The printed text is a config that loads as it is, to the same bindings.
    let text = config.expanded.clone().unwrap();
    let reloaded = zilla_engine::config::load(Source::plain("x.yaml", text), &registry()).unwrap();
    assert_eq!(names(&reloaded), names(&config));
    assert!(reloaded.bindings().all(|(_, b)| b.type_name == "pipe"));
}

#[test]
fn the_listen_host_property_wins_over_the_spec() {
    let properties =
        Properties::from_assignments(["zilla.binding.composite.listen.host=127.0.0.1"]);
    let config = expanded(CONFIG, &properties).unwrap();
    let (_, north) = config.bindings().next().unwrap();
    assert_eq!(north.options.as_ref().unwrap()["host"], "127.0.0.1");
}

#[test]
fn a_generator_error_points_at_the_composite() {
    let text = CONFIG.replace("subject: ports", "subject: nowhere");
    let errors = expanded(&text, &Properties::default()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("z.yaml:14:16: bindings.north.options.subject: catalog `catalog0`"),
        "{errors:?}"
    );
}

#[test]
fn a_config_without_composites_is_unchanged() {
    let text = "name: a\nbindings:\n  one:\n    type: pipe\n    kind: client\n";
    let config = expanded(text, &Properties::default()).unwrap();
    assert!(config.expanded.is_none());
    assert_eq!(names(&config), ["a:one"]);
}

#[test]
fn a_generated_namespace_of_another_name_is_refused() {
    struct Misnamed;
    impl Composite for Misnamed {
        fn type_name(&self) -> &'static str {
            "misnamed"
        }
        fn kinds(&self) -> &'static [BindingKind] {
            &[BindingKind::Client]
        }
        fn accepts(&self, _: BindingKind) -> &'static [&'static str] {
            &["bytes"]
        }
        fn emits(&self, _: BindingKind) -> Option<&'static str> {
            None
        }
        fn schema(&self, _: BindingKind) -> BindingSchema {
            BindingSchema::default()
        }
        fn generate(&self, _: &CompositeContext<'_>) -> Result<Generated, BuildError> {
            Ok(Generated {
                namespace: "name: other\nbindings:\n  c:\n    type: pipe\n    kind: client\n"
                    .into(),
                entry: "c".into(),
            })
        }
    }
    let mut registry = registry();
    register(&mut registry, Misnamed);
    let text = "name: a\nbindings:\n  one:\n    type: misnamed\n    kind: client\n";
    let config = zilla_engine::config::load(Source::plain("z.yaml", text), &registry).unwrap();
    let errors = expand(&registry, &Properties::default(), config).unwrap_err();
    assert!(
        errors.0[0].to_string().contains("it is not named `a.one`"),
        "{errors}"
    );
}

#[test]
fn keys_nothing_generated_would_carry_are_refused() {
    let text = CONFIG
        .replace(
            "    kind: client\n",
            "    kind: client\n    telemetry:\n      metrics: [stream.*]\n",
        )
        .replace(
            "name: example\n",
            "name: example\ntelemetry:\n  metrics: [stream.opens.received]\n",
        );
    let errors = expanded(&text, &Properties::default()).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("bindings.south.telemetry: `telemetry` is not supported yet on composite bindings (relay)"),
        "{errors:?}"
    );
}
