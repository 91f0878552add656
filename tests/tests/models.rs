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
