//! `curl -i` as a test client: one request, its status, headers and body.

use std::time::Duration;

use anyhow::{Context, Result, ensure};

use crate::peer::Peer;

/// What curl saw: status, headers (lower-case names) and body.
#[derive(Debug)]
pub struct CurlResponse {
    /// The status code.
    pub status: u16,
    /// Header names in lower case, with their values, in order.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl CurlResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `curl <args>` as (status, body).
pub fn curl_status_body(args: &[&str]) -> Result<(u16, String)> {
    let response = curl(args)?;
    Ok((response.status, response.body))
}

/// A `POST` to `url` of `content_type` with `idempotency-key: key` (the http-kafka examples'
/// key for a produce), its body given by curl's `data` arguments (`["-d", text]` or
/// `["--data-binary", "@file"]`): (status, body).
pub fn post_keyed(
    url: &str,
    content_type: &str,
    key: &str,
    data: &[&str],
) -> Result<(u16, String)> {
    let content_type = format!("content-type: {content_type}");
    let key = format!("idempotency-key: {key}");
    let mut args = vec!["-X", "POST", "-H", &content_type, "-H", &key];
    args.extend_from_slice(data);
    args.push(url);
    curl_status_body(&args)
}

/// Runs `curl -sS -i --max-time 30 <args>` and parses what it printed.
pub fn curl(args: &[&str]) -> Result<CurlResponse> {
    let output = Peer::new("curl")
        .args(["-sS", "-i", "--max-time", "30"])
        .args(args)
        .timeout(Duration::from_secs(40))
        .run()?;
    ensure!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .context("no status")?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(CurlResponse {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// The events of a `text/event-stream` body as `(id, data)` pairs, in order (a field's value
/// with its leading space trimmed, as the SSE format allows either spelling).
pub fn sse_events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let (mut id, mut data) = (String::new(), String::new());
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            data = value.trim().to_owned();
        } else if line.is_empty() && !data.is_empty() {
            out.push((std::mem::take(&mut id), std::mem::take(&mut data)));
        }
    }
    out
}
