//! Guards authorize streams. A binding extracts credentials with its own `authorization`
//! patterns and asks the guard for a session; routes with `guarded` check the session's roles.
//!
//! Sessions are shared per (connection, guard, identity) as in Zilla: a binding keeps one
//! [`ConnectionSessions`] per network connection and authorizes through it, so a newer token
//! for the same identity on the same connection joins the existing session and extends its
//! expiry (continuous authorization), and a token seen before on the connection is not
//! verified again.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// An authorized session.
pub trait GuardSession: Send + Sync + 'static {
    /// The identity (e.g. the `sub` claim).
    fn identity(&self) -> Option<&str>;
    /// Whether every role in `roles` is held.
    fn verify(&self, roles: &[String]) -> bool;
    /// A named attribute of the identity.
    fn attribute(&self, name: &str) -> Option<String>;
    /// When the session ends, if it does.
    fn expires_at(&self) -> Option<SystemTime>;
    /// The roles held, as the guard's roles claim lists them.
    fn roles(&self) -> Vec<String> {
        Vec::new()
    }
    /// When the holder should be asked for fresh credentials (the guard's `challenge` before
    /// [`GuardSession::expires_at`]).
    fn expiring_at(&self) -> Option<SystemTime> {
        self.expires_at()
    }
    /// Whether a challenge is due at `now`; claims it, so each expiry is challenged once per
    /// session however many streams share it.
    fn challenge(&self, _now: SystemTime) -> bool {
        false
    }
    /// The secret this session presents onward (an `inline` guard's `credentials`, for Kafka
    /// SASL), when it has one.
    fn credentials(&self) -> Option<String> {
        None
    }
}

/// A guard, named under `guards:`.
pub trait Guard: Send + Sync + 'static {
    /// A session for `credentials`, `None` when they are rejected.
    fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>>;
    /// The session of a guard that holds configured credentials of its own (`inline`), used
    /// where no credentials are presented (a Kafka client authenticating to its brokers).
    fn configured(&self) -> Option<Arc<dyn GuardSession>> {
        None
    }
    /// Whether the guard trusts the credentials it is handed instead of proving them: an
    /// `x509` guard takes a chain the tls handshake already verified, so credentials a client
    /// merely presents (a header, a password) must never reach it
    /// ([`crate::binding::BuildContext::presented_guard`]).
    fn trusts_credentials(&self) -> bool {
        false
    }
}

/// The sessions a stream holds, by guard name (qualified). Cloned per request, so a clone is one
/// reference count: [`ConnectionSessions::authorize`] hands every request carrying a token seen
/// before on the connection the same one.
#[derive(Clone, Default)]
pub struct Authorization {
    /// `None` when no session is held, so that an empty one allocates nothing.
    sessions: Option<Arc<[Held]>>,
}

/// One session held, under its qualified guard name.
type Held = (Arc<str>, Arc<dyn GuardSession>);

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries().iter().map(|(guard, _)| guard))
            .finish()
    }
}

/// Equal when the same sessions are held under the same guard names.
impl PartialEq for Authorization {
    fn eq(&self, other: &Self) -> bool {
        let (mine, theirs) = (self.entries(), other.entries());
        mine.len() == theirs.len()
            && mine
                .iter()
                .zip(theirs)
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
    }
}

impl Eq for Authorization {}

impl Authorization {
    /// An authorization holding `session` of `guard` only.
    pub fn single(guard: impl Into<Arc<str>>, session: Arc<dyn GuardSession>) -> Self {
        Self {
            sessions: Some(Arc::from([(guard.into(), session)])),
        }
    }

