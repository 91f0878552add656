//! The verification keys: inline JWKs, or a JWKS read from a file or fetched over HTTP(S).
//!
//! A JWKS is read when the guard is built and again, in the background, when a token names a
//! `kid` the set does not hold (at most once per [`REFRESH_INTERVAL`]). Verification never waits
//! for a fetch: it uses the keys held, so an unreachable JWKS origin keeps tokens signed with
//! cached keys working, and a rotated key is usable as soon as the refresh lands.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::config::KeyConfig;
use crate::verify::VerificationKey;

/// The least time between two JWKS fetches triggered by unknown key ids.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// The most keys kept from one JWKS.
const MAX_KEYS: usize = 1024;

/// Keys by `kid`.
pub type KeyMap = HashMap<String, VerificationKey>;

/// Why a key or key set could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key `{kid}`: {message}")]
    Key { kid: String, message: String },
    #[error("{0}")]
    Source(String),
}

/// One JWK as a verification key.
pub fn key(config: &KeyConfig) -> Result<VerificationKey, KeyError> {
    let fail = |message: String| KeyError::Key {
        kid: config.kid.clone(),
        message,
    };
    let alg = config
        .alg
        .as_deref()
        .ok_or_else(|| fail("has no `alg`: tokens are matched to keys by `alg`".into()))?;
    let algorithm =
        Algorithm::from_str(alg).map_err(|_| fail(format!("unsupported alg `{alg}`")))?;
    if config.usage.as_deref().is_some_and(|usage| usage != "sig") {
        return Err(fail("`use` must be `sig`".into()));
    }
    if config
        .key_ops
        .as_ref()
        .is_some_and(|ops| !ops.iter().any(|op| op == "verify"))
    {
        return Err(fail("`key_ops` must allow `verify`".into()));
    }
    // Key material written in standard base64 (`+`, `/`, `=` padding), as some published
    // JWKs and Zilla's own examples are, is read as the base64url RFC 7517 asks for, as
    // lenient decoders (Zilla's among them) read it: the two alphabets differ in two symbols.
    let mut config = config.clone();
    for member in [&mut config.n, &mut config.e, &mut config.x, &mut config.y] {
        if let Some(text) = member.as_mut() {
            *text = base64url(text);
        }
    }
    let value = serde_json::to_value(&config).map_err(|e| fail(e.to_string()))?;
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| fail(e.to_string()))?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| fail(e.to_string()))?;
    Ok(VerificationKey { algorithm, key })
}

/// `text` in the base64url alphabet without padding.
fn base64url(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

/// The usable keys of a JWKS document (`{"keys": [...]}`); keys this guard cannot use (no
/// `kid` or `alg`, encryption keys, unknown types) are skipped, as a JWKS may hold them.
pub fn parse_jwks(text: &[u8]) -> Result<KeyMap, KeyError> {
    let document: Value =
        serde_json::from_slice(text).map_err(|e| KeyError::Source(format!("not JSON: {e}")))?;
    let Some(Value::Array(entries)) = document.get("keys") else {
        return Err(KeyError::Source("no `keys` array".into()));
    };
    let mut keys = KeyMap::new();
    for entry in entries.iter().take(MAX_KEYS) {
        let Some(object) = entry.as_object() else {
            continue;
        };
        let field = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(kty), Some(kid)) = (field("kty"), field("kid")) else {
            continue;
        };
        let config = KeyConfig {
            kty,
            kid: kid.clone(),
            alg: field("alg"),
            n: field("n"),
            e: field("e"),
            crv: field("crv"),
            x: field("x"),
            y: field("y"),
            usage: field("use"),
            key_ops: object.get("key_ops").and_then(Value::as_array).map(|ops| {
                ops.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            }),
        };
        match key(&config) {
            Ok(key) => {
                keys.insert(kid, key);
            }
            Err(error) => tracing::debug!(%error, "JWKS key skipped"),
        }
    }
    Ok(keys)
}

