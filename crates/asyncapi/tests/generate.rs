//! The pipelines generated from the test documents load as the gateway loads a `zilla.yaml`
//! (schema, references, stream kinds), and say what the documents say.

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use indexmap::IndexMap;
use serde_json::{Value, json};
use zilla_asyncapi::{Overrides, Spec, expand, parse};

fn spec(name: &str) -> Spec {
    let path = format!("{}/tests/specs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    parse(&path, &text).unwrap_or_else(|error| panic!("{error}"))
}

/// The server → proxy → client bindings of Zilla's `asyncapi.*.kafka.proxy` examples.
fn bindings(entry: &str, routes: Value, proxy_options: Value) -> serde_json::Map<String, Value> {
    let mut proxy_options = proxy_options;
    proxy_options["specs"] = json!({entry: {}, "kafka_api": {}});
    json!({
        "north_server": {
            "type": "asyncapi",
            "kind": "server",
            "options": {"specs": {entry: {}}},
            "exit": "south_proxy",
        },
        "south_proxy": {
            "type": "asyncapi",
            "kind": "proxy",
            "options": proxy_options,
            "routes": routes,
        },
        "south_client": {
            "type": "asyncapi",
            "kind": "client",
            "options": {"specs": {"kafka_api": {}}},
        },
    })
    .as_object()
    .cloned()
    .unwrap()
}

/// The generated namespaces as one `zilla.yaml`, loaded by the gateway's config pipeline.
fn load(namespaces: &[zilla_asyncapi::Namespace]) -> (String, Vec<Value>) {
    let yaml: String = namespaces.iter().map(|n| n.to_yaml().unwrap()).collect();
    let source = zilla_config::Source::plain("generated.yaml", yaml.clone());
    if let Err(errors) = zilla_config::load(source, &zilla::registry()) {
        panic!("{errors}\n{yaml}");
    }
    (yaml, namespaces.iter().map(|n| n.to_value()).collect())
}

fn lighting() -> Vec<zilla_asyncapi::Namespace> {
    let specs = IndexMap::from([
        ("mqtt_api".to_owned(), spec("lighting-mqtt.yaml")),
        ("kafka_api".to_owned(), spec("lighting-kafka.yaml")),
    ]);
    let routes = json!([
        {"when": [{"spec": "mqtt_api", "operation": "reportMeasurement"},
                  {"spec": "mqtt_api", "operation": "switchLamp"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "produceLighting"}},
        {"when": [{"spec": "mqtt_api", "operation": "watchMeasurements"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "consumeLighting"}},
    ]);
    expand(
        "lighting",
        &bindings("mqtt_api", routes, json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap()
}

#[test]
fn mqtt_kafka_pipeline_loads_and_follows_the_documents() {
    let (_, namespaces) = load(&lighting());
    let names: Vec<&str> = namespaces
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "lighting.north_server",
            "lighting.south_proxy",
            "lighting.south_client"
        ]
    );
    let server = &namespaces[0]["bindings"];
    assert_eq!(
        server["tcp_server0"]["options"],
        json!({"host": "0.0.0.0", "port": 7183})
    );
    assert_eq!(
        server["mqtt_server0"]["exit"],
        "lighting.south_proxy:mqtt_kafka_proxy0"
    );
    let topics = &server["mqtt_server0"]["options"]["topics"];
    assert_eq!(topics[0]["name"], "lighting/+/measured");
    assert_eq!(topics[1]["name"], "lighting/+/switch");
    assert_eq!(
        topics[0]["content"],
        json!({"model": "json", "catalog": {"catalog0": [{"subject": "reportMeasurement", "version": "latest"}]}})
    );
    let schema: Value = serde_json::from_str(
        namespaces[0]["catalogs"]["catalog0"]["options"]["subjects"]["reportMeasurement"]["schema"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(schema["properties"]["lumens"]["minimum"], 0);
    assert_eq!(
        schema["$defs"]["components.schemas.timestamp"]["format"],
        "date-time"
    );

    let proxy = &namespaces[1]["bindings"]["mqtt_kafka_proxy0"];
    assert_eq!(
        proxy["options"]["topics"],
        json!({"sessions": "mqtt-sessions", "messages": "mqtt-messages", "retained": "mqtt-retained"})
    );
    assert_eq!(proxy["exit"], "lighting.south_client:kafka_cache_client0");
    let routes = proxy["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 3);
    assert_eq!(
        routes[0]["when"],
        json!([{"publish": [{"topic": "lighting/+/measured"}]}])
    );
    assert_eq!(
        routes[2]["when"],
        json!([{"subscribe": [{"topic": "lighting/+/measured"}]}])
    );
    assert!(
        routes
            .iter()
            .all(|route| route["with"]["messages"] == "lighting-events")
    );

    let client = &namespaces[2]["bindings"];
    assert_eq!(
        client["kafka_client0"]["options"]["servers"],
        json!(["localhost:9092"])
    );
    assert_eq!(
        client["kafka_cache_server0"]["options"]["bootstrap"],
        json!(["lighting-events", "mqtt-messages", "mqtt-retained"])
    );
}

#[test]
fn mqtt_kafka_channels_may_be_named_in_options() {
    let specs = IndexMap::from([
        ("mqtt_api".to_owned(), spec("lighting-mqtt.yaml")),
        ("kafka_api".to_owned(), spec("lighting-kafka.yaml")),
    ]);
    let routes = json!([{"when": [{"api-id": "mqtt_api", "operation-id": "*"}],
        "exit": "south_client", "with": {"spec": "kafka_api", "operation": "produceLighting"}}]);
    let options = json!({"mqtt-kafka": {"channels": {"sessions": "sessions", "messages": "lighting", "retained": "retained"}}});
    let namespaces = expand(
        "n",
        &bindings("mqtt_api", routes, options),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let proxy = &namespaces[1]["bindings"]["mqtt_kafka_proxy0"];
    assert_eq!(proxy["options"]["topics"]["messages"], "lighting-events");
    assert_eq!(
        proxy["routes"].as_array().unwrap().len(),
        3,
        "every operation by the wildcard"
    );
}

#[test]
fn http_and_sse_kafka_pipeline_loads_and_follows_the_documents() {
    let specs = IndexMap::from([
        ("http_api".to_owned(), spec("shelter-http.yaml")),
        ("kafka_api".to_owned(), spec("shelter-kafka.yaml")),
    ]);
    let routes = json!([
        {"when": [{"spec": "http_api", "operation": "createPet"}],
         "exit": "south_client", "with": {"spec": "kafka_api"}},
        {"when": [{"spec": "http_api", "operation": "listPets"}, {"spec": "http_api", "operation": "getPet"},
                  {"spec": "http_api", "operation": "streamPets"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "readPets"}},
        {"when": [{"spec": "http_api", "operation": "registerAdopter"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "registerAdopter"}},
    ]);
    let overrides = Overrides {
        listen_host: Some("127.0.0.1".into()),
        listen_ports: [("http://localhost:7114".to_owned(), 0)].into(),
        bootstrap: Some(vec!["127.0.0.1:19092".into()]),
    };
    let namespaces = expand(
        "shelter",
        &bindings("http_api", routes, json!({})),
        &specs,
        &overrides,
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let server = &namespaces[0]["bindings"];
    assert_eq!(
        server["tcp_server0"]["options"],
        json!({"host": "127.0.0.1", "port": 0})
    );
    let requests = server["http_server0"]["options"]["requests"]
        .as_array()
        .unwrap();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0]["path"], "/pets");
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[1]["path"], "/adopters");
    assert_eq!(
        server["http_server0"]["routes"],
        json!([{"when": [{"headers": {":method": "GET", ":path": "/pets/events"}}], "exit": "sse_server0"}])
    );
    assert_eq!(
        server["http_server0"]["exit"],
        "shelter.south_proxy:http_kafka_proxy0"
    );
    assert_eq!(
        server["sse_server0"]["exit"],
        "shelter.south_proxy:sse_kafka_proxy0"
    );
    assert_eq!(
        server["sse_server0"].get("options"),
        None,
        "no event schema, no model"
    );

    let http = namespaces[1]["bindings"]["http_kafka_proxy0"]["routes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(http.len(), 4);
    assert_eq!(
        http[0]["with"],
        json!({"capability": "produce", "topic": "shelter-pets", "key": "${idempotencyKey}"})
    );
    assert_eq!(
        http[1]["with"]["merge"],
        json!({"content-type": "application/json"})
    );
    assert_eq!(
        http[2]["when"],
        json!([{"method": "GET", "path": "/pets/{id}"}])
    );
    assert_eq!(http[2]["with"]["filters"], json!([{"key": "${params.id}"}]));
    assert_eq!(
        http[3]["when"],
        json!([{"method": "POST", "path": "/adopters"}, {"method": "GET", "path": "/adopters;cid={correlationId}"}])
    );
    assert_eq!(http[3]["with"]["reply-to"], "shelter-verified-adopters");
    assert_eq!(
        http[3]["with"]["async"],
        json!({"location": "/adopters;cid=${correlationId}"})
    );
    let sse = &namespaces[1]["bindings"]["sse_kafka_proxy0"]["routes"];
    assert_eq!(
        sse,
        &json!([{"when": [{"path": "/pets/events"}], "exit": "shelter.south_client:kafka_cache_client0", "with": {"topic": "shelter-pets"}}])
    );
    assert_eq!(
        namespaces[2]["bindings"]["kafka_client0"]["options"]["servers"],
        json!(["127.0.0.1:19092"])
    );
}

#[test]
fn what_cannot_be_generated_is_refused_with_its_path() {
    let specs = IndexMap::from([
        ("mqtt_api".to_owned(), spec("lighting-mqtt.yaml")),
        ("kafka_api".to_owned(), spec("lighting-kafka.yaml")),
    ]);
    let route = |operation: &str| {
        json!([{"when": [{"spec": "mqtt_api", "operation": operation}],
        "exit": "south_client", "with": {"spec": "kafka_api", "operation": "produceLighting"}}])
    };
    let error = expand(
        "n",
        &bindings("mqtt_api", route("noSuchOperation"), json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "bindings.south_proxy.routes[0].when[0].operation: spec `mqtt_api` has no operation matching `noSuchOperation`"
    );
    let mut refused = bindings("mqtt_api", route("switchLamp"), json!({}));
    refused["north_server"]["options"]["specs"]["mqtt_api"]["security"] = json!({});
    let error = expand("n", &refused, &specs, &Overrides::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("bindings.north_server.options.specs.mqtt_api.security: not supported"),
        "{error}"
    );
    let mut selected = bindings("mqtt_api", route("switchLamp"), json!({}));
    selected["north_server"]["options"]["specs"]["mqtt_api"]["servers"] =
        json!(["mqtt://elsewhere:1883"]);
    let error = expand("n", &selected, &specs, &Overrides::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no server of the document is selected (it has: mqtt://localhost:7183)"),
        "{error}"
    );
}

#[test]
fn sse_event_schemas_become_the_sse_servers_requests_models() {
    let path = format!(
        "{}/tests/specs/shelter-http.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "      petEvent:\n        name: petEvent\n",
        "      petEvent:\n        name: petEvent\n        payload: {type: object}\n",
    );
    let specs = IndexMap::from([
        ("http_api".to_owned(), parse("events.yaml", &text).unwrap()),
        ("kafka_api".to_owned(), spec("shelter-kafka.yaml")),
    ]);
    let routes = json!([
        {"when": [{"spec": "http_api", "operation": "createPet"}],
         "exit": "south_client", "with": {"spec": "kafka_api"}},
        {"when": [{"spec": "http_api", "operation": "streamPets"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "readPets"}},
    ]);
    let namespaces = expand(
        "n",
        &bindings("http_api", routes, json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let server = namespaces[0].to_value();
    assert_eq!(
        server["bindings"]["sse_server0"]["options"]["requests"][0]["path"],
        "/pets/events"
    );
    assert_eq!(
        server["bindings"]["sse_server0"]["options"]["requests"][0]["content"]["model"],
        "json"
    );
    // The sse server checks the events it sends against it (events failing it are dropped),
    // so the generated config loads.
    load(&namespaces);
}

#[test]
fn an_operation_an_earlier_route_maps_is_not_mapped_again() {
    // A route for one operation, then a route for the rest (`*Pet*` covers createPet too), as
    // Zilla's asyncapi.http.kafka.proxy writes them: the first route that takes an operation
    // wins.
    let specs = IndexMap::from([
        ("http_api".to_owned(), spec("shelter-http.yaml")),
        ("kafka_api".to_owned(), spec("shelter-kafka.yaml")),
    ]);
    let routes = json!([
        {"when": [{"spec": "http_api", "operation": "createPet"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "createPet"}},
        {"when": [{"spec": "http_api", "operation": "*Pet*"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "readPets"}},
    ]);
    let namespaces = expand(
        "shelter",
        &bindings("http_api", routes, json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let http = namespaces[1]["bindings"]["http_kafka_proxy0"]["routes"]
        .as_array()
        .unwrap()
        .clone();
    let posts: Vec<&Value> = http
        .iter()
        .filter(|route| route["when"][0]["method"] == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{http:?}");
    assert_eq!(posts[0]["with"]["capability"], "produce");
    assert_eq!(http.len(), 3, "createPet, listPets, getPet: {http:?}");
}

#[test]
fn without_a_named_operation_only_same_named_operations_are_mapped() {
    // `with` names no operation: each operation maps to the Kafka operation of its own name,
    // and one without such a counterpart (createPet, registerAdopter are the only shared
    // names) is left unmapped rather than failing the load, as in Zilla.
    let specs = IndexMap::from([
        ("http_api".to_owned(), spec("shelter-http.yaml")),
        ("kafka_api".to_owned(), spec("shelter-kafka.yaml")),
    ]);
    let routes = json!([
        {"when": [{"spec": "http_api", "operation": "*Pet*"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "readPets"}},
        {"when": [{"spec": "http_api"}],
         "exit": "south_client", "with": {"spec": "kafka_api"}},
    ]);
    let namespaces = expand(
        "shelter",
        &bindings("http_api", routes, json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let http = namespaces[1]["bindings"]["http_kafka_proxy0"]["routes"]
        .as_array()
        .unwrap()
        .clone();
    let adopters: Vec<&Value> = http
        .iter()
        .filter(|route| route["with"]["reply-to"] == "shelter-verified-adopters")
        .collect();
    assert_eq!(
        adopters.len(),
        1,
        "registerAdopter maps by its name: {http:?}"
    );
    // An explicitly named operation the Kafka spec lacks is still an error.
    let routes = json!([
        {"when": [{"spec": "http_api"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "noSuchOperation"}},
    ]);
    let error = expand(
        "shelter",
        &bindings("http_api", routes, json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("no operation `noSuchOperation`"), "{error}");
}

/// A server exiting straight to a client of the same document, the client connecting to
/// `url` (not a server of the document: used as written).
fn server_to_client(label: &str, url: &str) -> serde_json::Map<String, Value> {
    json!({
        "north_server": {
            "type": "asyncapi",
            "kind": "server",
            "options": {"specs": {label: {}}},
            "exit": "south_client",
        },
        "south_client": {
            "type": "asyncapi",
            "kind": "client",
            "options": {"specs": {label: {"servers": [url]}}},
        },
    })
    .as_object()
    .cloned()
    .unwrap()
}

#[test]
fn an_mqtt_server_exits_to_an_mqtt_client_of_the_broker() {
    let specs = IndexMap::from([("mqtt_api".to_owned(), spec("lighting-mqtt.yaml"))]);
    let namespaces = expand(
        "lighting",
        &server_to_client("mqtt_api", "mqtt://broker.example:1884"),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let server = &namespaces[0]["bindings"];
    assert_eq!(
        server["mqtt_server0"]["exit"],
        "lighting.south_client:mqtt_client0"
    );
    // Publications are still checked against the document's schemas.
    assert_eq!(
        server["mqtt_server0"]["options"]["topics"][0]["name"],
        "lighting/+/measured"
    );
    assert_eq!(
        namespaces[1]["bindings"],
        json!({
            "mqtt_client0": {"type": "mqtt", "kind": "client", "exit": "tcp_client0"},
            "tcp_client0": {"type": "tcp", "kind": "client",
                            "options": {"host": "broker.example", "port": 1884}},
        })
    );
}

#[test]
fn an_http_server_exits_to_http_and_sse_clients_of_the_origin() {
    let specs = IndexMap::from([("feed".to_owned(), spec("newsroom-sse.yaml"))]);
    let namespaces = expand(
        "news",
        &server_to_client("feed", "http://origin.example:8001"),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let server = &namespaces[0]["bindings"];
    assert_eq!(
        server["http_server0"]["exit"],
        "news.south_client:http_client0"
    );
    assert_eq!(
        server["http_server0"]["routes"][0]["when"],
        json!([{"headers": {":method": "GET", ":path": "/desks/*"}}])
    );
    assert_eq!(
        server["sse_server0"]["exit"],
        "news.south_client:sse_client0"
    );
    assert_eq!(
        server["sse_server0"]["options"]["requests"][0]["path"],
        "/desks/{desk}"
    );
    let client = &namespaces[1]["bindings"];
    assert_eq!(
        client,
        &json!({
            "sse_client0": {"type": "sse", "kind": "client", "exit": "http_client0"},
            "http_client0": {"type": "http", "kind": "client", "exit": "tcp_client0",
                "options": {"versions": ["http/1.1"],
                            "overrides": {":authority": "origin.example:8001"}}},
            "tcp_client0": {"type": "tcp", "kind": "client",
                            "options": {"host": "origin.example", "port": 8001}},
        })
    );
    // The document's own server when the client selects none.
    let mut own = server_to_client("feed", "unused");
    own["south_client"]["options"]["specs"]["feed"] = json!({});
    let namespaces = expand("news", &own, &specs, &Overrides::default()).unwrap();
    assert_eq!(
        namespaces[1].to_value()["bindings"]["tcp_client0"]["options"],
        json!({"host": "localhost", "port": 7114})
    );
}

#[test]
fn a_server_exits_only_with_the_protocols_its_proxy_maps() {
    // The proxy maps only the SSE operation: the http server answers the HTTP operations
    // itself (404, unrouted) instead of exiting to an http-kafka proxy that was not generated.
    let specs = IndexMap::from([
        ("http_api".to_owned(), spec("shelter-http.yaml")),
        ("kafka_api".to_owned(), spec("shelter-kafka.yaml")),
    ]);
    let routes = json!([
        {"when": [{"spec": "http_api", "operation": "streamPets"}],
         "exit": "south_client", "with": {"spec": "kafka_api", "operation": "readPets"}},
    ]);
    let namespaces = expand(
        "shelter",
        &bindings("http_api", routes, json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let server = &namespaces[0]["bindings"];
    assert_eq!(server["http_server0"].get("exit"), None, "{server}");
    assert_eq!(
        server["http_server0"].get("options"),
        None,
        "no request models for exchanges that are not served"
    );
    assert_eq!(
        server["sse_server0"]["exit"],
        "shelter.south_proxy:sse_kafka_proxy0"
    );
    assert_eq!(namespaces[1]["bindings"].get("http_kafka_proxy0"), None);

    // And the other way round: only HTTP operations mapped, no sse server.
    let routes = json!([
        {"when": [{"spec": "http_api", "operation": "createPet"}],
         "exit": "south_client", "with": {"spec": "kafka_api"}},
    ]);
    let namespaces = expand(
        "shelter",
        &bindings("http_api", routes, json!({})),
        &specs,
        &Overrides::default(),
    )
    .unwrap();
    let (_, namespaces) = load(&namespaces);
    let server = &namespaces[0]["bindings"];
    assert_eq!(
        server["http_server0"]["exit"],
        "shelter.south_proxy:http_kafka_proxy0"
    );
    assert_eq!(server.get("sse_server0"), None);
    assert_eq!(server["http_server0"].get("routes"), None);
}

#[test]
fn clients_refuse_what_they_cannot_connect_to() {
    let specs = IndexMap::from([("mqtt_api".to_owned(), spec("lighting-mqtt.yaml"))]);
    let error = expand(
        "n",
        &server_to_client("mqtt_api", "not-a-url"),
        &specs,
        &Overrides::default(),
    )
    .unwrap_err();
    assert!(
        error.to_string().starts_with(
            "bindings.south_client.options.specs.mqtt_api: no server of the document is selected by `not-a-url`"
        ),
        "{error}"
    );
    for (url, expected) in [
        (
            "secure-mqtt://broker:8883",
            "TLS to the server (`secure-mqtt`) is not supported",
        ),
        (
            "amqp://broker:5672",
            "an asyncapi client speaks kafka, mqtt, http or sse, not `amqp`",
        ),
    ] {
        let error = expand(
            "n",
            &server_to_client("mqtt_api", url),
            &specs,
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
    // A client of another protocol than the server's: the server finds nothing to exit to.
    let error = expand(
        "n",
        &server_to_client("mqtt_api", "http://origin:80"),
        &specs,
        &Overrides::default(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "bindings.north_server.exit: `south_client` takes no MQTT sessions: it maps no operation of an mqtt server"
    );
}
