//! Documents as the parser reads them: both major versions, YAML and JSON, `$ref`s resolved,
//! and every refusal located in the file. Arbitrary input never panics.

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use proptest::prelude::*;
use zilla_asyncapi::{Action, SchemaFormat, parse};

const V2: &str = r##"
asyncapi: 2.6.0
info: {title: Sensors, version: 1.0.0}
servers:
  production:
    url: mqtt://broker.example.com:{port}
    protocol: mqtt
    variables:
      port: {default: "1883"}
channels:
  sensors/{id}/temperature:
    parameters:
      id: {schema: {type: string}}
    publish:
      operationId: reportTemperature
      message:
        $ref: '#/components/messages/temperature'
    subscribe:
      message:
        oneOf:
          - $ref: '#/components/messages/temperature'
          - name: alarm
            schemaFormat: application/vnd.apache.avro;version=1.9.0
            payload: {type: record, name: Alarm, fields: [{name: level, type: int}]}
  readings:
    bindings:
      kafka: {topic: sensor-readings, partitions: 3}
components:
  messages:
    temperature:
      name: temperature
      contentType: application/json
      traits: [{$ref: '#/components/messageTraits/keyed'}]
      payload:
        type: object
        properties:
          celsius: {type: number}
  messageTraits:
    keyed:
      bindings:
        kafka:
          key: {type: string}
"##;

#[test]
fn version_2_channels_carry_publish_and_subscribe() {
    let spec = parse("v2.yaml", V2).unwrap();
    let server = &spec.servers["production"];
    assert_eq!(
        (server.host.as_str(), server.port),
        ("broker.example.com", Some(1883))
    );
    assert_eq!(server.url(), "mqtt://broker.example.com:1883");
    let channel = &spec.channels["sensors/{id}/temperature"];
    assert_eq!(channel.address.as_deref(), Some("sensors/{id}/temperature"));
    assert_eq!(channel.parameters, ["id"]);
    let publish = &spec.operations["reportTemperature"];
    assert_eq!(publish.action, Action::Send);
    assert_eq!(
        publish.messages[0].content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        publish.messages[0].kafka_key,
        Some(serde_json::json!({"type": "string"}))
    );
    let subscribe = &spec.operations["sensors/{id}/temperature.subscribe"];
    assert_eq!(subscribe.action, Action::Receive);
    assert_eq!(subscribe.messages.len(), 2);
    let alarm = subscribe.messages[1].payload.as_ref().unwrap();
    assert_eq!(alarm.format, SchemaFormat::Avro);
    assert_eq!(alarm.schema["name"], "Alarm");
    assert_eq!(spec.channels["readings"].topic(), Some("sensor-readings"));
}

#[test]
fn json_documents_read_like_yaml() {
    let text = r##"{
  "asyncapi": "3.0.0",
  "info": {"title": "Items", "version": "1"},
  "servers": {"web": {"host": "[::1]:8080", "protocol": "http", "pathname": "/v1"}},
  "channels": {"items": {"address": "/items", "messages": {"item": {"payload": {"type": "object"}}}}},
  "operations": {"postItem": {"action": "send", "channel": {"$ref": "#/channels/items"},
                 "bindings": {"http": {"method": "POST"}}}}
}"##;
    let spec = parse("items.json", text).unwrap();
    assert_eq!(spec.servers["web"].url(), "http://::1:8080/v1");
    let operation = &spec.operations["postItem"];
    assert_eq!(
        operation.http.as_ref().unwrap().method.as_deref(),
        Some("POST")
    );
    assert_eq!(operation.messages.len(), 1, "the channel's messages");
}

/// The error for `text`, as `file:line:column: path: message`.
fn refusal(text: &str) -> String {
    parse("doc.yaml", text).unwrap_err().to_string()
}

#[test]
fn sse_operations_may_name_get_and_nothing_else() {
    let document = |method: &str| {
        format!(
            "asyncapi: 3.0.0
info: {{title: events, version: '1'}}
channels:
  events: {{address: /events, messages: {{event: {{payload: {{type: object}}}}}}}}
operations:
  receiveEvents:
    action: receive
    channel: {{$ref: '#/channels/events'}}
    bindings:
      x-zilla-sse: {{method: {method}}}
"
        )
    };
    let spec = parse("sse.yaml", &document("GET")).unwrap();
    let sse = spec.operations["receiveEvents"].sse.as_ref().unwrap();
    assert_eq!(sse.method, Some(zilla_asyncapi::model::SseMethod::Get));
    let error = parse("sse.yaml", &document("POST"))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("sse.yaml:10:")
            && error.contains("operations.receiveEvents.bindings.x-zilla-sse")
            && error.contains("GET"),
        "{error}"
    );
}

