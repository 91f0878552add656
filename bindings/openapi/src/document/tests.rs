use super::*;

const PETSTORE: &str = r##"openapi: 3.0.3
info: {title: pets, version: "1"}
servers:
  - url: http://localhost:{port}/v1
    variables:
      port: {default: "9090"}
paths:
  /pets/{id}:
    parameters:
      - $ref: '#/components/parameters/id'
    get:
      operationId: showPet
      tags: [pets]
      security:
        - bearer: [read]
  /pets:
    post:
      operationId: createPet
      requestBody:
        $ref: '#/components/requestBodies/pet'
components:
  parameters:
    id:
      name: id
      in: path
      required: true
      schema: {type: integer, minimum: 1}
  requestBodies:
    pet:
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Pet'}
  schemas:
    Pet:
      type: object
      properties:
        tag: {type: string, nullable: true}
  securitySchemes:
    bearer: {type: http, scheme: bearer}
"##;

#[test]
fn reads_servers_operations_parameters_and_bodies_through_refs() {
    let document = parse("c/petstore", PETSTORE).unwrap();
    assert_eq!(document.version, Version::V30);
    assert_eq!(document.servers, ["http://localhost:9090/v1"]);
    let show = &document.operations[0];
    assert_eq!(show.id.as_deref(), Some("showPet"));
    assert_eq!(
        (show.method.as_str(), show.path.as_str()),
        ("GET", "/pets/{id}")
    );
    assert_eq!(show.parameters[0].name, "id");
    assert_eq!(show.parameters[0].schema.as_ref().unwrap()["minimum"], 1);
    assert_eq!(show.security[0]["bearer"], ["read"]);
    let create = &document.operations[1];
    assert_eq!(create.body[0].0, "application/json");
    assert_eq!(
        document.schemas["Pet"]["properties"]["tag"]["type"],
        serde_json::json!(["string", "null"])
    );
}

#[test]
fn problems_are_located_in_the_document() {
    let text = PETSTORE.replace(
        "$ref: '#/components/parameters/id'",
        "$ref: 'other.yaml#/id'",
    );
    let error = parse("c/petstore", &text).unwrap_err();
    assert!(
        error.starts_with("c/petstore:10:15: paths./pets/{id}.parameters[0].$ref: `other.yaml#/id` refers to another document"),
        "{error}"
    );
    let error = parse("c/petstore", "swagger: '2.0'\n").unwrap_err();
    assert!(
        error.starts_with("c/petstore:1:10: swagger: Swagger 2.0"),
        "{error}"
    );
    let text = PETSTORE.replace("in: path", "in: cookie");
    let error = parse("c/petstore", &text).unwrap_err();
    assert!(
        error.contains("components.parameters.id.in") || error.contains("parameters[0].in"),
        "{error}"
    );
    assert!(error.contains("`cookie` are not supported yet"), "{error}");
    let error = parse(
        "c/x",
        "openapi: 3.0.0\npaths:\n  /a:\n    get:\n      operationId: [x]\n",
    )
    .unwrap_err();
    assert!(
        error.starts_with("c/x:5:20: paths./a.get.operationId: expected a string"),
        "{error}"
    );
}

#[test]
fn json_schemas_carry_the_dialect_and_the_components() {
    let document = parse("c/petstore", PETSTORE).unwrap();
    let schema = document.json_schema(&serde_json::json!({"$ref": "#/components/schemas/Pet"}));
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-04/schema#");
    assert!(schema.pointer("/components/schemas/Pet").is_some());
    let v31 = parse("c/x", "openapi: 3.1.0\n").unwrap();
    assert_eq!(
        v31.json_schema(&serde_json::json!(true))["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}
