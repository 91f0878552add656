//! Metrics through the real binary: the `examples/http.metrics` config (Zilla's shape) scraped by
//! a real Prometheus, whose query API must show every metric family with the expected labels
//! and values; the plain-text exposition checked by `promtool`; and `zilla metrics` showing
//! the same counts.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use zilla_tests::{Gateway, Peer, free_port, workspace_dir};

const REQUEST_BODY: &str = "Hello, Zilla!";
const POSTS: usize = 5;
const GETS: usize = 3;

/// The example with its fixed ports swapped for free ones.
fn example(metrics_port: u16) -> Result<String> {
    let path = workspace_dir().join("examples/http.metrics/zilla.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    ensure!(text.contains("port: 7114") && text.contains("port: 7190"));
    Ok(text
        .replace("host: 0.0.0.0", "host: 127.0.0.1")
        .replace("port: 7114", "port: 0")
        .replace("port: 7190", &format!("port: {metrics_port}")))
}

fn curl(args: &[&str]) -> Result<String> {
    let output = Peer::new("curl")
        .args(["-sS", "--fail", "--max-time", "20"])
        .args(args)
        .timeout(Duration::from_secs(30))
        .run()?;
    ensure!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A Prometheus server scraping `target` every second, with its storage in `dir`.
fn prometheus(dir: &Path, target: &str) -> Result<(zilla_tests::Process, u16)> {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: zilla\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )?;
    let port = free_port()?;
    let process = Peer::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .spawn()?;
    Ok((process, port))
}

/// The result vector of an instant query.
fn query(prometheus: u16, promql: &str) -> Result<Vec<Value>> {
    let body = curl(&[
        &format!("http://127.0.0.1:{prometheus}/api/v1/query"),
        "--data-urlencode",
        &format!("query={promql}"),
    ])?;
    let reply: Value = serde_json::from_str(&body)?;
    ensure!(reply["status"] == "success", "{promql}: {body}");
    Ok(reply["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The single value `promql` yields.
fn value(prometheus: u16, promql: &str) -> Result<f64> {
    let result = query(prometheus, promql)?;
    ensure!(
        result.len() == 1,
        "{promql}: expected one series, got {result:?}"
    );
    let text = result[0]["value"][1].as_str().context("no value")?;
    Ok(text.parse()?)
}

/// Waits until `promql` yields `expected`: Prometheus has scraped after the traffic.
fn wait_for(prometheus: u16, promql: &str, expected: f64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = query(prometheus, promql).ok().and_then(|result| {
            let value = result.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
            (result.len() == 1).then_some(value)
        });
        if seen == Some(expected) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{promql}: still {seen:?}, expected {expected}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn prometheus_scrapes_the_http_metrics_example() -> Result<()> {
    let metrics_port = free_port()?;
    let mut gateway = Gateway::start(&example(metrics_port)?)?;
    let address = gateway.address("north_tcp_server");
    let base = format!("http://{address}");
    for _ in 0..POSTS {
        let echoed = curl(&["-d", REQUEST_BODY, &format!("{base}/items")])?;
        assert_eq!(echoed, REQUEST_BODY);
    }
    for _ in 0..GETS {
        curl(&[&format!("{base}/health")])?;
    }

    let dir = tempfile::tempdir()?;
    let (mut server, port) = prometheus(dir.path(), &format!("127.0.0.1:{metrics_port}"))?;
    let labels = "namespace=\"example\",binding=\"north_http_server\"";
    let posts = format!("{labels},method=\"POST\",path=\"/items\"");
    let gets = format!("{labels},method=\"GET\",path=\"/health\"");
    let result = (|| -> Result<()> {
        wait_for(
            port,
            &format!("http_request_size_bytes_count{{{posts}}}"),
            POSTS as f64,
        )?;
        // The target is healthy: Prometheus parsed every scrape.
        let targets = curl(&[&format!("http://127.0.0.1:{port}/api/v1/targets")])?;
        let targets: Value = serde_json::from_str(&targets)?;
        let target = &targets["data"]["activeTargets"][0];
        assert_eq!(target["health"], "up", "{target}");
        assert_eq!(target["lastError"], "", "{target}");

        let size = REQUEST_BODY.len() as f64;
        let check = |promql: String, expected: f64| -> Result<()> {
            let seen = value(port, &promql)?;
            ensure!(seen == expected, "{promql}: {seen}, expected {expected}");
            Ok(())
        };
        // Request sizes, labelled by method and path; 13 bytes lie in the (8, 16] bucket.
        check(
            format!("http_request_size_bytes_sum{{{posts}}}"),
            POSTS as f64 * size,
        )?;
        check(
            format!("http_request_size_bytes_count{{{gets}}}"),
            GETS as f64,
        )?;
        check(format!("http_request_size_bytes_sum{{{gets}}}"), 0.0)?;
        check(
            format!("http_request_size_bytes_bucket{{{posts},le=~\"8(\\\\.0)?\"}}"),
            0.0,
        )?;
        check(
            format!("http_request_size_bytes_bucket{{{posts},le=~\"16(\\\\.0)?\"}}"),
            POSTS as f64,
        )?;
        check(
            format!("http_request_size_bytes_bucket{{{posts},le=\"+Inf\"}}"),
            POSTS as f64,
        )?;
        // Response sizes carry response attributes only (none here), as in Zilla.
        check(
            format!("http_response_size_bytes_count{{{labels}}}"),
            (POSTS + GETS) as f64,
        )?;
        check(
            format!("http_response_size_bytes_sum{{{labels}}}"),
            POSTS as f64 * size,
        )?;
        // Every request finished.
        check(format!("http_active_requests{{{posts}}}"), 0.0)?;
        check(format!("http_active_requests{{{gets}}}"), 0.0)?;
        // Durations, in milliseconds: one per request; each well under the 2^62 ms bucket.
        check(
            format!("http_duration_milliseconds_count{{{posts}}}"),
            POSTS as f64,
        )?;
        check(
            format!("http_duration_milliseconds_bucket{{{posts},le=\"+Inf\"}}"),
            POSTS as f64,
        )?;
        check(
            format!("http_duration_milliseconds_bucket{{{posts},le=~\"1024(\\\\.0)?\"}}"),
            POSTS as f64,
        )?;
        // The tcp binding's streams: one connection per curl, each closed.
        let tcp = "namespace=\"example\",binding=\"north_tcp_server\"";
        check(
            format!("stream_opens_sent_total{{{tcp}}}"),
            (POSTS + GETS) as f64,
        )?;
        check(format!("stream_active_sent{{{tcp}}}"), 0.0)?;
        let data = value(port, &format!("stream_data_sent_bytes_total{{{tcp}}}"))?;
        ensure!(
            data >= POSTS as f64 * size,
            "stream_data_sent_bytes_total: {data}"
        );
        // Every family, and nothing labelled without namespace and binding.
        for family in [
            "http_request_size_bytes_count",
            "http_response_size_bytes_count",
            "http_active_requests",
            "http_duration_milliseconds_count",
            "stream_opens_sent_total",
            "stream_data_sent_bytes_total",
            "stream_active_sent",
        ] {
            let series = query(port, &format!("{family}{{job=\"zilla\"}}"))?;
            ensure!(!series.is_empty(), "{family} missing");
            for one in &series {
                ensure!(one["metric"]["namespace"] == "example", "{one}");
            }
        }
        Ok(())
    })();
    server.kill();
    result?;

    // The plain-text exposition (Zilla's, for clients without OpenMetrics) passes promtool.
    let text = curl(&[&format!("http://127.0.0.1:{metrics_port}/metrics")])?;
    assert!(
        text.contains(&format!(
            "http_request_size_bytes_count{{{posts}}} {POSTS}\n"
        )),
        "{text}"
    );
    let checked = Peer::new("promtool")
        .args(["check", "metrics"])
        .stdin(text.clone())
        .run()?;
    // promtool parses strictly (exit 1 on any format error) and then lints (exit 3). The one
    // lint allowed is the one Zilla's naming earns by design: durations in milliseconds.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        matches!(checked.status.code(), Some(0 | 3)),
        "promtool: {said}"
    );
    for line in said.lines() {
        assert!(
            line == "http_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\"",
            "promtool: {said}"
        );
    }

    // `zilla metrics` shows the same counts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let table = loop {
        let output = gateway.command(["metrics"])?.output()?;
        let table = String::from_utf8_lossy(&output.stdout).into_owned();
        if table.contains("http.request.size{method=POST,path=/items} count=5")
            || Instant::now() > deadline
        {
            break table;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for expected in [
        format!(
            "example north_http_server http.request.size{{method=POST,path=/items}} count={POSTS} sum=65"
        ),
        format!(
            "example north_http_server http.request.size{{method=GET,path=/health}} count={GETS} sum=0"
        ),
        "example north_http_server http.active.requests{method=POST,path=/items} 0".to_owned(),
        format!(
            "example north_tcp_server stream.opens.sent {}",
            POSTS + GETS
        ),
    ] {
        assert!(
            table.contains(&expected),
            "{expected} missing from\n{table}"
        );
    }
    assert!(gateway.terminate()?.success());
    Ok(())
}
