//! The http-filesystem and filesystem bindings end to end: a `tcp` → `http` → `http-filesystem`
//! → `filesystem` pipeline built by the engine from a config, driven by the real `curl`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use zilla_engine::properties::Properties;
use zilla_engine::{Engine, Registry};

const INDEX: &str = "<html>\n<head><title>Welcome</title></head>\n<body>Hello</body>\n</html>\n";

fn registry() -> Registry {
    let mut registry = Registry::new();
    zilla_binding_tcp::register(&mut registry);
    zilla_binding_http::register(&mut registry);
    zilla_binding_http_filesystem::register(&mut registry);
    zilla_binding_filesystem::register(&mut registry);
    registry
}

/// A served directory `www` inside a temporary directory that also holds a file outside it.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir_all(www.join("css")).unwrap();
        std::fs::write(www.join("index.html"), INDEX).unwrap();
        std::fs::write(www.join("css/site.css"), "body { color: black }\n").unwrap();
        std::fs::write(www.join("data.json"), "{\"a\":1}\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), www.join("link.txt")).unwrap();
        std::os::unix::fs::symlink("index.html", www.join("alias.html")).unwrap();
        Self { dir }
    }

    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }
}

fn config(location: &str, mapping_routes: &str) -> String {
    format!(
        r#"
name: test
bindings:
  north_tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: north_http_server
  north_http_server:
    type: http
    kind: server
    routes:
      - when:
          - headers:
              :scheme: http
        exit: east_http_filesystem_mapping
  east_http_filesystem_mapping:
    type: http-filesystem
    kind: proxy
    routes:
{mapping_routes}
  east_filesystem_server:
    type: filesystem
    kind: server
    options:
      location: {location}
"#
    )
}

const DYNAMIC_ROUTE: &str = r#"      - when:
          - path: /{path}
        exit: east_filesystem_server
        with:
          path: ${params.path}"#;

/// A running engine and the address its tcp server listens on.
struct Gateway {
    engine: Engine,
    address: SocketAddr,
}