/// Where a JWKS is.
#[derive(Debug, Clone)]
pub enum Location {
    Url(http::Uri),
    File(PathBuf),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Url(uri) => write!(f, "{uri}"),
            Location::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// The keys a guard verifies with, refreshed from `location` when there is one.
pub struct KeySet {
    keys: ArcSwap<KeyMap>,
    location: Option<Location>,
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
}

impl KeySet {
    /// Fixed keys.
    pub fn fixed(keys: KeyMap) -> Arc<Self> {
        Arc::new(Self {
            keys: ArcSwap::from_pointee(keys),
            location: None,
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
        })
    }

    /// Keys read from `location` now (waiting up to the fetch timeout); an unreachable
    /// location leaves the set empty until a refresh succeeds.
    pub fn load(location: Location) -> Arc<Self> {
        let set = Arc::new(Self {
            keys: ArcSwap::from_pointee(KeyMap::new()),
            location: Some(location),
            refreshing: AtomicBool::new(true),
            last_refresh: Mutex::new(Some(Instant::now())),
        });
        let loading = set.clone();
        // A thread of its own: building may happen on a runtime thread, which must not block.
        let handle = std::thread::spawn(move || loading.refresh_now());
        let _ = handle.join();
        set
    }

    /// The key named `kid`.
    pub fn get(&self, kid: &str) -> Option<VerificationKey> {
        self.keys.load().get(kid).cloned()
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A token named a key not held: fetch the set again in the background, unless a fetch
    /// is under way or one started less than [`REFRESH_INTERVAL`] ago.
    pub fn unknown_kid(self: &Arc<Self>) {
        if self.location.is_none() {
            return;
        }
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
                return;
            }
            if self.refreshing.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let set = self.clone();
        if let Err(error) = std::thread::Builder::new()
            .name("jwks-refresh".into())
            .spawn(move || set.refresh_now())
        {
            self.refreshing.store(false, Ordering::Release);
            tracing::warn!(%error, "cannot start a JWKS refresh");
        }
    }

    /// Reads the set from its location, replacing the keys when that succeeds.
    fn refresh_now(&self) {
        let Some(location) = &self.location else {
            return;
        };
        match read(location) {
            Ok(keys) => {
                tracing::debug!(%location, keys = keys.len(), "JWKS loaded");
                self.keys.store(Arc::new(keys));
            }
            Err(error) => {
                tracing::warn!(%location, %error, "JWKS not loaded; keeping the keys held")
            }
        }
        self.refreshing.store(false, Ordering::Release);
    }
}

fn read(location: &Location) -> Result<KeyMap, KeyError> {
    let text = match location {
        Location::File(path) => {
            let text = std::fs::read(path)
                .map_err(|e| KeyError::Source(format!("{}: {e}", path.display())))?;
            if text.len() > MAX_JWKS_BYTES {
                return Err(KeyError::Source("JWKS too large".into()));
            }
            Bytes::from(text)
        }
        Location::Url(uri) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| KeyError::Source(e.to_string()))?;
            runtime.block_on(fetch(uri))?
        }
    };
    parse_jwks(&text)
}

/// GETs `uri`, over TLS (system roots) for `https`.
async fn fetch(uri: &http::Uri) -> Result<Bytes, KeyError> {
    let request = http::Request::get(uri.clone())
        .header(http::header::ACCEPT, "application/json")
        .body(Bytes::new())
        .map_err(|e| KeyError::Source(e.to_string()))?;
    let limits = zilla_fetch::Limits {
        timeout: FETCH_TIMEOUT,
        max_body_bytes: MAX_JWKS_BYTES,
    };
    let response = zilla_fetch::send(request, limits)
        .await
        .map_err(|e| KeyError::Source(e.to_string()))?;
    if !response.status.is_success() {
        return Err(KeyError::Source(format!("status {}", response.status)));
    }
    Ok(response.body)
}
