//! Continuous authorization on the server side: Zilla's challenge-response request, the status
//! of an exchange no route takes, and responses that end when their guard session expires.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::SystemTime;

use http::StatusCode;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use tokio::time::{Instant, Sleep};
use zilla_engine::guard::{Authorization, GuardSession};

/// The content type of the request a subscriber answers a challenge with.
pub const CHALLENGE_RESPONSE_CONTENT_TYPE: &str = "application/x-challenge-response";

/// Whether `request` answers a challenge: `POST`, `content-type:
/// application/x-challenge-response` and `content-length: 0`, exactly as Zilla matches it.
pub fn is_challenge_response<B>(request: &http::Request<B>) -> bool {
    let header = |name| request.headers().get(name).map(|value| value.as_bytes());
    request.method() == http::Method::POST
        && header(CONTENT_TYPE) == Some(CHALLENGE_RESPONSE_CONTENT_TYPE.as_bytes())
        && header(CONTENT_LENGTH) == Some(b"0".as_slice())
}

/// The status for an exchange no route takes, as Zilla decides it: with a guard and no session
/// of it, 401 when no credentials were found and 403 when they were refused; otherwise 404 (a
/// session whose roles no route accepts included).
pub fn unrouted(
    guard: Option<&str>,
    authorization: Option<&Authorization>,
    carried: bool,
) -> StatusCode {
    match guard {
        Some(guard) if authorization.and_then(|a| a.session(guard)).is_none() => {
            if carried {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            }
        }
        _ => StatusCode::NOT_FOUND,
    }
}

/// Ends a guarded response when its session expires (re-read then: a challenge response may
/// have extended it). The timer is armed only once the body waits: a response whose frames are
/// ready (most exchanges) is checked against the clock and never touches the timer wheel.
pub struct ExpiryWatch {
    /// When the session expired last time it was read.
    expires_at: SystemTime,
    /// Armed at `expires_at` once the body waited.
    deadline: Option<Pin<Box<Sleep>>>,
    session: Arc<dyn GuardSession>,
}

impl ExpiryWatch {
    /// A watch on `session`; `None` for a session that does not expire.
    pub fn new(session: Arc<dyn GuardSession>) -> Option<Self> {
        let expires_at = session.expires_at()?;
        Some(Self {
            expires_at,
            deadline: None,
            session,
        })
    }

    /// Whether the session has expired, reading it again once its last known expiry passed
    /// (a challenge response may have extended it).
    pub fn expired(&mut self) -> bool {
        if SystemTime::now() < self.expires_at {
            return false;
        }
        match self.session.expires_at() {
            Some(at) if at > SystemTime::now() => {
                self.expires_at = at;
                false
            }
            _ => true,
        }
    }

    /// Called when the body waits: arranges for `cx` to be woken at the expiry; `true` when
    /// the session has expired already.
    pub fn wait(&mut self, cx: &mut Context<'_>) -> bool {
        let expires_at = self.expires_at;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(instant(expires_at))));
        if deadline.as_mut().poll(cx).is_ready() {
            if self.expired() {
                return true;
            }
            // Not yet (extended, or the clocks disagree): wait for the expiry now known;
            // due at once on the timer's clock, look again on the next poll.
            let at = instant(self.expires_at);
            if let Some(next) = self.deadline.as_mut() {
                next.as_mut().reset(at);
                if next.as_mut().poll(cx).is_ready() {
                    cx.waker().wake_by_ref();
                }
            }
        }
        false
    }
}

/// The tokio instant of `at`.
pub fn instant(at: SystemTime) -> Instant {
    let now = SystemTime::now();
    match at.duration_since(now) {
        Ok(ahead) => Instant::now() + ahead,
        Err(_) => Instant::now(),
    }
}