impl Gateway {
    fn start(yaml: &str, properties: Properties) -> Self {
        let engine = Engine::new(registry(), properties);
        let config = engine
            .load(Path::new("zilla.yaml"), yaml)
            .unwrap_or_else(|errors| panic!("{errors}"));
        engine
            .apply(config)
            .unwrap_or_else(|errors| panic!("{errors}"));
        let address = engine
            .listening()
            .into_iter()
            .find(|(binding, _)| binding == "test:north_tcp_server")
            .map(|(_, address)| address)
            .expect("tcp server listening");
        Self { engine, address }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    async fn stop(self) {
        assert!(self.engine.shutdown(Duration::from_secs(5)).await);
    }
}

/// What curl saw.
#[derive(Debug)]
struct Exchange {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Exchange {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Runs `curl -s -i <args>` and parses the (last) response.
async fn curl(args: &[&str]) -> Exchange {
    let output = tokio::process::Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "20"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    assert!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let raw = output.stdout;
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Exchange {
        status,
        headers,
        body,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_serves_files_with_type_length_and_etag() {
    let site = Site::new();
    let gateway = Gateway::start(
        &config(site.www().to_str().unwrap(), DYNAMIC_ROUTE),
        Properties::default(),
    );

    let index = curl(&[&gateway.url("/index.html")]).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), Some("text/html"));
    assert_eq!(
        index.header("content-length"),
        Some(INDEX.len().to_string().as_str())
    );
    assert_eq!(index.body, INDEX.as_bytes());
    let etag = index.header("etag").expect("an etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "{etag}"
    );

    let again = curl(&[&gateway.url("/index.html")]).await;
    assert_eq!(again.header("etag"), Some(etag.as_str()), "stable etag");

    // `{path}` spans segments; the query is not part of the path.
    let css = curl(&[&gateway.url("/css/site.css?v=2")]).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css"));
    assert_eq!(css.body, b"body { color: black }\n");
    let json = curl(&[&gateway.url("/data.json")]).await;
    assert_eq!(json.header("content-type"), Some("application/json"));

    // HEAD: the same headers, no body.
    let head = curl(&["-I", &gateway.url("/index.html")]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/html"));
    assert_eq!(
        head.header("content-length"),
        Some(INDEX.len().to_string().as_str())
    );
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    assert!(head.body.is_empty());

    // HTTP/2 with prior knowledge reaches the same files.
    let h2 = curl(&["--http2-prior-knowledge", &gateway.url("/index.html")]).await;
    assert_eq!(h2.status, 200);
    assert_eq!(h2.body, INDEX.as_bytes());

    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_with_the_current_etag_is_not_modified() {
    let site = Site::new();
    let gateway = Gateway::start(
        &config(site.www().to_str().unwrap(), DYNAMIC_ROUTE),
        Properties::default(),
    );
    let url = gateway.url("/index.html");
    let etag = curl(&[&url]).await.header("etag").unwrap().to_owned();

    let cached = curl(&["-H", &format!("If-None-Match: {etag}"), &url]).await;
    assert_eq!(cached.status, 304);
    assert_eq!(cached.header("etag"), Some(etag.as_str()));
    assert!(cached.body.is_empty());

    // Bare (as Zilla sends them), weak and listed tags are recognised too.
    let bare = etag.trim_matches('"');
    for header in [
        format!("If-None-Match: {bare}"),
        format!("If-None-Match: W/{etag}"),
        format!("If-None-Match: \"other\", {etag}"),
        "If-None-Match: *".to_owned(),
    ] {
        let cached = curl(&["-H", &header, &url]).await;
        assert_eq!(cached.status, 304, "{header}");
    }

    let stale = curl(&["-H", "If-None-Match: \"stale\"", &url]).await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, INDEX.as_bytes());

    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_answers_with_the_new_content_when_the_file_changes() {
    let site = Site::new();
    let mut properties = Properties::default();
    properties.set(zilla_binding_filesystem::POLL_INTERVAL_PROPERTY, "50");
    let gateway = Gateway::start(
        &config(site.www().to_str().unwrap(), DYNAMIC_ROUTE),
        properties,
    );
    let url = gateway.url("/index.html");
    let etag = curl(&[&url]).await.header("etag").unwrap().to_owned();

    let started = Instant::now();
    let waiting = {
        let url = url.clone();
        let etag = etag.clone();
        tokio::spawn(async move {
            curl(&[
                "-H",
                &format!("If-None-Match: {etag}"),
                "-H",
                "Prefer: wait=2",
                &url,
            ])
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "the request waits for a change");
    let updated = "<html><body>Updated while you waited</body></html>\n";
    std::fs::write(site.www().join("index.html"), updated).unwrap();

    let changed = waiting.await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, updated.as_bytes());
    assert_eq!(
        changed.header("content-length"),
        Some(updated.len().to_string().as_str())
    );
    let new_etag = changed.header("etag").unwrap();
    assert_ne!(new_etag, etag);
    assert!(
        elapsed < Duration::from_secs(2),
        "answered on change, after {elapsed:?}"
    );

    // No change within the wait: 304 once it has passed.
    let started = Instant::now();
    let unchanged = curl(&[
        "-H",
        &format!("If-None-Match: {new_etag}"),
        "-H",
        "Prefer: wait=1",
        &url,
    ])
    .await;
    assert_eq!(unchanged.status, 304);
    assert_eq!(unchanged.header("etag"), Some(new_etag));
    assert!(started.elapsed() >= Duration::from_secs(1));

    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_files_escapes_and_links_are_not_found() {
    let site = Site::new();
    let gateway = Gateway::start(
        &config(site.www().to_str().unwrap(), DYNAMIC_ROUTE),
        Properties::default(),
    );
    for path in [
        "/missing.html",
        "/css",
        "/../secret.txt",
        "/css/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/link.txt",
        "/alias.html",
    ] {
        let exchange = curl(&["--path-as-is", &gateway.url(path)]).await;
        assert_eq!(exchange.status, 404, "{path}");
        assert_ne!(exchange.body, b"outside\n", "{path}");
    }
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_links_stay_inside_the_location() {
    let site = Site::new();
    let location = format!("{}\n      symlinks: follow", site.www().display());
    let gateway = Gateway::start(&config(&location, DYNAMIC_ROUTE), Properties::default());
    let alias = curl(&[&gateway.url("/alias.html")]).await;
    assert_eq!(alias.status, 200);
    assert_eq!(alias.body, INDEX.as_bytes());
    let escape = curl(&[&gateway.url("/link.txt")]).await;
    assert_eq!(escape.status, 404);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_select_by_method_and_path_and_map_with_params() {
    let site = Site::new();
    let routes = r#"      - when:
          - method: GET
            path: /static/{name}
          - method: HEAD
            path: /static/{name}
        exit: east_filesystem_server
        with:
          directory: css
          path: ${params.name}
      - when:
          - path: /home
        exit: east_filesystem_server
        with:
          path: index.html"#;
    let gateway = Gateway::start(
        &config(site.www().to_str().unwrap(), routes),
        Properties::default(),
    );

    let css = curl(&[&gateway.url("/static/site.css")]).await;
    assert_eq!(css.status, 200);
    assert_eq!(css.body, b"body { color: black }\n");
    let home = curl(&[&gateway.url("/home")]).await;
    assert_eq!(home.body, INDEX.as_bytes());

    assert_eq!(
        curl(&[&gateway.url("/index.html")]).await.status,
        404,
        "no route"
    );
    let patch = curl(&["-X", "PATCH", "--data", "x", &gateway.url("/home")]).await;
    assert_eq!(patch.status, 405);
    assert_eq!(patch.header("allow"), Some("GET, HEAD, POST, PUT, DELETE"));
    let delete = curl(&["-X", "DELETE", &gateway.url("/static/site.css")]).await;
    assert_eq!(delete.status, 404, "no route for DELETE");

    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_locations_resolve_against_the_server_root_property() {
    let site = Site::new();
    let mut properties = Properties::default();
    properties.set(
        zilla_binding_filesystem::SERVER_ROOT_PROPERTY,
        site.dir.path().to_str().unwrap(),
    );
    let gateway = Gateway::start(&config("www", DYNAMIC_ROUTE), properties);
    let index = curl(&[&gateway.url("/index.html")]).await;
    assert_eq!(index.status, 200);
    assert_eq!(index.body, INDEX.as_bytes());
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_put_and_delete_write_files_with_preconditions() {
    let site = Site::new();
    let gateway = Gateway::start(
        &config(site.www().to_str().unwrap(), DYNAMIC_ROUTE),
        Properties::default(),
    );
    let url = gateway.url("/notes/today.txt");
    std::fs::create_dir(site.www().join("notes")).unwrap();

    // A body large enough for curl to ask `Expect: 100-continue`.
    let first = "first draft\n".repeat(200);
    let created = curl(&["-X", "POST", "--data-binary", &first, &url]).await;
    assert_eq!(created.status, 204);
    let etag = created.header("etag").expect("an etag").to_owned();
    assert_eq!(
        std::fs::read_to_string(site.www().join("notes/today.txt")).unwrap(),
        first
    );
    let read = curl(&[&url]).await;
    assert_eq!(read.header("etag"), Some(etag.as_str()));
    assert_eq!(read.header("content-type"), Some("text/plain"));

    let again = curl(&["-X", "POST", "--data-binary", "other", &url]).await;
    assert_eq!(again.status, 409);
    let nowhere = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "x",
        &gateway.url("/drafts/a.txt"),
    ])
    .await;
    assert_eq!(nowhere.status, 404);
    let escape = curl(&[
        "--path-as-is",
        "-X",
        "POST",
        "--data-binary",
        "x",
        &gateway.url("/../escape.txt"),
    ])
    .await;
    assert_eq!(escape.status, 404);
    assert!(!site.dir.path().join("escape.txt").exists());

    let untagged = curl(&["-X", "PUT", "--data-binary", "second", &url]).await;
    assert_eq!(untagged.status, 428);
    let stale = curl(&[
        "-X",
        "PUT",
        "-H",
        "If-Match: \"stale\"",
        "--data-binary",
        "second",
        &url,
    ])
    .await;
    assert_eq!(stale.status, 412);
    assert_eq!(
        std::fs::read_to_string(site.www().join("notes/today.txt")).unwrap(),
        first
    );

    let replaced = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("If-Match: {etag}"),
        "--data-binary",
        "second",
        &url,
    ])
    .await;
    assert_eq!(replaced.status, 204);
    let new_etag = replaced.header("etag").unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let read = curl(&[&url]).await;
    assert_eq!(read.body, b"second");
    assert_eq!(read.header("etag"), Some(new_etag.as_str()));

    let stale = curl(&["-X", "DELETE", "-H", &format!("If-Match: {etag}"), &url]).await;
    assert_eq!(stale.status, 412);
    let deleted = curl(&["-X", "DELETE", "-H", &format!("If-Match: {new_etag}"), &url]).await;
    assert_eq!(deleted.status, 204);
    assert!(!site.www().join("notes/today.txt").exists());
    assert_eq!(curl(&[&url]).await.status, 404);
    assert_eq!(curl(&["-X", "DELETE", &url]).await.status, 404);
    let names: Vec<_> = std::fs::read_dir(site.www().join("notes"))
        .unwrap()
        .collect();
    assert!(names.is_empty(), "no upload left behind: {names:?}");

    gateway.stop().await;
}

#[tokio::test]
async fn config_mistakes_are_reported_at_load() {
    let engine = Engine::new(registry(), Properties::default());
    let apply = |yaml: String| match engine.load(Path::new("zilla.yaml"), &yaml) {
        Err(errors) => errors.to_string(),
        Ok(config) => engine
            .apply(config)
            .map(|_| String::new())
            .unwrap_or_else(|e| e.to_string()),
    };

    let unknown_param = DYNAMIC_ROUTE.replace("${params.path}", "${params.nope}");
    let message = apply(config("/tmp", &unknown_param));
    assert!(
        message.contains("routes[0].with: `${params.nope}` is not captured"),
        "{message}"
    );

    let listing = DYNAMIC_ROUTE.replace("path: ${params.path}", "directory: ${params.path}");
    let message = apply(config("/tmp", &listing));
    assert!(message.contains("listing a directory"), "{message}");

    let unknown_key = DYNAMIC_ROUTE.replace("path: ${params.path}", "topic: x");
    let message = apply(config("/tmp", &unknown_key));
    assert!(
        message.contains("routes[0].with.topic: unknown key"),
        "{message}"
    );

    let no_location =
        config("/tmp", DYNAMIC_ROUTE).replace("      location: /tmp\n", "      symlinks: follow\n");
    let message = apply(no_location);
    assert!(
        message.contains("east_filesystem_server.options: missing `location`"),
        "{message}"
    );

    let bad_symlinks = config("/tmp", DYNAMIC_ROUTE).replace(
        "location: /tmp",
        "location: /tmp\n      symlinks: sometimes",
    );
    let message = apply(bad_symlinks);
    assert!(
        message.contains("east_filesystem_server.options.symlinks"),
        "{message}"
    );
}
