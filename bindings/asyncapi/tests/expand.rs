//! `asyncapi` bindings expanded by the gateway's own config load: what each kind becomes, how
//! the server, proxy and client reach each other, and what is refused with its place.

use std::path::Path;

use zilla::engine::Engine;
use zilla::engine::config::{BindingConfig, Config};
use zilla::engine::properties::Properties;

const MQTT: &str = "asyncapi: 3.0.0
info: {title: sensors, version: 1.0.0}
servers:
  plain: {host: 'localhost:1883', protocol: mqtt}
  other: {host: 'elsewhere:1883', protocol: mqtt}
channels:
  readings:
    address: sensors/{id}
    parameters: {id: {}}
    messages:
      reading:
        payload: {type: object, required: [value], properties: {value: {type: number}}}
operations:
  sendReading:
    action: send
    channel: {$ref: '#/channels/readings'}
  receiveReading:
    action: receive
    channel: {$ref: '#/channels/readings'}
";

const KAFKA: &str = "asyncapi: 3.0.0
info: {title: sensors in kafka, version: 1.0.0}
servers:
  cluster: {host: 'localhost:9092', protocol: kafka}
channels:
  readings: {address: sensor-readings}
  sessions: {address: sensor-sessions}
  messages: {address: sensor-messages}
  retained: {address: sensor-retained}
operations:
  produceReadings: {action: send, channel: {$ref: '#/channels/readings'}}
  consumeReadings: {action: receive, channel: {$ref: '#/channels/readings'}}
";

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("            {line}\n"))
        .collect()
}

