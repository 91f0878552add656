//! The registry's HTTP client: one thread of its own running the requests (`zilla-fetch`, so
//! `https` is verified against the system's trust store), single-flight requests keyed by
//! path, and bounded waits for callers on any thread. Each request opens its own connection:
//! answers are cached, so requests are rare.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{MAX_FLIGHTS, MAX_RESPONSE_BYTES};

/// The longest one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Answer = Result<Fetched, String>;

/// A registry's successful answer: its body as text, and as JSON when it is JSON.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The body.
    pub text: Arc<str>,
    /// The body parsed as JSON, if it is JSON.
    pub json: Option<serde_json::Value>,
}

/// One request in flight, which every caller asking for the same path waits on.
#[derive(Default)]
struct Flight {
    answer: Mutex<Option<Answer>>,
    /// Wakes threads waiting for the answer.
    done: Condvar,
    /// Wakes tasks waiting for the answer.
    landed: tokio::sync::Notify,
}

impl Flight {
    /// The answer, once it has landed.
    async fn landed(&self) -> Answer {
        loop {
            // Registered before the answer is looked at, so a landing in between wakes it.
            let notified = self.landed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.answer.lock() {
                Ok(answer) => {
                    if let Some(answer) = answer.as_ref() {
                        return answer.clone();
                    }
                }
                Err(_) => return Err("the registry client failed".to_owned()),
            }
            notified.await;
        }
    }
}

/// Why a wait of `wait` ended without an answer.
fn no_answer(wait: Duration) -> String {
    format!("no answer within {} ms", wait.as_millis())
}

/// What to do with an answer besides handing it to waiters.
pub(crate) type AfterAnswer = Box<dyn FnOnce(&Answer) + Send>;

pub(crate) struct Fetcher {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the client's thread (and its runtime, on that thread).
    _stop: tokio::sync::oneshot::Sender<()>,
    base: String,
    authorization: Option<http::HeaderValue>,
    accept: &'static str,
    flights: Arc<Mutex<HashMap<String, Arc<Flight>>>>,
}

impl Fetcher {
    /// A client for the registry at `url` (`http[s]://host:port[/prefix]`).
    pub(crate) fn new(
        url: &str,
        authorization: Option<http::HeaderValue>,
        accept: &'static str,
    ) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|error| format!("`{url}` is not a URL: {error}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(format!("`{url}` is not an http:// or https:// URL"));
        }
        if uri.authority().is_none() || uri.query().is_some() {
            return Err(format!("`{url}` must be http[s]://host[:port][/path]"));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle =
            zilla_engine::workers::thread_runtime("schema-registry".to_owned(), || {}, async {
                let _ = stopped.await;
            })
            .map_err(|error| format!("no thread for the registry client: {error}"))?;
        Ok(Self {
            handle,
            _stop: stop,
            base: url.trim_end_matches('/').to_owned(),
            authorization,
            accept,
            flights: Arc::default(),
        })
    }

    /// The JSON answer for `path`, waiting at most `wait`; `after` gets the answer if this
    /// call starts the request.
    pub(crate) fn get_json(
        &self,
        path: &str,
        wait: Duration,
        after: Option<AfterAnswer>,
    ) -> Answer {
        let flight = self.flight(path, after)?;
        let deadline = Instant::now() + wait;
        let wait_for = || -> Answer {
            let Ok(mut answer) = flight.answer.lock() else {
                return Err("the registry client failed".to_owned());
            };
            loop {
                if let Some(answer) = answer.as_ref() {
                    return answer.clone();
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(no_answer(wait));
                }
                answer = match flight.done.wait_timeout(answer, left) {
                    Ok((answer, _)) => answer,
                    Err(_) => return Err("the registry client failed".to_owned()),
                };
            }
        };
        // On a multi-threaded runtime's worker, let the runtime move its other tasks away
        // while this one waits.
        match tokio::runtime::Handle::try_current() {
            Ok(current)
                if current.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(wait_for)
            }
            _ => wait_for(),
        }
    }

    /// Waits asynchronously, at most `wait`, for the answer for `path`, starting the request
    /// unless it is in flight (`after` gets the answer if this call starts it).
    pub(crate) fn fetch_json(
        &self,
        path: &str,
        wait: Duration,
        after: Option<AfterAnswer>,
    ) -> impl Future<Output = Answer> + Send + 'static {
        let flight = self.flight(path, after);
        async move {
            let flight = flight?;
            match tokio::time::timeout(wait, flight.landed()).await {
                Ok(answer) => answer,
                Err(_) => Err(no_answer(wait)),
            }
        }
    }

    /// Starts fetching `path` in the background unless it is already in flight; `after` gets
    /// the answer.
    pub(crate) fn refresh(&self, path: &str, after: AfterAnswer) {
        let _ = self.flight(path, Some(after));
    }

    /// The flight for `path`, joined or started (with `after`); an error when
    /// [`MAX_FLIGHTS`] requests are in flight already.
    fn flight(&self, path: &str, after: Option<AfterAnswer>) -> Result<Arc<Flight>, String> {
        let flight = {
            let Ok(mut flights) = self.flights.lock() else {
                return Err("the registry client failed".to_owned());
            };
            if let Some(flight) = flights.get(path) {
                return Ok(flight.clone());
            }
            if flights.len() >= MAX_FLIGHTS {
                return Err(format!(
                    "{MAX_FLIGHTS} requests to the registry are in flight already"
                ));
            }
            let flight = Arc::new(Flight::default());
            flights.insert(path.to_owned(), flight.clone());
            flight
        };
        let request = self.request(path);
        let flights = self.flights.clone();
        let key = path.to_owned();
        let landed = flight.clone();
        self.handle.spawn(async move {
            let answer = match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
            };
            if let Ok(mut flights) = flights.lock() {
                flights.remove(&key);
            }
            if let Some(after) = after {
                after(&answer);
            }
            if let Ok(mut slot) = landed.answer.lock() {
                *slot = Some(answer);
            }
            landed.done.notify_all();
            landed.landed.notify_waiters();
        });
        Ok(flight)
    }

    fn request(&self, path: &str) -> impl Future<Output = Answer> + Send + 'static {
        let url = format!("{}{path}", self.base);
        let authorization = self.authorization.clone();
        let accept = self.accept;
        let path = path.to_owned();
        async move {
            let mut request = http::Request::get(&url).header(http::header::ACCEPT, accept);
            if let Some(authorization) = authorization {
                request = request.header(http::header::AUTHORIZATION, authorization);
            }
            let request = request
                .body(Bytes::new())
                .map_err(|error| error.to_string())?;
            let limits = zilla_fetch::Limits {
                timeout: REQUEST_TIMEOUT,
                max_body_bytes: MAX_RESPONSE_BYTES,
            };
            let response = zilla_fetch::send(request, limits)
                .await
                .map_err(|error| format!("GET {path}: {error}"))?;
            let json: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
            if !response.status.is_success() {
                let message = json
                    .as_ref()
                    .and_then(|json| json.get("message"))
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                return Err(format!("GET {path}: {} {message}", response.status)
                    .trim_end()
                    .to_owned());
            }
            let text = String::from_utf8(response.body.to_vec())
                .map_err(|_| format!("GET {path}: the answer is not UTF-8 text"))?;
            Ok(Fetched {
                text: Arc::from(text),
                json,
            })
        }
    }
}
