//! Where the running config comes from: a file, watched for changes, or an `http(s)` URL,
//! polled every `zilla.engine.config.poll.interval.seconds` (60 by default) with the
//! validators the server gave (`If-None-Match`, `If-Modified-Since`), so replicas can share
//! one config source and an unchanged config costs the server a 304.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use zilla::engine::properties::Properties;

/// The property naming the config when `-c` is not given, as in Zilla.
const URL_PROPERTY: &str = "zilla.engine.config.url";
/// How often a config served over HTTP is asked for again.
pub(crate) const POLL_INTERVAL_PROPERTY: &str = "zilla.engine.config.poll.interval.seconds";
const DEFAULT_POLL_INTERVAL_SECONDS: u64 = 60;
/// The largest config document read from a URL.
const MAX_CONFIG_BYTES: usize = 16 << 20;

pub(crate) enum ConfigSource {
    File(PathBuf),
    Url(http::Uri),
}

impl ConfigSource {
    /// From `-c` if given, else from `zilla.engine.config.url` (default `file:zilla.yaml`).
    pub(crate) fn new(arg: Option<&Path>, properties: &Properties) -> Result<Self> {
        let location = match arg {
            Some(path) => path.to_string_lossy().into_owned(),
            None => properties
                .get(URL_PROPERTY)
                .unwrap_or("file:zilla.yaml")
                .to_owned(),
        };
        if location.starts_with("http://") || location.starts_with("https://") {
            let uri = location
                .parse()
                .with_context(|| format!("the config URL `{location}` is not a URL"))?;
            return Ok(Self::Url(uri));
        }
        if let Some(path) = location.strip_prefix("file:") {
            return Ok(Self::File(PathBuf::from(path)));
        }
        match arg {
            Some(path) => Ok(Self::File(path.to_path_buf())),
            None => bail!("{URL_PROPERTY}: `{location}` is neither file:, http: nor https:"),
        }
    }

    /// What errors in the config are reported against: the file, or the URL as written.
    pub(crate) fn name(&self) -> PathBuf {
        match self {
            Self::File(path) => path.clone(),
            Self::Url(uri) => PathBuf::from(uri.to_string()),
        }
    }

    /// The whole config text, read now.
    pub(crate) async fn read(&self) -> Result<Fetched> {
        match self {
            Self::File(path) => Ok(Fetched {
                text: std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config {}", path.display()))?,
                validators: http::HeaderMap::new(),
            }),
            Self::Url(uri) => fetch(uri, None)
                .await?
                .context("the config server answered 304 to an unconditional request"),
        }
    }
}

/// A config text and the headers to ask whether it changed.
pub(crate) struct Fetched {
    pub(crate) text: String,
    validators: http::HeaderMap,
}

/// GETs the config; `None` when the server says it did not change since `previous`.
pub(crate) async fn fetch(uri: &http::Uri, previous: Option<&Fetched>) -> Result<Option<Fetched>> {
    let mut request = http::Request::get(uri.clone());
    if let Some(previous) = previous {
        let conditions = [
            (http::header::ETAG, http::header::IF_NONE_MATCH),
            (http::header::LAST_MODIFIED, http::header::IF_MODIFIED_SINCE),
        ];
        for (validator, condition) in conditions {
            if let Some(value) = previous.validators.get(validator) {
                request = request.header(condition, value);
            }
        }
    }
    let request = request.body(Bytes::new())?;
    let limits = zilla_fetch::Limits {
        max_body_bytes: MAX_CONFIG_BYTES,
        ..zilla_fetch::Limits::default()
    };
    let response = zilla_fetch::send(request, limits)
        .await
        .with_context(|| format!("cannot read config {uri}"))?;
    if response.status == http::StatusCode::NOT_MODIFIED && previous.is_some() {
        return Ok(None);
    }
    if !response.status.is_success() {
        bail!(
            "cannot read config {uri}: the server answered {}",
            response.status
        );
    }
    let text = String::from_utf8(response.body.to_vec())
        .with_context(|| format!("config {uri} is not UTF-8"))?;
    let mut validators = http::HeaderMap::new();
    for name in [http::header::ETAG, http::header::LAST_MODIFIED] {
        if let Some(value) = response.headers.get(&name) {
            validators.insert(name, value.clone());
        }
    }
    Ok(Some(Fetched { text, validators }))
}

pub(crate) fn poll_interval(properties: &Properties) -> Duration {
    Duration::from_secs(
        properties
            .u64(POLL_INTERVAL_PROPERTY, DEFAULT_POLL_INTERVAL_SECONDS)
            .max(1),
    )
}
