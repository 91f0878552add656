//! Guards authorize streams. A binding extracts credentials with its own `authorization`
//! patterns and asks the guard for a session; routes with `guarded` check the session's roles.

use std::sync::Arc;
use std::time::SystemTime;

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
}

/// A guard, named under `guards:`.
pub trait Guard: Send + Sync + 'static {
    /// A session for `credentials`, `None` when they are rejected.
    fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>>;
}

/// The sessions a stream holds, by guard name (qualified).
#[derive(Clone, Default)]
pub struct Authorization {
    sessions: Vec<(String, Arc<dyn GuardSession>)>,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.sessions.iter().map(|(guard, _)| guard))
            .finish()
    }
}

impl Authorization {
    /// Adds or replaces the session for `guard`.
    pub fn insert(&mut self, guard: impl Into<String>, session: Arc<dyn GuardSession>) {
        let guard = guard.into();
        self.sessions.retain(|(name, _)| name != &guard);
        self.sessions.push((guard, session));
    }

    /// The session for `guard`.
    pub fn session(&self, guard: &str) -> Option<&Arc<dyn GuardSession>> {
        self.sessions
            .iter()
            .find(|(name, _)| name == guard)
            .map(|(_, session)| session)
    }
}
