//! The `inline` guard: an identity and credentials written in `zilla.yaml`, as Zilla 2.x's
//! `inline` guard. Its main use is to hand secrets to bindings that authenticate onward: a Kafka
//! client's SASL `username`/`password` templates read `{identity}` and `{credentials}` from it.
//!
//! ```yaml
//! name: example
//! guards:
//!   secrets:
//!     type: inline
//!     options:
//!       identity: zilla
//!       credentials: ${{env.KAFKA_PASSWORD}}
//! bindings:
//!   kafka_client:
//!     type: kafka
//!     kind: client
//!     options:
//!       servers: [localhost:9092]
//!       authorization:
//!         secrets:
//!           credentials:
//!             mechanism: scram-sha-512
//!             username: "{identity}"
//!             password: "{credentials}"
//!     exit: tcp_client
//! ```
//!
//! # Options
//!
//! | option | meaning |
//! |---|---|
//! | `identity` | the configured identity |
//! | `credentials` | the configured secret |
//! | `format` | how presented credentials split into identity and secret, e.g. `{identity}:{credentials}` |
//!
//! Presented credentials (`reauthorize`) are not checked, exactly as in Zilla: with `format`, a
//! matching text gives the identity and secret, and a text that does not match is the identity
//! with the configured secret; without `format`, the text is both. Every session holds no roles,
//! so an `inline` guard admits no `guarded` route that lists roles; it is not an authenticator.

use std::sync::Arc;
use std::time::SystemTime;

use regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use zilla_engine::BuildError;
use zilla_engine::Registry;
use zilla_engine::components::{ComponentContext, ComponentFactory};
use zilla_engine::guard::{Guard, GuardSession};

/// `options` of an `inline` guard.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineOptions {
    /// The configured identity.
    pub identity: Option<String>,
    /// The configured secret.
    pub credentials: Option<String>,
    /// How presented credentials split: `{identity}` and `{credentials}` placeholders.
    pub format: Option<String>,
}

/// Registers the `inline` guard type.
pub fn register(registry: &mut Registry) {
    registry.guard(InlineGuardFactory);
}

/// Builds `inline` guards.
#[derive(Debug, Clone, Copy)]
pub struct InlineGuardFactory;

impl ComponentFactory<dyn Guard> for InlineGuardFactory {
    fn type_name(&self) -> &'static str {
        "inline"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(
            InlineOptions
        )))
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
        context.refuse_store("an inline guard")?;
        context.refuse_vault("an inline guard")?;
        let options: InlineOptions = context.options()?;
        let guard = InlineGuard::new(options)
            .map_err(|message| BuildError::at("options.format", message))?;
        Ok(Arc::new(guard))
    }
}

/// A built `inline` guard.
#[derive(Debug)]
pub struct InlineGuard {
    identity: Option<String>,
    credentials: Option<String>,
    format: Option<Regex>,
}

impl InlineGuard {
    /// The guard of `options`; an error when `format` names a placeholder more than once.
    pub fn new(options: InlineOptions) -> Result<Self, String> {
        let format = match options.format.as_deref() {
            None => None,
            Some(format) => {
                for placeholder in ["{identity}", "{credentials}"] {
                    if format.matches(placeholder).count() > 1 {
                        return Err(format!(
                            "`{placeholder}` may appear once in `format`, not {} times",
                            format.matches(placeholder).count()
                        ));
                    }
                }
                let pattern = regex::escape(format)
                    .replace("\\{identity\\}", "(?P<identity>\\S+)")
                    .replace("\\{credentials\\}", "(?P<credentials>\\S+)");
                let regex = Regex::new(&format!("^{pattern}$"))
                    .map_err(|error| format!("`format` does not compile: {error}"))?;
                Some(regex)
            }
        };
        Ok(Self {
            identity: options.identity,
            credentials: options.credentials,
            format,
        })
    }
}

impl Guard for InlineGuard {
    fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
        let (identity, secret) = match &self.format {
            None => (credentials.to_owned(), Some(credentials.to_owned())),
            Some(format) => match format.captures(credentials) {
                Some(captures) => (
                    captures
                        .name("identity")
                        .map_or(credentials, |m| m.as_str())
                        .to_owned(),
                    Some(
                        captures
                            .name("credentials")
                            .map_or(credentials, |m| m.as_str())
                            .to_owned(),
                    ),
                ),
                None => (credentials.to_owned(), self.credentials.clone()),
            },
        };
        Some(Arc::new(InlineSession {
            identity: Some(identity),
            credentials: secret,
        }))
    }

    fn configured(&self) -> Option<Arc<dyn GuardSession>> {
        Some(Arc::new(InlineSession {
            identity: self.identity.clone(),
            credentials: self.credentials.clone(),
        }))
    }
}

/// A session of an `inline` guard: an identity and a secret, no roles, no expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSession {
    identity: Option<String>,
    credentials: Option<String>,
}

impl GuardSession for InlineSession {
    fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    fn verify(&self, roles: &[String]) -> bool {
        roles.is_empty()
    }

    fn attribute(&self, _name: &str) -> Option<String> {
        None
    }

    fn expires_at(&self) -> Option<SystemTime> {
        None
    }

    fn credentials(&self) -> Option<String> {
        self.credentials.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(format: Option<&str>) -> InlineGuard {
        InlineGuard::new(InlineOptions {
            identity: Some("zilla".into()),
            credentials: Some("s3cret".into()),
            format: format.map(str::to_owned),
        })
        .unwrap()
    }

    #[test]
    fn a_format_naming_a_placeholder_twice_is_refused() {
        for format in [
            "{identity}:{identity}",
            "{credentials}-{identity}-{credentials}",
        ] {
            let error = InlineGuard::new(InlineOptions {
                format: Some(format.to_owned()),
                ..InlineOptions::default()
            })
            .unwrap_err();
            assert!(error.contains("may appear once"), "{error}");
        }
    }

    #[test]
    fn the_configured_session_holds_the_configured_secret() {
        let session = guard(None).configured().unwrap();
        assert_eq!(session.identity(), Some("zilla"));
        assert_eq!(session.credentials().as_deref(), Some("s3cret"));
        assert!(session.verify(&[]));
        assert!(!session.verify(&["admin".into()]));
    }

    #[test]
    fn presented_credentials_split_by_format_as_zilla_does() {
        let split = guard(Some("{identity}:{credentials}"))
            .reauthorize("alice:pw")
            .unwrap();
        assert_eq!(split.identity(), Some("alice"));
        assert_eq!(split.credentials().as_deref(), Some("pw"));
        let unmatched = guard(Some("{identity}:{credentials}"))
            .reauthorize("bob")
            .unwrap();
        assert_eq!(unmatched.identity(), Some("bob"));
        assert_eq!(unmatched.credentials().as_deref(), Some("s3cret"));
        let whole = guard(None).reauthorize("token").unwrap();
        assert_eq!(whole.identity(), Some("token"));
        assert_eq!(whole.credentials().as_deref(), Some("token"));
    }

    #[test]
    fn format_metacharacters_are_literal() {
        let session = guard(Some("({identity}).{credentials}"))
            .reauthorize("(a).b")
            .unwrap();
        assert_eq!(session.identity(), Some("a"));
        let other = guard(Some("({identity}).{credentials}"))
            .reauthorize("xaxb")
            .unwrap();
        assert_eq!(other.identity(), Some("xaxb"));
    }
}