    fn entries(&self) -> &[Held] {
        self.sessions.as_deref().unwrap_or_default()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Adds or replaces the session for `guard`.
    pub fn insert(&mut self, guard: impl Into<Arc<str>>, session: Arc<dyn GuardSession>) {
        let guard = guard.into();
        let mut sessions: Vec<_> = self
            .entries()
            .iter()
            .filter(|(name, _)| *name != guard)
            .cloned()
            .collect();
        sessions.push((guard, session));
        self.sessions = Some(sessions.into());
    }

    /// Every session held, by qualified guard name.
    pub fn sessions(&self) -> impl Iterator<Item = (&str, &Arc<dyn GuardSession>)> {
        self.entries()
            .iter()
            .map(|(guard, session)| (&**guard, session))
    }

    /// The session for `guard`.
    pub fn session(&self, guard: &str) -> Option<&Arc<dyn GuardSession>> {
        self.entries()
            .iter()
            .find(|(name, _)| &**name == guard)
            .map(|(_, session)| session)
    }

    /// The session for `guard` as a binding of `namespace` names it in config.
    pub fn session_in(&self, namespace: &str, guard: &str) -> Option<&Arc<dyn GuardSession>> {
        self.session(&qualified(namespace, guard))
    }
}

/// A guard name as written in config (`name` or `namespace:name`), qualified by the
/// `namespace` of the binding writing it.
pub fn qualified(namespace: &str, guard: &str) -> String {
    if guard.contains(':') {
        guard.to_owned()
    } else {
        format!("{namespace}:{guard}")
    }
}

/// A distinguished name's attribute value with the characters RFC 2253 section 2.4 (and
/// RFC 4514) reserves escaped: the subject names the `tls` binding reports and the names
/// `x509` guards compare are written alike.
pub fn escape_dn_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && (c == '#' || c == ' '))
            || (index == last && c == ' ');
        if special {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Tokens remembered per connection: a client resending the same token is not verified again.
const CACHED_TOKENS: usize = 8;
/// Identities shared per connection; beyond this a new identity gets an unshared session.
const SHARED_IDENTITIES: usize = 64;

/// The guard sessions of one network connection (see the module docs). Bounded: a few recent
/// tokens and weak references to the live sessions by identity.
#[derive(Default)]
pub struct ConnectionSessions {
    inner: Mutex<ConnectionState>,
}

impl std::fmt::Debug for ConnectionSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSessions").finish_non_exhaustive()
    }
}

struct CachedToken {
    guard: Arc<str>,
    token: String,
    /// The token's own expiry: past it the token is verified (and refused) again.
    expires_at: Option<SystemTime>,
    /// The shared session under `guard`, built once for every request carrying the token.
    authorization: Authorization,
}

#[derive(Default)]
struct ConnectionState {
    /// Tokens verified on this connection, most recent last.
    tokens: VecDeque<CachedToken>,
    /// (guard, identity) → the session shared by that identity's streams.
    identities: HashMap<(String, String), Weak<SharedSession>>,
}

impl ConnectionState {
    /// The cached authorization of `credentials` under `guard_name`, forgetting it once the
    /// token has expired (it is then verified, and refused, again).
    fn cached(&mut self, guard_name: &str, credentials: &[u8]) -> Option<Authorization> {
        let index = self.tokens.iter().position(|cached| {
            cached.token.as_bytes() == credentials && &*cached.guard == guard_name
        })?;
        let cached = &self.tokens[index];
        if cached.expires_at.is_none_or(|at| SystemTime::now() <= at) {
            return Some(cached.authorization.clone());
        }
        self.tokens.remove(index);
        None
    }
}

impl ConnectionSessions {
    /// The [`Authorization`] of a token this connection has verified under `guard_name` and
    /// that has not expired, found by the bytes the request carries. A protocol may look a
    /// repeated token up before checking its characters only where every token it caches
    /// for this guard passed the same checks (one source of credentials), since equal bytes
    /// pass them too. `None` for any other bytes.
    pub fn cached(&self, guard_name: &str, credentials: &[u8]) -> Option<Authorization> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cached(guard_name, credentials)
    }

    /// A session of `guard` (named `guard_name`) for `credentials` on this connection: the
    /// cached one for a token seen before (while it has not expired), else the guard's verdict,
    /// joined with the identity's existing session when the new roles include its roles.
    pub fn reauthorize(
        &self,
        guard_name: &str,
        guard: &dyn Guard,
        credentials: &str,
    ) -> Option<Arc<dyn GuardSession>> {
        self.authorize(guard_name, guard, credentials)?
            .session(guard_name)
            .cloned()
    }

    /// [`Self::reauthorize`]'s session as an [`Authorization`] holding it alone: for a token
    /// seen before, a clone of the one built when it was verified.
    pub fn authorize(
        &self,
        guard_name: &str,
        guard: &dyn Guard,
        credentials: &str,
    ) -> Option<Authorization> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cached) = state.cached(guard_name, credentials.as_bytes()) {
            return Some(cached);
        }
        // Verified under the lock: one connection's requests verify a token once.
        let verified = guard.reauthorize(credentials)?;
        let token_expires_at = verified.expires_at();
        let shared = match verified.identity().map(str::to_owned) {
            None => Arc::new(SharedSession::new(verified)),
            Some(identity) => {
                let key = (guard_name.to_owned(), identity);
                let existing = state.identities.get(&key).and_then(Weak::upgrade);
                match existing {
                    Some(existing) if verified.verify(&existing.roles()) => {
                        existing.join(verified);
                        existing
                    }
                    _ => {
                        let session = Arc::new(SharedSession::new(verified));
                        state
                            .identities
                            .retain(|_, session| session.strong_count() > 0);
                        if state.identities.len() < SHARED_IDENTITIES {
                            state.identities.insert(key, Arc::downgrade(&session));
                        }
                        session
                    }
                }
            }
        };
        if state.tokens.len() >= CACHED_TOKENS {
            state.tokens.pop_front();
        }
        let guard: Arc<str> = guard_name.into();
        let authorization = Authorization::single(guard.clone(), shared);
        state.tokens.push_back(CachedToken {
            guard,
            token: credentials.to_owned(),
            expires_at: token_expires_at,
            authorization: authorization.clone(),
        });
        Some(authorization)
    }
}