/// A server → proxy → client config over the two documents, `extra` lines inserted into the
/// server's options.
fn config(server_options: &str, proxy_exit: &str) -> String {
    format!(
        "name: t
catalogs:
  specs:
    type: inline
    options:
      subjects:
        mqtt:
          schema: |
{mqtt}        kafka:
          schema: |
{kafka}bindings:
  north:
    type: asyncapi
    kind: server
    options:
{server_options}      specs:
        mqtt_api:
          servers: ['mqtt://localhost:*']
          catalog:
            specs: {{subject: mqtt, version: latest}}
    exit: {proxy_exit}
  south:
    type: asyncapi
    kind: proxy
    options:
      specs:
        mqtt_api:
          catalog: {{specs: {{subject: mqtt}}}}
        kafka_api:
          catalog: {{specs: {{subject: kafka}}}}
      mqtt-kafka:
        channels: {{sessions: sessions, messages: messages, retained: retained}}
    routes:
      - when:
          - {{spec: mqtt_api, operation: 'send*'}}
        exit: client
        with: {{spec: kafka_api, operation: produceReadings}}
      - when:
          - {{spec: mqtt_api, operation: receiveReading}}
        exit: client
        with: {{spec: kafka_api, operation: consumeReadings}}
  client:
    type: asyncapi
    kind: client
    options:
      specs:
        kafka_api:
          server: cluster
          catalog: {{specs: {{subject: kafka}}}}
  plain:
    type: echo
    kind: server
",
        mqtt = indent(MQTT),
        kafka = indent(KAFKA),
    )
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

#[test]
fn server_proxy_and_client_expand_and_reach_each_other_by_name() {
    let config = load(&config("", "south")).unwrap();
    let north = binding(&config, "t:north");
    assert_eq!(
        (north.type_name.as_str(), north.kind.to_string()),
        ("tcp", "server".into())
    );
    // Only the selected server (`mqtt://localhost:*`), on the listen host property.
    let options = north.options.as_ref().unwrap();
    assert_eq!(options["host"], "127.0.0.1");
    assert_eq!(options["port"], 1883);
    let mqtt = binding(&config, "t.north:mqtt_server0");
    assert_eq!(mqtt.exit.as_deref(), Some("t:south"));
    let topics = &mqtt.options.as_ref().unwrap()["topics"];
    assert_eq!(topics[0]["name"], "sensors/+");
    assert_eq!(topics[0]["content"]["model"], "json");

    let south = binding(&config, "t:south");
    assert_eq!(south.type_name, "mqtt-kafka");
    let options = south.options.as_ref().unwrap();
    assert_eq!(options["topics"]["sessions"], "sensor-sessions");
    assert_eq!(options["topics"]["retained"], "sensor-retained");
    assert_eq!(south.routes[0].exit, "t:client");
    assert_eq!(
        south.routes[0].with.as_ref().unwrap()["messages"],
        "sensor-readings"
    );
    assert_eq!(
        south.routes.last().unwrap().when[0]["subscribe"][0]["topic"],
        "sensors/+"
    );

    let client = binding(&config, "t:client");
    assert_eq!(
        (client.type_name.as_str(), client.kind.to_string()),
        ("kafka", "cache_client".into())
    );
    let kafka = binding(&config, "t.client:kafka_client0");
    assert_eq!(
        kafka.options.as_ref().unwrap()["servers"][0],
        "localhost:9092"
    );
    assert!(
        config
            .expanded
            .as_deref()
            .unwrap_or("")
            .contains("name: t.client")
    );
}

#[test]
fn what_is_not_built_is_refused_with_its_place() {
    let cases = [
        (
            config(
                "      mqtt-kafka: {channels: {sessions: a, messages: b, retained: c}}\n",
                "south",
            ),
            "bindings.north.options.mqtt-kafka: only an asyncapi proxy maps MQTT onto Kafka",
        ),
        (
            config("", "plain"),
            "bindings.north.exit: `plain` (echo server) does not accept mqtt streams",
        ),
        (
            config("      tls: {}\n", "south"),
            "bindings.north.options.tls: `tls` (secure servers) is not supported",
        ),
        (
            config("", "south").replace("server: cluster", "server: nowhere"),
            "bindings.client.options.specs.kafka_api: no server of the document is selected",
        ),
        (
            config("", "south").replace(
                "catalog: {specs: {subject: kafka}}\n      mqtt-kafka",
                "servers: [kafka://nowhere:9092]\n          catalog: {specs: {subject: kafka}}\n      mqtt-kafka",
            ),
            "bindings.south.options.specs.kafka_api: no server of the document is selected",
        ),
        (
            config("", "south").replace("operation: produceReadings", "operation: produceNothing"),
            "spec `kafka_api` has no operation `produceNothing`",
        ),
    ];
    for (text, expected) in cases {
        let error = load(&text).unwrap_err();
        assert!(error.contains(expected), "expected {expected}, got {error}");
        assert!(error.starts_with("zilla.yaml:"), "{error}");
    }
}

const FEED: &str = "asyncapi: 3.0.0
info: {title: feed, version: 1.0.0}
servers:
  plain: {host: 'localhost:7114', protocol: http}
channels:
  items:
    address: /items
    messages: {item: {payload: {type: object}}}
  feed:
    address: '/feed/{id}'
    parameters: {id: {}}
    messages: {item: {payload: {type: object}}}
operations:
  postItem:
    action: send
    channel: {$ref: '#/channels/items'}
    bindings: {http: {method: POST}}
  follow:
    action: receive
    channel: {$ref: '#/channels/feed'}
    bindings: {x-zilla-sse: {method: GET}}
";

/// The inline catalog `specs` holding `documents` (subject, text), then `bindings`.
fn with_documents(documents: &[(&str, &str)], bindings: &str) -> String {
    let subjects: String = documents
        .iter()
        .map(|(subject, text)| format!("        {subject}:\n          schema: |\n{}", indent(text)))
        .collect();
    format!(
        "name: t\ncatalogs:\n  specs:\n    type: inline\n    options:\n      subjects:\n{subjects}bindings:\n{bindings}"
    )
}

/// A server of `subject` exiting straight to a client of it connecting to `url`.
fn server_to_client(subject: &str, document: &str, url: &str) -> String {
    with_documents(
        &[(subject, document)],
        &format!(
            "  north:
    type: asyncapi
    kind: server
    options:
      specs:
        api: {{catalog: {{specs: {{subject: {subject}}}}}}}
    exit: client
  client:
    type: asyncapi
    kind: client
    options:
      specs:
        api:
          servers: ['{url}']
          catalog: {{specs: {{subject: {subject}}}}}
"
        ),
    )
}

#[test]
fn a_server_exits_to_an_mqtt_client_connecting_where_the_config_says() {
    let config = load(&server_to_client(
        "mqtt",
        MQTT,
        "mqtt://broker.example:1884",
    ))
    .unwrap();
    let mqtt = binding(&config, "t.north:mqtt_server0");
    assert_eq!(mqtt.exit.as_deref(), Some("t:client"));
    let client = binding(&config, "t:client");
    assert_eq!(
        (client.type_name.as_str(), client.kind.to_string()),
        ("mqtt", "client".into())
    );
    assert_eq!(client.exit.as_deref(), Some("t.client:tcp_client0"));
    let tcp = binding(&config, "t.client:tcp_client0");
    assert_eq!(
        tcp.options.as_ref().unwrap(),
        &serde_json::json!({"host": "broker.example", "port": 1884})
    );
}

#[test]
fn a_server_exits_to_sse_and_http_clients_of_the_origin() {
    let config = load(&server_to_client(
        "feed",
        FEED,
        "http://origin.example:8001",
    ))
    .unwrap();
    // The sse client is the client's entry: it takes the composite's name.
    assert_eq!(
        binding(&config, "t.north:sse_server0").exit.as_deref(),
        Some("t:client")
    );
    assert_eq!(binding(&config, "t:client").type_name, "sse");
    assert_eq!(
        binding(&config, "t.north:http_server0").exit.as_deref(),
        Some("t.client:http_client0")
    );
    let http = binding(&config, "t.client:http_client0");
    assert_eq!(
        http.options.as_ref().unwrap()["overrides"][":authority"],
        "origin.example:8001"
    );
}

#[test]
fn a_server_exits_only_to_what_its_proxy_maps() {
    // The proxy maps the SSE operation only: its entry is the sse-kafka proxy, so the http
    // server must not send HTTP exchanges there (nor to an http-kafka proxy that does not
    // exist): it answers them itself.
    let text = with_documents(
        &[("feed", FEED), ("kafka", KAFKA)],
        "  north:
    type: asyncapi
    kind: server
    options:
      specs:
        api: {catalog: {specs: {subject: feed}}}
    exit: south
  south:
    type: asyncapi
    kind: proxy
    options:
      specs:
        api: {catalog: {specs: {subject: feed}}}
        kafka_api: {catalog: {specs: {subject: kafka}}}
    routes:
      - when:
          - {spec: api, operation: follow}
        exit: client
        with: {spec: kafka_api, operation: consumeReadings}
  client:
    type: asyncapi
    kind: client
    options:
      specs:
        kafka_api: {catalog: {specs: {subject: kafka}}}
",
    );
    let config = load(&text).unwrap();
    assert_eq!(binding(&config, "t:south").type_name, "sse-kafka");
    assert_eq!(
        binding(&config, "t.north:sse_server0").exit.as_deref(),
        Some("t:south")
    );
    let http = binding(&config, "t.north:http_server0");
    assert_eq!(http.exit, None);
    assert_eq!(http.routes.len(), 1);
    assert_eq!(http.routes[0].exit, "sse_server0");
}
