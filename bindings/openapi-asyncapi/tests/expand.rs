//! `openapi-asyncapi` proxies expanded by the gateway's own config load: the http-kafka
//! routes each OpenAPI operation becomes, how the openapi server, the proxy and the asyncapi
//! client reach each other, and what is refused with its place.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::{Value, json};
use zilla::engine::Engine;
use zilla::engine::config::{BindingConfig, Config};
use zilla::engine::properties::Properties;

const OPENAPI: &str =
    include_str!("../../../examples/openapi.asyncapi.kafka.proxy/pets-openapi.yaml");
const ASYNCAPI: &str =
    include_str!("../../../examples/openapi.asyncapi.kafka.proxy/pets-asyncapi.yaml");

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("            {line}\n"))
        .collect()
}

/// An openapi server → openapi-asyncapi proxy → asyncapi client config over the two
/// documents (`openapi` and `asyncapi` substituted for the document texts), with `proxy`
/// as the proxy's options and routes.
fn config_with(openapi: &str, asyncapi: &str, proxy: &str) -> String {
    format!(
        "name: t
catalogs:
  specs:
    type: inline
    options:
      subjects:
        http:
          schema: |
{openapi}        kafka:
          schema: |
{asyncapi}bindings:
  north_openapi_server:
    type: openapi
    kind: server
    options:
      specs:
        pets:
          catalog: {{specs: {{subject: http}}}}
    exit: north_openapi_asyncapi_proxy
  north_openapi_asyncapi_proxy:
    type: openapi-asyncapi
    kind: proxy
{proxy}  south_asyncapi_client:
    type: asyncapi
    kind: client
    options:
      specs:
        kafka_api:
          catalog: {{specs: {{subject: kafka}}}}
",
        openapi = indent(openapi),
        asyncapi = indent(asyncapi),
    )
}

/// The proxy of Zilla's example shape: every operation onto the one of the same id.
const BULK: &str = "    options:
      specs:
        openapi:
          pets:
            catalog: {specs: {subject: http, version: latest}}
        asyncapi:
          kafka_api:
            catalog: {specs: {subject: kafka, version: latest}}
    routes:
      - when:
          - spec: pets
        exit: south_asyncapi_client
        with:
          spec: kafka_api
";

fn config(proxy: &str) -> String {
    config_with(OPENAPI, ASYNCAPI, proxy)
}

fn load(text: &str) -> Result<Config, String> {
    let loopback = Properties::from_assignments(["zilla.binding.composite.listen.host=127.0.0.1"]);
    Engine::new(zilla::registry(), loopback)
        .load(Path::new("zilla.yaml"), text)
        .map_err(|errors| {
            errors
                .0
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })
}

fn binding<'a>(config: &'a Config, name: &str) -> &'a BindingConfig {
    config
        .bindings()
        .find(|(qualified, _)| qualified.to_string() == name)
        .map(|(_, binding)| binding)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// The generated routes as `(when, with)` pairs, all exiting to the asyncapi client.
fn routes(config: &Config) -> Vec<(Value, Value)> {
    let proxy = binding(config, "t:north_openapi_asyncapi_proxy");
    assert_eq!(
        (proxy.type_name.as_str(), proxy.kind.to_string()),
        ("http-kafka", "proxy".into())
    );
    proxy
        .routes
        .iter()
        .map(|route| {
            assert_eq!(route.exit, "t:south_asyncapi_client");
            (json!(route.when), route.with.clone().unwrap())
        })
        .collect()
}

#[test]
fn each_operation_maps_onto_the_kafka_operation_of_its_id() {
    let config = load(&config(BULK)).unwrap();
    let http = binding(&config, "t.north_openapi_server:http_server");
    assert!(
        http.routes
            .iter()
            .all(|route| route.exit == "t:north_openapi_asyncapi_proxy")
    );
    let client = binding(&config, "t:south_asyncapi_client");
    assert_eq!(client.type_name, "kafka");
    let routes = routes(&config);
    assert_eq!(
        routes,
        vec![
            (
                json!([{"method": "GET", "path": "/pets"}]),
                json!({"capability": "fetch", "topic": "shelter-pets",
                       "merge": {"content-type": "application/json",
                                 "patch": {"initial": "[]", "path": "/-"}}}),
            ),
            (
                json!([{"method": "POST", "path": "/pets"}]),
                json!({"capability": "produce", "topic": "shelter-pets",
                       "acks": "in_sync_replicas", "key": "${idempotencyKey}"}),
            ),
            (
                json!([{"method": "PUT", "path": "/pets/{id}"},
                       {"method": "GET", "path": "/pets/{id};cid={correlationId}"}]),
                json!({"capability": "produce", "topic": "shelter-pet-updates",
                       "acks": "in_sync_replicas", "key": "${params.id}",
                       "reply-to": "shelter-pet-answers",
                       "correlation-id": "zilla:correlation-id",
                       "async": {"Location": "/pets/${params.id};cid=${correlationId}"}}),
            ),
            (
                json!([{"method": "GET", "path": "/pets/{id}"}]),
                json!({"capability": "fetch", "topic": "shelter-pets",
                       "filters": [{"key": "${params.id}"}]}),
            ),
            (
                json!([{"method": "DELETE", "path": "/pets/{id}"}]),
                json!({"capability": "produce", "topic": "shelter-pets",
                       "acks": "in_sync_replicas", "key": "${params.id}"}),
            ),
        ]
    );
    assert!(
        config
            .expanded
            .as_deref()
            .unwrap_or("")
            .contains("name: t.north_openapi_asyncapi_proxy")
    );
}

