use std::path::Path;

use zilla_engine::Engine;
use zilla_engine::properties::Properties;

use super::*;

fn registry() -> Registry {
    let mut registry = Registry::new();
    zilla_binding_tcp::register(&mut registry);
    zilla_binding_http::register(&mut registry);
    zilla_catalog_inline::register(&mut registry);
    zilla_validator_json::register(&mut registry);
    zilla_validator_core::register(&mut registry);
    register(&mut registry);
    registry
}

/// A config with an inline spec, server and client, `{spec}` standing for the spec's lines.
fn config(spec: &str) -> String {
    let spec: String = spec
        .lines()
        .map(|line| format!("            {line}\n"))
        .collect();
    format!(
        "name: example
catalogs:
  specs:
    type: inline
    options:
      subjects:
        shelf:
          schema: |
{spec}bindings:
  north:
    type: openapi
    kind: server
    options:
      specs:
        shelf:
          servers: ['http://localhost:0']
          catalog:
            specs:
              subject: shelf
    routes:
      - when:
          - operation: find*
        exit: south
  south:
    type: openapi
    kind: client
    options:
      specs:
        shelf:
          servers: ['http://origin:*']
          catalog:
            specs:
              subject: shelf
"
    )
}

const SPEC: &str = r#"openapi: 3.1.0
info: {title: shelf, version: "1"}
servers:
  - url: http://localhost:0
  - url: http://origin:4010/api
paths:
  /books/{isbn}:
    get:
      operationId: findBook
      parameters:
        - {name: isbn, in: path, schema: {type: string, maxLength: 13}}
  /books:
    post:
      operationId: shelveBook
      requestBody:
        content:
          application/json:
            schema: {$ref: '#/components/schemas/Book'}
components:
  schemas:
    Book: {type: object, required: [title]}
"#;

fn engine() -> Engine {
    let loopback = Properties::from_assignments(["zilla.binding.composite.listen.host=127.0.0.1"]);
    Engine::new(registry(), loopback)
}

fn load(engine: &Engine, text: &str) -> Result<zilla_engine::config::Config, Vec<String>> {
    engine
        .load(Path::new("zilla.yaml"), text)
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

fn binding<'a>(
    config: &'a zilla_engine::config::Config,
    name: &str,
) -> &'a zilla_engine::config::BindingConfig {
    config
        .bindings()
        .find(|(qualified, _)| qualified.to_string() == name)
        .map(|(_, binding)| binding)
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn a_server_and_a_client_expand_into_http_pipelines() {
    let config = load(&engine(), &config(SPEC)).unwrap();
    let names: Vec<String> = config.bindings().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        names,
        [
            "example:north",
            "example:south",
            "example.north:http_server",
            "example.south:tcp_client"
        ]
    );
    let north = binding(&config, "example:north");
    assert_eq!(north.type_name, "tcp");
    assert_eq!(north.exit.as_deref(), Some("example.north:http_server"));
    let http = binding(&config, "example.north:http_server");
    // Only the operation the route takes is routed, to the client, by method and template.
    assert_eq!(http.routes.len(), 1);
    assert_eq!(http.routes[0].exit, "example:south");
    assert_eq!(
        http.routes[0].when[0],
        serde_json::json!({"headers": {":method": "GET", ":path": "/books/{isbn}"}})
    );
    let requests = &http.options.as_ref().unwrap()["requests"];
    // Literal paths first: the body of shelveBook (by content type, then whatever it says
    // it is), then the path parameter of findBook.
    assert_eq!(
        requests[0]["content-type"],
        serde_json::json!(["application/json"])
    );
    assert_eq!(
        requests[0]["content"]["catalog"]["catalog"][0]["subject"],
        "shelf.shelveBook"
    );
    assert_eq!(requests[1]["content"], requests[0]["content"]);
    assert!(requests[1].get("content-type").is_none());
    assert_eq!(
        requests[2]["params"]["path"]["isbn"],
        serde_json::json!({"model": "string", "maxLength": 13})
    );
    let south = binding(&config, "example:south");
    assert_eq!(
        (south.type_name.as_str(), south.kind),
        ("http", BindingKind::Client)
    );
    let tcp = binding(&config, "example.south:tcp_client");
    assert_eq!(
        tcp.options.as_ref().unwrap(),
        &serde_json::json!({"host": "origin", "port": 4010})
    );
    // What `zilla validate -v` prints loads to the same bindings.
    let printed = load(&engine(), config.expanded.as_deref().unwrap()).unwrap();
    let again: Vec<String> = printed.bindings().map(|(n, _)| n.to_string()).collect();
    assert_eq!(again, names);
}