/// A session shared by the streams of one identity on one connection.
///
/// Its expiry is read for every response it authorizes and written only when a newer token
/// joins, so it is kept in an atomic as well and read without the lock.
pub struct SharedSession {
    identity: Option<String>,
    /// [`SharedState::expires_at`], encoded by [`encode_expiry`].
    expires_at: AtomicU64,
    state: Mutex<SharedState>,
}

struct SharedState {
    /// The latest token's session: roles and attributes come from it.
    current: Arc<dyn GuardSession>,
    /// The latest expiry of any token joined.
    expires_at: Option<SystemTime>,
    /// How long before expiry a challenge is due.
    lead: Duration,
    /// The expiring-at instant last challenged.
    challenged: Option<SystemTime>,
}

/// [`SharedSession::expires_at`] for a session that does not expire.
const NEVER: u64 = u64::MAX;
/// For an expiry before the epoch or past what nanoseconds in a `u64` reach (the year 2554):
/// read under the lock instead.
const UNENCODED: u64 = u64::MAX - 1;

/// An expiry as nanoseconds since the epoch, or one of [`NEVER`] and [`UNENCODED`].
fn encode_expiry(expires_at: Option<SystemTime>) -> u64 {
    let Some(at) = expires_at else {
        return NEVER;
    };
    at.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| u64::try_from(since.as_nanos()).ok())
        .filter(|nanos| *nanos < UNENCODED)
        .unwrap_or(UNENCODED)
}