#[test]
fn one_named_operation_tags_and_base_paths() {
    // Every GET tagged `pets` onto `listPets`; the document served under `/v1` too.
    let openapi = OPENAPI.replace(
        "  - url: http://localhost:7114",
        "  - url: http://localhost:7114/v1",
    );
    let proxy = "    options:
      specs:
        openapi:
          pets: {catalog: {specs: {subject: http}}}
        asyncapi:
          kafka_api: {catalog: {specs: {subject: kafka}}}
    routes:
      - when:
          - {spec: pets, operation: 'list*'}
          - {spec: pets, operation: getPet}
        exit: south_asyncapi_client
        with: {operation: listPets}
      - when:
          - {tag: pets}
        exit: south_asyncapi_client
        with: {spec: kafka_api, tag: never}
";
    let config = load(&config_with(&openapi, ASYNCAPI, proxy)).unwrap();
    let routes = routes(&config);
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(
        routes[0].0,
        json!([{"method": "GET", "path": "/pets"}, {"method": "GET", "path": "/v1/pets"}])
    );
    assert_eq!(
        routes[1].0,
        json!([{"method": "GET", "path": "/pets/{id}"}, {"method": "GET", "path": "/v1/pets/{id}"}])
    );
    assert_eq!(routes[1].1["topic"], "shelter-pets");
}

#[test]
fn what_is_not_built_is_refused_with_its_place() {
    let openapi = OPENAPI.replace(
        "      operationId: deletePet",
        "      operationId: deletePet\n      x-zilla-sse: {}",
    );
    let identity = OPENAPI.replace(
        "      operationId: deletePet",
        "      operationId: deletePet\n      x-zilla-http-kafka: {key: '{identity}'}",
    );
    let key_on_fetch = OPENAPI.replace(
        "      operationId: getPet\n",
        "      operationId: getPet\n      x-zilla-http-kafka: {key: '${params.id}'}\n",
    );
    let filters_on_produce = OPENAPI.replace(
        "      operationId: deletePet",
        "      operationId: deletePet\n      x-zilla-http-kafka: {filters: [{key: a}]}",
    );
    let no_reply = ASYNCAPI.replace("    reply:\n", "    x-reply:\n");
    let cases = [
        (
            config(&BULK.replace(
                "            catalog: {specs: {subject: http, version: latest}}",
                "            catalog: {specs: {subject: http}}\n            security: {petstore_auth: jwt}",
            )),
            "zilla.yaml:",
            "`security` (guarded Kafka mappings) is not supported yet",
        ),
        (
            config(&BULK.replace("          - spec: pets\n", "          - spec: pets\n            servers: [{url: 'http://localhost:7114'}]\n")),
            "bindings.north_openapi_asyncapi_proxy.routes[0].when[0].servers",
            "not supported",
        ),
        (
            config(&BULK.replace("          spec: kafka_api\n", "          spec: kafka_api\n          operation: nothing\n")),
            "bindings.north_openapi_asyncapi_proxy.routes[0].with.operation",
            "has no operation `nothing`",
        ),
        (
            config(&BULK.replace("          - spec: pets\n", "          - spec: other\n")),
            "bindings.north_openapi_asyncapi_proxy.routes[0].when[0].spec",
            "unknown spec `other`",
        ),
        (
            format!(
                "{}guards:\n  secrets:\n    type: inline\n    options: {{identity: zilla}}\n",
                config(&BULK.replace(
                    "        exit: south_asyncapi_client\n",
                    "        exit: south_asyncapi_client\n        guarded: {secrets: []}\n",
                ))
            ),
            "bindings.north_openapi_asyncapi_proxy.routes[0].guarded",
            "not supported",
        ),
        (
            config(&format!("{BULK}    exit: south_asyncapi_client\n")),
            "bindings.north_openapi_asyncapi_proxy.exit",
            "not supported",
        ),
        (
            config_with(&openapi, ASYNCAPI, BULK),
            "http:",
            "x-zilla-sse: not supported by openapi-asyncapi bindings",
        ),
        (
            config_with(&identity, ASYNCAPI, BULK),
            "x-zilla-http-kafka",
            "`{identity}` needs a guard",
        ),
        (
            config_with(&key_on_fetch, ASYNCAPI, BULK),
            "x-zilla-http-kafka",
            "`key` and `overrides` are for producing",
        ),
        (
            config_with(&filters_on_produce, ASYNCAPI, BULK),
            "x-zilla-http-kafka",
            "`filters` are for fetching",
        ),
        (
            config_with(OPENAPI, &no_reply, BULK),
            "put.responses[202]",
            "has no `reply`",
        ),
    ];
    for (text, place, message) in cases {
        let error = load(&text).expect_err(message);
        assert!(
            error.contains(place) && error.contains(message),
            "expected `{place}` and `{message}` in: {error}"
        );
    }
}
