//! The core models (`string`, `int32`, ...) on an http server's `requests`, through the real
//! binary, driven by `curl`: a header, path or query value its model refuses is answered
//! `400` and raises `MODEL_CORE_VALIDATION_FAILED`; valid requests reach the exit (echo).

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zilla_tests::{Gateway, Peer};

const CONFIG: &str = r#"
name: models
bindings:
  web_tcp:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: web_http
  web_http:
    type: http
    kind: server
    options:
      requests:
        - path: /items/{id}
          headers:
            x-tenant:
              model: string
              pattern: "[a-z]+"
              maxLength: 8
          params:
            path:
              id:
                model: int32
                range: "[1,)"
            query:
              limit:
                model: int32
                range: "[1,100]"
                multiple: 10
              ratio:
                model: double
                range: "[0,1]"
                validate: lenient
    exit: echo_server
  echo_server:
    type: echo
    kind: server
telemetry:
  exporters:
    events_to_stdout:
      type: stdout
"#;

/// The status curl saw.
fn status(args: &[&str]) -> Result<u16> {
    let output = Peer::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(args)
        .timeout(Duration::from_secs(30))
        .run()?;
    ensure!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("no status")
}

#[test]
fn core_models_check_headers_and_parameters() -> Result<()> {
    let mut gateway = Gateway::start(CONFIG)?;
    let base = format!("http://{}", gateway.address("web_tcp"));
    let url = |path: &str| format!("{base}{path}");
    let tenant = |value: &str| format!("x-tenant: {value}");

    for valid in [
        "/items/1",
        "/items/42?limit=20",
        "/items/7?limit=100&ratio=0.5",
    ] {
        assert_eq!(
            status(&["-H", &tenant("acme"), &url(valid)])?,
            200,
            "{valid}"
        );
    }
    // Lenient: out of range is let through (and reported), not-a-number is not.
    assert_eq!(status(&[&url("/items/1?ratio=7.5")])?, 200);
    assert_eq!(status(&[&url("/items/1?ratio=half")])?, 400);
    for invalid in [
        "/items/0",
        "/items/abc",
        "/items/99999999999",
        "/items/1?limit=0",
        "/items/1?limit=101",
        "/items/1?limit=15",
        "/items/1?limit=ten",
    ] {
        assert_eq!(status(&[&url(invalid)])?, 400, "{invalid}");
    }
    for header in ["ACME", "acme-corp", "abcdefghi"] {
        assert_eq!(
            status(&["-H", &tenant(header), &url("/items/1")])?,
            400,
            "{header}"
        );
    }
    // Paths no entry matches are not checked.
    assert_eq!(status(&[&url("/other/abc")])?, 200);
    gateway.wait_for_stdout("MODEL_CORE_VALIDATION_FAILED", Duration::from_secs(10))?;
    let events = gateway.stdout();
    assert!(events.contains("int32: out of range"), "{events}");
    assert!(events.contains("double: out of range"), "{events}");
    assert!(
        events.contains("string: does not match the pattern"),
        "{events}"
    );
    assert!(gateway.terminate()?.success());
    Ok(())
}

/// A client's `requests[].responses` in the shape of Zilla's `http.json.schema`: nginx serves
/// `valid.json`, `invalid.json` (an extra property the schema forbids) and `oversized.json`
/// behind an http client whose responses are checked against an inline JSON schema; curl
/// asks through an http server in front. A valid response passes byte for byte; an invalid
/// one becomes `502`, as does a response header its model refuses; a `404` with `text/plain`
/// is checked by its own (`string`) model.
#[test]
fn a_client_validates_origin_responses_against_their_models() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root)?;
    let valid = r#"{"id":42,"status":"Active"}"#;
    std::fs::write(root.join("valid.json"), valid)?;
    std::fs::write(root.join("numbered.json"), valid)?;
    std::fs::write(root.join("lettered.json"), valid)?;
    std::fs::write(
        root.join("invalid.json"),
        r#"{"id":42,"status":"Active","extra":true}"#,
    )?;
    std::fs::write(
        root.join("charset.json"),
        r#"{"id":"not a number","status":"Active"}"#,
    )?;
    // `charset.json` comes with parameters on its content type, which must not carry it past
    // the model.
    let (_nginx, origin) = zilla_tests::nginx_with(
        &dir.path().join("nginx"),
        &root,
        "location = /charset.json { default_type 'application/json; charset=utf-8'; }
         location = /numbered.json { add_header x-version 7; }
         location = /lettered.json { add_header x-version seven; }
         location = /gone { default_type text/plain; return 404 'gone'; }
         location = /gone-for-good { default_type text/plain; return 404 'gone for good'; }",
    )?;
    let response = |path: &str| {
        format!(
            "        - path: {path}
          method: GET
          content-type: [application/json, text/plain]
          responses:
            - status: 200
              content-type: [application/json]
              headers:
                x-version:
                  model: int32
              content:
                model: json
                catalog:
                  schemas:
                    - subject: item
            - status: [401, 404]
              content-type: [text/plain]
              content:
                model: string
                maxLength: 4
"
        )
    };
    let config = format!(
        r#"
name: responses
catalogs:
  schemas:
    type: inline
    options:
      subjects:
        item:
          schema: |
            {{"type": "object",
             "properties": {{"id": {{"type": "integer"}}, "status": {{"type": "string"}}}},
             "required": ["id", "status"],
             "additionalProperties": false}}
bindings:
  web_tcp:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: web_http
  web_http:
    type: http
    kind: server
    exit: origin_http
  origin_http:
    type: http
    kind: client
    options:
      versions: [http/1.1]
      requests:
{valid}{invalid}{charset}{missing}{gone}{gone_for_good}{numbered}{lettered}    exit: origin_tcp
  origin_tcp:
    type: tcp
    kind: client
    options:
      host: 127.0.0.1
      port: {origin}
"#,
        valid = response("/valid.json"),
        invalid = response("/invalid.json"),
        charset = response("/charset.json"),
        missing = response("/missing.json"),
        gone = response("/gone"),
        gone_for_good = response("/gone-for-good"),
        numbered = response("/numbered.json"),
        lettered = response("/lettered.json"),
    );
    let mut gateway = Gateway::start(&config)?;
    let base = format!("http://{}", gateway.address("web_tcp"));
    let body = Peer::new("curl")
        .args(["-sS", "--max-time", "20", &format!("{base}/valid.json")])
        .timeout(Duration::from_secs(30))
        .run()?;
    assert_eq!(String::from_utf8_lossy(&body.stdout), valid);
    assert_eq!(status(&[&format!("{base}/valid.json")])?, 200);
    assert_eq!(status(&[&format!("{base}/invalid.json")])?, 502);
    assert_eq!(status(&[&format!("{base}/charset.json")])?, 502);
    // nginx's 404 page is `text/html`, which no entry names: it passes unchecked.
    assert_eq!(status(&[&format!("{base}/missing.json")])?, 404);
    // A response header is checked by its model.
    assert_eq!(status(&[&format!("{base}/numbered.json")])?, 200);
    assert_eq!(status(&[&format!("{base}/lettered.json")])?, 502);
    // A `404` in `text/plain` is checked by the `string` model of its entry.
    assert_eq!(status(&[&format!("{base}/gone")])?, 404);
    assert_eq!(status(&[&format!("{base}/gone-for-good")])?, 502);
    assert!(gateway.terminate()?.success());
    Ok(())
}
