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
/// extended it). A session without expiry leaves the response as it is.
pub fn expire_with(response: Response, session: Arc<dyn GuardSession>) -> Response {
    let Some(expires_at) = session.expires_at() else {
        return response;
    };
    response.map(|body| {
        boxed(ExpiringBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep_until(instant(expires_at))),
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
    deadline: Pin<Box<Sleep>>,
    session: Arc<dyn GuardSession>,
}

impl HttpBody for ExpiringBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        while self.deadline.as_mut().poll(cx).is_ready() {
            match self.session.expires_at() {
                Some(at) if at > SystemTime::now() => {
                    let next = instant(at);
                    self.deadline.as_mut().reset(next);
                }
                // Expired: the response ends here, cleanly.
                _ => return Poll::Ready(None),
            }
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