#[test]
fn refusals_name_file_line_and_path() {
    let head = "asyncapi: 3.0.0\ninfo: {title: t, version: '1'}\n";
    assert_eq!(
        refusal("asyncapi: 3.1.0\n"),
        "doc.yaml:1:11: asyncapi: AsyncAPI 3.1.0 is not supported: 2.0 to 2.6 and 3.0 are"
    );
    assert_eq!(
        refusal("openapi: 3.0.0\n"),
        "doc.yaml:1:1: `asyncapi` is missing: not an AsyncAPI document"
    );
    assert_eq!(
        refusal(&format!(
            "{head}channels:\n  a:\n    address: a\n    messages:\n      m: {{$ref: '#/components/messages/none'}}\n"
        )),
        "doc.yaml:7:17: channels.a.messages.m.$ref: `$ref` `#/components/messages/none` points to nothing in the document"
    );
    assert_eq!(
        refusal(&format!(
            "{head}channels:\n  a: {{$ref: '#/channels/b'}}\n  b: {{$ref: '#/channels/a'}}\n"
        )),
        "doc.yaml:4:6: channels.a: `$ref` cycle: #/channels/b -> #/channels/a -> #/channels/b"
    );
    assert_eq!(
        refusal(&format!(
            "{head}channels:\n  a:\n    address: a\noperations:\n  o:\n    action: publish\n    channel: {{$ref: '#/channels/a'}}\n"
        )),
        "doc.yaml:8:13: operations.o.action: `action` is `send` or `receive`, not `publish`"
    );
    assert_eq!(
        refusal(&format!(
            "{head}channels:\n  a:\n    address: a\n    messages:\n      m:\n        payload: {{$ref: 'schemas.yaml#/Pet'}}\n"
        )),
        "doc.yaml:8:25: channels.a.messages.m.payload.$ref: `$ref` `schemas.yaml#/Pet` points outside the document; only references within it (`#/...`) are supported"
    );
    let error = refusal(&format!(
        "{head}operations:\n  o:\n    action: send\n    channel: {{$ref: '#/channels/a'}}\n    bindings:\n      x-zilla-http: {{}}\n"
    ));
    assert!(
        error.starts_with(
            "doc.yaml:8:21: operations.o.bindings.x-zilla-http: `x-zilla-http` not supported here"
        ),
        "{error}"
    );
    let error = refusal(&format!(
        "{head}channels:\n  a:\n    address: a\noperations:\n  o:\n    action: receive\n    channel: {{$ref: '#/channels/a'}}\n    bindings:\n      x-zilla-sse-kafka: {{filters: [{{topic: t}}]}}\n"
    ));
    assert!(
        error.starts_with(
            "doc.yaml:11:26: operations.o.bindings.x-zilla-sse-kafka: unknown field `topic`"
        ),
        "{error}"
    );
    assert_eq!(
        refusal("asyncapi: 3.0.0\nchannels: [a]\n"),
        "doc.yaml:2:11: channels: expected a mapping"
    );
    assert!(refusal("asyncapi: 3.0.0\n---\nasyncapi: 3.0.0\n").contains("one YAML document"));
    assert!(refusal("asyncapi: [unclosed\n").contains("malformed YAML"));
}

/// Text that looks like AsyncAPI: keys and values of the vocabulary, `$ref`s among them.
fn document() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec![
        "asyncapi",
        "3.0.0",
        "2.6.0",
        "servers",
        "channels",
        "operations",
        "components",
        "messages",
        "payload",
        "address",
        "action",
        "send",
        "receive",
        "channel",
        "$ref",
        "'#/channels/a'",
        "'#/components/messages/m'",
        "'#'",
        "host",
        "protocol",
        "mqtt",
        "bindings",
        "kafka",
        "topic",
        "x-zilla-sse",
        "traits",
        "a",
        "m",
        "schemaFormat",
        "oneOf",
        "publish",
        "subscribe",
        "message",
        "url",
        "'{port}'",
        "variables",
        "default",
    ]);
    let line = (
        0usize..4,
        word.clone(),
        prop::option::of(word),
        any::<bool>(),
    )
        .prop_map(|(indent, key, value, list)| {
            let pad = "  ".repeat(indent);
            let dash = if list { "- " } else { "" };
            match value {
                Some(value) => format!("{pad}{dash}{key}: {value}\n"),
                None => format!("{pad}{dash}{key}:\n"),
            }
        });
    prop::collection::vec(line, 0..40).prop_map(|lines| lines.concat())
}

proptest! {
    #[test]
    fn arbitrary_text_is_parsed_or_refused(text in any::<String>()) {
        let _ = parse("any.yaml", &text);
    }

    #[test]
    fn asyncapi_shaped_text_is_parsed_or_refused_with_a_position(text in document()) {
        if let Err(error) = parse("shaped.yaml", &text) {
            prop_assert!(error.position.line >= 1, "{error}");
            prop_assert!(error.to_string().starts_with("shaped.yaml:"), "{error}");
        }
    }
}