#[test]
fn a_server_url_without_wildcards_is_used_as_it_is() {
    // The client calls a mock the document does not list, as Zilla's current examples do.
    let text = config(SPEC).replace("['http://origin:*']", "['http://mock:5000/v2']");
    let config = load(&engine(), &text).unwrap();
    let tcp = binding(&config, "example.south:tcp_client");
    assert_eq!(
        tcp.options.as_ref().unwrap(),
        &serde_json::json!({"host": "mock", "port": 5000})
    );
    // A wildcard that matches none of the document's servers still fails the load.
    let text = config_text_with_servers("['http://elsewhere:*']");
    let errors = load(&engine(), &text).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|error| error.contains("selects none of the document's servers")),
        "{errors:?}"
    );
    assert_eq!(
        crate::generate::server_urls(
            &Some(vec![
                "http://origin:*".into(),
                "http://origin:4010/api".into()
            ]),
            &["http://origin:4010/api".into()]
        ),
        ["http://origin:4010/api"]
    );
}

fn config_text_with_servers(servers: &str) -> String {
    config(SPEC).replace("['http://origin:*']", servers)
}

#[tokio::test]
async fn a_changed_spec_rebuilds_only_what_was_generated_from_it() {
    let engine = engine();
    let first = engine.apply(load(&engine, &config(SPEC)).unwrap()).unwrap();
    assert_eq!(first.built, 4);
    let changed = SPEC.replace("maxLength: 13", "maxLength: 10");
    let second = engine
        .apply(load(&engine, &config(&changed)).unwrap())
        .unwrap();
    // The http server checks the parameter, and the listener in front of it exits there:
    // both are rebuilt; the client side, generated from the same spec, is unchanged.
    assert_eq!((second.built, second.kept, second.retired), (2, 2, 2));
    engine.shutdown(std::time::Duration::from_secs(1)).await;
}

#[test]
fn problems_in_the_document_fail_the_load_at_their_place() {
    let broken = SPEC.replace("{type: string, maxLength: 13}", "{type: array}");
    let errors = load(&engine(), &config(&broken)).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("zilla.yaml:37:11: bindings.north.options.specs.shelf: specs/shelf:11:42: paths./books/{isbn}.get.parameters[0].schema: parameters of type `array`"),
        "{errors:?}"
    );
    let broken = SPEC.replace("$ref: '#/components/schemas/Book'", "$ref: 'x.yaml#/Book'");
    let errors = load(&engine(), &config(&broken)).unwrap_err();
    assert!(
        errors[0].starts_with("zilla.yaml:37:11: bindings.north.options.specs.shelf: specs/shelf:18:28: paths./books.post.requestBody.content.application/json.schema.$ref: `x.yaml#/Book` refers to another document"),
        "{errors:?}"
    );
}

#[test]
fn a_server_of_a_document_without_operations_is_refused_at_its_paths() {
    let webhooks_only = "openapi: 3.1.0\ninfo: {title: hooks, version: \"1\"}\nwebhooks:\n  \
                         newBook:\n    post:\n      responses: {'200': {description: ok}}\n";
    let errors = load(&engine(), &config(webhooks_only)).unwrap_err();
    assert!(
        errors[0].starts_with(
            "zilla.yaml:22:11: bindings.north.options.specs.shelf: specs/shelf:1:1: paths: the \
             document describes no operations"
        ),
        "{errors:?}"
    );
    let empty_paths = webhooks_only.replace("webhooks:", "paths: {}\nwebhooks:");
    let errors = load(&engine(), &config(&empty_paths)).unwrap_err();
    assert!(
        errors[0].contains("specs/shelf:3:8: paths: the document describes no operations"),
        "{errors:?}"
    );
}

#[test]
fn a_path_naming_a_parameter_twice_is_refused_at_the_path() {
    let twice = SPEC.replace("  /books:\n", "  /books/{isbn}/copies/{isbn}:\n");
    let errors = load(&engine(), &config(&twice)).unwrap_err();
    assert!(
        errors[0].contains(
            "specs/shelf:13:5: paths./books/{isbn}/copies/{isbn}: parameter `isbn` appears twice \
             in the path; not supported"
        ),
        "{errors:?}"
    );
}

#[test]
fn routes_selecting_no_operation_are_refused() {
    let text = config(SPEC).replace("operation: find*", "operation: lend*");
    let errors = load(&engine(), &text).unwrap_err();
    assert!(
        errors[0]
            .contains("bindings.north.routes: the routes select none of the documents' operations"),
        "{errors:?}"
    );
}

#[test]
fn security_schemes_need_a_guard() {
    let secured = SPEC.replace(
        "      operationId: findBook\n",
        "      operationId: findBook\n      security: [{bearer: []}]\n",
    ) + "  securitySchemes:\n    bearer: {type: http, scheme: bearer}\n";
    let errors = load(&engine(), &config(&secured)).unwrap_err();
    assert!(
        errors[0].contains("security scheme `bearer` is checked by no guard"),
        "{errors:?}"
    );
}

