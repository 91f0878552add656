//! Continuous authorization on the server side: Zilla's challenge-response request, the status
//! of an exchange no route takes, and responses that end when their guard session expires.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::StatusCode;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body::{Body as HttpBody, Frame};
use tokio::time::{Instant, Sleep};
use zilla_engine::guard::{Authorization, GuardSession};

use crate::kind::{Body, BodyError, Response, boxed};

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

/// `response`, ended when `session` expires (re-read then: a challenge response may have
/// extended it). A session without expiry leaves the response as it is. The timer is armed
/// only once the body waits: a response whose frames are ready (most exchanges) is checked
/// against the clock and never touches the timer wheel.
pub fn expire_with(response: Response, session: Arc<dyn GuardSession>) -> Response {
    let Some(expires_at) = session.expires_at() else {
        return response;
    };
    response.map(|body| {
        boxed(ExpiringBody {
            inner: body,
            expires_at,
            deadline: None,
            session,
        })
    })
}

/// The tokio instant of `at`.
pub fn instant(at: SystemTime) -> Instant {
    let now = SystemTime::now();
    match at.duration_since(now) {
        Ok(ahead) => Instant::now() + ahead,
        Err(_) => Instant::now(),
    }
}

struct ExpiringBody {
    inner: Body,
    /// When the session expired last time it was read.
    expires_at: SystemTime,
    /// Armed at `expires_at` once the body waited.
    deadline: Option<Pin<Box<Sleep>>>,
    session: Arc<dyn GuardSession>,
}

impl ExpiringBody {
    /// Whether the session has expired, reading it again once its last known expiry passed
    /// (a challenge response may have extended it).
    fn expired(&mut self) -> bool {
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
}

impl HttpBody for ExpiringBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        // Expired: the response ends here, cleanly.
        if self.expired() {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            // Waiting: wake at the expiry to end the response then.
            let at = instant(self.expires_at);
            let deadline = self
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if deadline.as_mut().poll(cx).is_ready() {
                if self.expired() {
                    return Poll::Ready(None);
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
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
