//! Top-level `stores` as the engine builds them and bindings name them: a binding naming a
//! store that does not exist, and keys a `memory` store does not take, fail the load with
//! their place in the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use zilla::engine::Engine;
use zilla::engine::properties::Properties;

fn config(stores: &str, store: &str) -> String {
    format!(
        "name: test
stores:
{stores}
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: mqtt_server
  mqtt_server:
    type: mqtt
    kind: server
    options:
      store: {store}
    exit: mqtt_client
  mqtt_client:
    type: mqtt
    kind: client
    exit: tcp_client
  tcp_client:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: 1
"
    )
}

/// The errors of loading then building `text`, one line each.
fn errors(text: &str) -> Vec<String> {
    let engine = Engine::new(zilla::registry(), Properties::default());
    let result = engine
        .load(Path::new("zilla.yaml"), text)
        .and_then(|config| engine.apply(config));
    match result {
        Ok(_) => Vec::new(),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

#[tokio::test]
async fn a_binding_builds_with_the_store_it_names() {
    let text = config("  memory0:\n    type: memory", "memory0");
    assert_eq!(errors(&text), Vec::<String>::new());
}

#[tokio::test]
async fn a_store_name_no_store_has_fails_the_load_at_its_place() {
    let text = config("  memory0:\n    type: memory", "memory1");
    // Only the binding's own error: its callers are not built, and not reported either.
    let errors = errors(&text);
    let expected =
        "zilla.yaml:17:14: bindings.mqtt_server.options.store: unknown store `test:memory1`";
    assert_eq!(errors, vec![expected.to_owned()]);
}

#[tokio::test]
async fn a_memory_store_takes_no_options_and_no_store() {
    let text = config(
        "  memory0:\n    type: memory\n    options:\n      capacity: 10",
        "memory0",
    );
    let refused = errors(&text);
    assert!(
        refused.iter().any(|error| error.starts_with(
            "zilla.yaml:6:7: stores.memory0.options: store type `memory` takes no `options`"
        )),
        "{refused:?}"
    );
    let text = config(
        "  memory0:\n    type: memory\n    store: memory0",
        "memory0",
    );
    assert_eq!(
        errors(&text),
        vec![
            "zilla.yaml:5:12: stores.memory0.store: `store` is not supported yet by store type `memory`"
        ]
    );
}

#[tokio::test]
async fn a_store_type_not_built_is_refused() {
    let text = config("  redis0:\n    type: redis", "redis0");
    let errors = errors(&text);
    assert!(
        errors
            .iter()
            .any(|error| error.contains("stores.redis0.type: unknown store type `redis`")),
        "{errors:?}"
    );
}