#[test]
fn unsupported_keys_are_refused() {
    let text = config(SPEC).replace(
        "          servers: ['http://localhost:0']\n",
        "          servers: ['http://localhost:0']\n          overlay: {specs: {subject: x}}\n",
    );
    let errors = load(&engine(), &text).unwrap_err();
    assert!(
        errors[0].contains("options.specs.shelf.overlay: `overlay` is not supported yet"),
        "{errors:?}"
    );
}

#[test]
fn a_client_refuses_credentials_it_would_not_send() {
    let spec = SPEC.to_owned() + "  securitySchemes:\n    bearer: {type: http, scheme: bearer}\n";
    let with_security = config(&spec).replace(
        "          servers: ['http://origin:*']\n",
        "          servers: ['http://origin:*']\n          security: {bearer: jwt0}\n",
    );
    let errors = load(&engine(), &with_security).unwrap_err();
    assert!(
        errors[0].contains("options.specs.shelf.security: a client injects no credentials"),
        "{errors:?}"
    );
    let with_authorization = config(SPEC).replace(
        "    kind: client\n    options:\n",
        "    kind: client\n    options:\n      http:\n        authorization:\n          jwt0:\n            credentials:\n              headers:\n                authorization: Bearer {credentials}\n",
    );
    let errors = load(&engine(), &with_authorization).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|error| error.contains("options.http.authorization")),
        "{errors:?}"
    );
}

/// The RSA key of `guards/jwt/tests/keys/jwks.json`: the guard needs a key to build.
const JWK_N: &str = "vhJj7rDxK-Yp68a4iD-Im8sxTVkvihOmgfIRrMlQnj9MBM9Et1FKEOKR-NP5i6L8tkDOPGLjseIrU6x6FQ-CdTCio8dF1KhN6p3x6YxwTRtKG9MOo9izEkLF6u-rV2z_A-_nfu7m8xqzavqoIP5lT9zyfSJKrAL2a35LPjDGF_V33iU1u4ZfTCPQO9hfYCkphHAnbOUW1dcQW2Ivf1YXczwLeEPhWa2BMlzkeWrqJ3FXClyTc9pDXDU-XUszOEvGwqXPIc-X7YaU8iI8ij-4fkcb_hXm1geJueg6WzyOcuLkYPapgoccbt1AfPcBhzHwFnwlpZy0LZIQG9SDnMFQSw";

#[test]
fn routes_pick_operations_by_spec_and_tag_and_secured_ones_are_guarded() {
    let spec = SPEC
        .replace(
            "      operationId: findBook\n",
            "      operationId: findBook\n      tags: [books]\n      security: [{bearer: [read]}]\n",
        )
        .replace(
            "      operationId: shelveBook\n",
            "      operationId: shelveBook\n      tags: [admin]\n",
        )
        + "  securitySchemes:\n    bearer: {type: http, scheme: bearer}\n";
    let guard = format!(
        "guards:\n  jwt0:\n    type: jwt\n    options:\n      issuer: https://auth.example.com\n      \
         audience: https://api.example.com\n      keys:\n        - {{kty: RSA, kid: rsa1, alg: RS256, \
         e: AQAB, n: {JWK_N}}}\n"
    );
    let text = config(&spec)
        .replace("bindings:\n", &format!("{guard}bindings:\n"))
        .replace(
            "          servers: ['http://localhost:0']\n",
            "          servers: ['http://localhost:0']\n          security: {bearer: jwt0}\n",
        )
        .replace(
            "    kind: server\n    options:\n",
            "    kind: server\n    options:\n      http:\n        authorization:\n          jwt0:\n            \
             credentials:\n              headers:\n                authorization: Bearer {credentials}\n",
        )
        .replace(
            "          - operation: find*\n",
            "          - spec: shelf\n            tag: books\n",
        );
    let mut registry = registry();
    zilla_guard_jwt::register(&mut registry);
    let engine = Engine::new(
        registry,
        Properties::from_assignments(["zilla.binding.composite.listen.host=127.0.0.1"]),
    );
    let config = load(&engine, &text).unwrap();
    let http = binding(&config, "example.north:http_server");
    // Only findBook carries the tag the route names; it is routed for holders of `read`.
    assert_eq!(http.routes.len(), 1, "{:?}", http.routes);
    assert_eq!(
        http.routes[0].when[0],
        serde_json::json!({"headers": {":method": "GET", ":path": "/books/{isbn}"}})
    );
    let guarded = serde_json::to_value(&http.routes[0].guarded).unwrap();
    assert_eq!(guarded, serde_json::json!([["example:jwt0", ["read"]]]));
    let options = http.options.as_ref().unwrap();
    assert!(
        options["authorization"].get("example:jwt0").is_some(),
        "{options}"
    );
    // A tag no operation has routes nothing: a spec with no route is refused, not opened.
    let untagged = text.replace("tag: books", "tag: nothing");
    let errors = load(&engine, &untagged);
    let routes = errors.map(|config| binding(&config, "example.north:http_server").routes.len());
    assert!(routes.is_err() || routes == Ok(0), "{routes:?}");
}
