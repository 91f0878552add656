use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A registry answering the REST subset from a fixed table, counting requests; `up` turns
/// it off (connections are then closed unanswered).
struct TestRegistry {
    url: String,
    requests: Arc<AtomicUsize>,
    up: Arc<AtomicBool>,
    latest: Arc<Mutex<(u32, String)>>,
}

const SCHEMA_1: &str = r#"{"type":"string"}"#;
const SCHEMA_2: &str = r#"{"type":"long"}"#;

fn registry(delay: Duration) -> TestRegistry {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let up = Arc::new(AtomicBool::new(true));
    let latest = Arc::new(Mutex::new((1u32, SCHEMA_1.to_owned())));
    let (count, running, current) = (requests.clone(), up.clone(), latest.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (count, running, current) = (count.clone(), running.clone(), current.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                }
                if !running.load(Ordering::SeqCst) {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(delay);
                let path = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let (latest_id, latest_schema) = current.lock().unwrap().clone();
                let (status, body) = match path.as_str() {
                    "/subjects/items-value/versions/latest" => (
                        "200 OK",
                        serde_json::json!({"subject": "items-value", "version": latest_id, "id": latest_id, "schema": latest_schema}),
                    ),
                    "/subjects/%3A.ctx%3Aitems-value/versions/1" => (
                        "200 OK",
                        serde_json::json!({"subject": ":.ctx:items-value", "version": 1, "id": 1, "schema": SCHEMA_1}),
                    ),
                    "/schemas/ids/1" => ("200 OK", serde_json::json!({"schema": SCHEMA_1})),
                    "/schemas/ids/2" => ("200 OK", serde_json::json!({"schema": SCHEMA_2})),
                    _ => (
                        "404 Not Found",
                        serde_json::json!({"error_code": 40401, "message": "Subject not found"}),
                    ),
                };
                let body = body.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    TestRegistry {
        url,
        requests,
        up,
        latest,
    }
}

fn catalog(url: &str, max_age: u64, context: Option<&str>) -> SchemaRegistryCatalog {
    SchemaRegistryCatalog::new(
        "test:registry0",
        &SchemaRegistryOptions {
            url: url.to_owned(),
            context: context.map(str::to_owned),
            max_age: Some(max_age),
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn subjects_and_ids_resolve_and_are_cached() {
    let registry = registry(Duration::ZERO);
    let catalog = catalog(&registry.url, 300, None);
    assert_eq!(catalog.resolve_subject("items-value", "latest"), Ok(1));
    // The subject's answer carried the schema: no second request for it.
    assert_eq!(catalog.schema(1).unwrap().as_ref(), SCHEMA_1);
    assert_eq!(registry.requests.load(Ordering::SeqCst), 1);
    assert_eq!(catalog.schema(2).unwrap().as_ref(), SCHEMA_2);
    assert_eq!(catalog.schema(2).unwrap().as_ref(), SCHEMA_2);
    assert_eq!(catalog.resolve_subject("items-value", "latest"), Ok(1));
    assert_eq!(registry.requests.load(Ordering::SeqCst), 2);
    let missing = catalog.resolve_subject("nope", "latest").unwrap_err();
    assert!(missing.contains("404"), "{missing}");
    assert!(missing.contains("Subject not found"), "{missing}");
    assert!(catalog.schema(9).is_err());
}

#[test]
fn contexts_qualify_subjects() {
    let registry = registry(Duration::ZERO);
    let catalog = catalog(&registry.url, 300, Some("ctx"));
    assert_eq!(catalog.resolve_subject("items-value", "1"), Ok(1));
    let default = self::catalog(&registry.url, 300, Some("default"));
    assert_eq!(default.resolve_subject("items-value", "latest"), Ok(1));
}

#[test]
fn a_new_id_is_fetched_once_for_concurrent_askers() {
    let registry = registry(Duration::from_millis(300));
    let catalog = Arc::new(catalog(&registry.url, 300, None));
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let catalog = catalog.clone();
            std::thread::spawn(move || catalog.schema(2))
        })
        .collect();
    for asker in askers {
        assert_eq!(asker.join().unwrap().unwrap().as_ref(), SCHEMA_2);
    }
    assert_eq!(registry.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn a_slow_registry_is_waited_for_a_bounded_time() {
    let registry = registry(WIRE_WAIT + Duration::from_secs(1));
    let catalog = catalog(&registry.url, 300, None);
    let error = catalog.schema(2).unwrap_err();
    assert!(error.contains("no answer within"), "{error}");
}

#[test]
fn stale_subjects_keep_serving_while_refreshed_and_when_the_registry_is_down() {
    let registry = registry(Duration::ZERO);
    let catalog = catalog(&registry.url, 0, None);
    assert_eq!(catalog.resolve_subject("items-value", "latest"), Ok(1));
    // A new latest version: the stale answer is served at once, the refresh lands after.
    *registry.latest.lock().unwrap() = (2, SCHEMA_2.to_owned());
    assert_eq!(catalog.resolve_subject("items-value", "latest"), Ok(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cached = catalog
            .learnt
            .subjects
            .lock()
            .unwrap()
            .get(&("items-value".to_owned(), "latest".to_owned()))
            .map(|resolution| resolution.id);
        if cached == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the refresh never landed");
        std::thread::sleep(Duration::from_millis(20));
    }
    registry.up.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(catalog.resolve_subject("items-value", "latest"), Ok(2));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(catalog.schema(2).unwrap().as_ref(), SCHEMA_2);
}

/// Events raised, by name and message.
#[derive(Default)]
struct Collected(Mutex<Vec<(&'static str, String)>>);

impl zilla_engine::events::Exporter for Collected {
    fn event(&self, event: &zilla_engine::events::Event) {
        self.0
            .lock()
            .unwrap()
            .push((event.name, event.message.clone()));
    }
}

fn with_events(catalog: SchemaRegistryCatalog) -> (SchemaRegistryCatalog, Arc<Collected>) {
    let collected = Arc::new(Collected::default());
    let events = Events::default().named("test:registry0");
    events.set_exporters(vec![collected.clone()]);
    (catalog.with_events(events), collected)
}

#[test]
fn an_unretrievable_id_raises_one_event_and_is_refused_at_once_until_retried() {
    let registry = registry(Duration::ZERO);
    let (catalog, events) = with_events(catalog(&registry.url, 300, None));
    assert_eq!(catalog.schema(1).unwrap().as_ref(), SCHEMA_1);
    registry.up.store(false, Ordering::SeqCst);
    let error = catalog.schema(2).unwrap_err();
    assert!(error.contains(&registry.url), "{error}");
    // Asked again within `RETRY_AFTER`: refused at once, no second event.
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(catalog.schema(2).unwrap_err(), error);
        assert!(catalog.fetch(2).is_none());
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    let raised = events.0.lock().unwrap().clone();
    assert_eq!(raised.len(), 1, "{raised:?}");
    assert_eq!(raised[0].0, UNRETRIEVABLE_SCHEMA_ID);
    assert!(
        raised[0].1.starts_with("Unable to fetch schema id 2"),
        "{raised:?}"
    );
    assert!(raised[0].1.contains(&registry.url), "{raised:?}");
    assert!(raised[0].1.contains("test:registry0"), "{raised:?}");
    // The cached schema keeps serving.
    assert_eq!(catalog.schema(1).unwrap().as_ref(), SCHEMA_1);
}

#[test]
fn a_fetch_is_awaited_without_holding_the_thread() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A registry slower than the wait: the fetch gives up after `WIRE_WAIT`, and the
    // thread runs other tasks all the while.
    let slow = registry(WIRE_WAIT + Duration::from_secs(1));
    let (catalog, events) = with_events(catalog(&slow.url, 300, None));
    let ticks = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let counting = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counting.fetch_add(1, Ordering::SeqCst);
            }
        });
        catalog.fetch(2).expect("not cached").await;
        ticker.abort();
    });
    let waited = started.elapsed();
    assert!(
        waited >= WIRE_WAIT && waited < WIRE_WAIT + Duration::from_millis(500),
        "{waited:?}"
    );
    assert!(ticks.load(Ordering::SeqCst) > 100, "the thread was held");
    let started = Instant::now();
    let error = catalog.schema(2).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(error.contains("no answer within"), "{error}");
    assert_eq!(events.0.lock().unwrap().len(), 1);

    // From a registry that answers, the fetched schema is cached: one request in all.
    let fast = registry(Duration::ZERO);
    let catalog = self::catalog(&fast.url, 300, None);
    runtime.block_on(async {
        let fetches: Vec<_> = (0..4).filter_map(|_| catalog.fetch(2)).collect();
        assert_eq!(fetches.len(), 4);
        for fetch in fetches {
            fetch.await;
        }
    });
    assert!(catalog.fetch(2).is_none());
    assert_eq!(catalog.schema(2).unwrap().as_ref(), SCHEMA_2);
    assert_eq!(fast.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn an_unreachable_registry_is_named_in_the_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let catalog = catalog(&url, 300, None);
    let error = catalog
        .resolve_subject("items-value", "latest")
        .unwrap_err();
    assert!(error.contains(&url), "{error}");
    assert!(error.contains("test:registry0"), "{error}");
}

#[test]
fn the_confluent_prefix_is_written_and_read() {
    let catalog = catalog("http://127.0.0.1:1", 300, None);
    assert_eq!(catalog.prefix(0x0102_0304), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        catalog.unprefix(&[0, 0, 0, 0, 7, 0xaa]).unwrap(),
        Some((7, &[0xaa][..]))
    );
    assert!(catalog.unprefix(&[1, 0, 0, 0, 7]).is_err());
    assert!(catalog.unprefix(&[0, 0, 0]).is_err());
}

#[test]
fn bad_options_are_load_errors() {
    let build = |options: serde_json::Value| {
        let options: SchemaRegistryOptions = serde_json::from_value(options).unwrap();
        SchemaRegistryCatalog::new("test:registry0", &options).map(|_| ())
    };
    assert!(build(serde_json::json!({"url": "https://registry:8081"})).is_ok());
    let error = build(serde_json::json!({"url": "http://h:1", "tls": {}})).unwrap_err();
    assert_eq!(error.path, "options.tls");
    let error = build(serde_json::json!({"url": "ftp://h"})).unwrap_err();
    assert_eq!(error.path, "options.url");
    let error =
        build(serde_json::json!({"url": "http://h:1", "credentials": {"headers": {"x-key": "v"}}}))
            .unwrap_err();
    assert!(error.message.contains("only `authorization`"), "{error}");
    build(serde_json::json!({"url": "http://h:1", "credentials": {"headers": {"authorization": "Basic eDp5"}}}))
        .unwrap();
    assert!(
        serde_json::from_value::<SchemaRegistryOptions>(
            serde_json::json!({"url": "http://h", "maxAge": 1})
        )
        .is_err()
    );
}

proptest::proptest! {
    #[test]
    fn prefixes_round_trip(id in proptest::prelude::any::<u32>(), payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)) {
        let catalog = catalog("http://127.0.0.1:1", 300, None);
        let mut framed = catalog.prefix(id);
        framed.extend_from_slice(&payload);
        let (read_id, rest) = catalog.unprefix(&framed).unwrap().unwrap();
        proptest::prop_assert_eq!(read_id, id);
        proptest::prop_assert_eq!(rest, &payload[..]);
    }
}