impl SharedSession {
    fn new(session: Arc<dyn GuardSession>) -> Self {
        let expires_at = session.expires_at();
        Self {
            identity: session.identity().map(str::to_owned),
            expires_at: AtomicU64::new(encode_expiry(expires_at)),
            state: Mutex::new(SharedState {
                lead: lead(session.as_ref()),
                current: session,
                expires_at,
                challenged: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A newer token for the same identity: its roles, and the later expiry.
    fn join(&self, session: Arc<dyn GuardSession>) {
        let mut state = self.lock();
        state.expires_at = match (state.expires_at, session.expires_at()) {
            (Some(old), Some(new)) => Some(old.max(new)),
            _ => None,
        };
        state.lead = lead(session.as_ref());
        state.current = session;
        self.expires_at
            .store(encode_expiry(state.expires_at), Ordering::Release);
    }
}

fn lead(session: &dyn GuardSession) -> Duration {
    match (session.expires_at(), session.expiring_at()) {
        (Some(expires), Some(expiring)) => expires.duration_since(expiring).unwrap_or_default(),
        _ => Duration::ZERO,
    }
}

impl GuardSession for SharedSession {
    fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    fn verify(&self, roles: &[String]) -> bool {
        self.lock().current.verify(roles)
    }

    fn attribute(&self, name: &str) -> Option<String> {
        self.lock().current.attribute(name)
    }

    fn expires_at(&self) -> Option<SystemTime> {
        match self.expires_at.load(Ordering::Acquire) {
            NEVER => None,
            UNENCODED => self.lock().expires_at,
            nanos => Some(UNIX_EPOCH + Duration::from_nanos(nanos)),
        }
    }

    fn roles(&self) -> Vec<String> {
        self.lock().current.roles()
    }

    fn expiring_at(&self) -> Option<SystemTime> {
        let state = self.lock();
        state.expires_at.map(|at| at - state.lead)
    }

    fn challenge(&self, now: SystemTime) -> bool {
        let mut state = self.lock();
        let Some(expires_at) = state.expires_at else {
            return false;
        };
        let expiring_at = expires_at - state.lead;
        let due = self.identity.is_some()
            && expiring_at <= now
            && now < expires_at
            && state.challenged.is_none_or(|at| at < expiring_at);
        if due {
            state.challenged = Some(expiring_at);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(escape_dn_value("Example, Inc."), "Example\\, Inc.");
        assert_eq!(escape_dn_value("#1 "), "\\#1\\ ");
        assert_eq!(escape_dn_value(" a+b "), "\\ a\\+b\\ ");
        assert_eq!(escape_dn_value("plain"), "plain");
    }

    struct Token {
        identity: &'static str,
        roles: Vec<String>,
        expires_at: Option<SystemTime>,
    }

    impl GuardSession for Token {
        fn identity(&self) -> Option<&str> {
            Some(self.identity)
        }
        fn verify(&self, roles: &[String]) -> bool {
            roles.iter().all(|role| self.roles.contains(role))
        }
        fn attribute(&self, _name: &str) -> Option<String> {
            None
        }
        fn expires_at(&self) -> Option<SystemTime> {
            self.expires_at
        }
        fn roles(&self) -> Vec<String> {
            self.roles.clone()
        }
    }

    /// Admits a token named by its text: `identity expiry-seconds-since-epoch` or
    /// `identity never`.
    struct Tokens;

    impl Guard for Tokens {
        fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
            let (identity, expiry) = credentials.split_once(' ')?;
            let identity: &'static str = if identity == "alice" { "alice" } else { "bob" };
            let expires_at = match expiry {
                "never" => None,
                seconds => Some(UNIX_EPOCH + Duration::from_secs_f64(seconds.parse().ok()?)),
            };
            Some(Arc::new(Token {
                identity,
                roles: vec!["read".to_owned()],
                expires_at,
            }))
        }
    }

    #[test]
    fn a_verified_token_is_found_by_its_bytes_until_it_expires() {
        let sessions = ConnectionSessions::default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let live = format!("alice {}", now + 60.0);
        let expired = format!("bob {}", now - 1.0);
        assert!(sessions.cached("ns:jwt", live.as_bytes()).is_none());
        let verified = sessions.authorize("ns:jwt", &Tokens, &live).unwrap();
        let found = sessions.cached("ns:jwt", live.as_bytes()).unwrap();
        assert!(Arc::ptr_eq(
            found.session("ns:jwt").unwrap(),
            verified.session("ns:jwt").unwrap()
        ));
        // Only the same bytes under the same guard.
        assert!(sessions.cached("ns:other", live.as_bytes()).is_none());
        assert!(sessions.cached("ns:jwt", &live.as_bytes()[1..]).is_none());
        // A token cached while live is not found once expired.
        sessions.authorize("ns:jwt", &Tokens, &expired).unwrap();
        assert!(sessions.cached("ns:jwt", expired.as_bytes()).is_none());
    }

    #[test]
    fn a_newer_token_extends_the_shared_session() {
        let sessions = ConnectionSessions::default();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let first = sessions
            .reauthorize("ns:jwt", &Tokens, &format!("alice {}", now + 60.5))
            .unwrap();
        let expected = UNIX_EPOCH + Duration::from_secs_f64(now + 60.5);
        assert_eq!(first.expires_at(), Some(expected));
        let second = sessions
            .reauthorize("ns:jwt", &Tokens, &format!("alice {}", now + 120.25))
            .unwrap();
        let extended = UNIX_EPOCH + Duration::from_secs_f64(now + 120.25);
        assert_eq!(first.expires_at(), Some(extended));
        assert_eq!(second.expires_at(), Some(extended));
        // An earlier expiry does not shorten it.
        sessions
            .reauthorize("ns:jwt", &Tokens, &format!("alice {}", now + 90.0))
            .unwrap();
        assert_eq!(first.expires_at(), Some(extended));
        // A token that never expires makes the session never expire.
        sessions
            .reauthorize("ns:jwt", &Tokens, "alice never")
            .unwrap();
        assert_eq!(first.expires_at(), None);
    }

    #[test]
    fn expiries_past_what_nanoseconds_reach_are_kept_exactly() {
        let sessions = ConnectionSessions::default();
        // The year 33658: past the year 2554 that nanoseconds in a u64 reach.
        let far = UNIX_EPOCH + Duration::from_secs(1_000_000_000_000);
        let session = sessions
            .reauthorize("ns:jwt", &Tokens, "bob 1000000000000")
            .unwrap();
        assert_eq!(session.expires_at(), Some(far));
        assert_eq!(encode_expiry(Some(far)), UNENCODED);
        assert_eq!(encode_expiry(None), NEVER);
        assert_eq!(encode_expiry(Some(UNIX_EPOCH)), 0);
    }
}
