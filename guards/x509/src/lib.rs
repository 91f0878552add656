//! The `x509` guard: a session from a verified client certificate chain, as Zilla's `x509`
//! guard. A `tls` server with `mutual` and `options.authorization.<guard>.credentials.certificates:
//! pem` hands it the chain the handshake verified (PEM, leaf first); the session's identity,
//! roles and attributes come from fields of the leaf certificate, and the session expires when
//! the certificate does. Bindings inward see the session: `guarded` routes check its roles and
//! `${guarded['x509_0'].identity}` / `.attributes.<name>` read it.
//!
//! ```yaml
//! name: example
//! guards:
//!   x509_0:
//!     type: x509
//!     options:
//!       identity: subject.cn          # default subject.dn
//!       attributes:
//!         organization: subject.o
//!       roles:
//!         partner:
//!           - issuer.cn: Partner Issuing CA
//!         internal:
//!           - issuer.cn: Internal CA
//!             subject.ou: Platform
//!           - san.dns: "*.internal.example.com"
//! bindings:
//!   tls_server:
//!     type: tls
//!     kind: server
//!     vault: server
//!     options:
//!       keys: [localhost]
//!       trust: [clientca]
//!       mutual: required
//!       authorization:
//!         x509_0:
//!           credentials:
//!             certificates: pem
//!     routes:
//!       - guarded:
//!           x509_0: [internal]
//!         exit: http_server
//! ```
//!
//! # Options
//!
//! | option | meaning |
//! |---|---|
//! | `identity` | the field naming the identity; `subject.dn` by default |
//! | `attributes` | `name: field` pairs for `${guarded['x509_0'].attributes.name}` (the field's first value) |
//! | `roles` | `role: [match, ...]`; a role is held when any match holds, a match (`field: pattern`, at least one) when every field has a value its pattern matches. Patterns are globs (`*`, `?`) compared without regard to case |
//!
//! Fields are those of [`fields`]: `subject.dn` and `issuer.dn` in Java's canonical form (lower
//! case), `subject.cn`/`o`/`ou`/... and `issuer.*` values as written, `san.email`, `san.dns`,
//! `san.uri`, `san.ip`, and `x5t.s256`. Unlike Zilla, which lets an unknown field match
//! nothing, a field name this guard cannot resolve is refused at load: it can only be a typo.
//!
//! The guard trusts the chain it is given: verifying it is the tls server's job (`trust`,
//! `revocation`). So only a `tls` server's `authorization` may name it: an `http`, `mqtt` or
//! kafka `proxy` binding, whose credentials a client merely presents, refuses it at load. Credentials that are not a PEM chain are refused with the event
//! `GUARD_X509_AUTHORIZATION_FAILED`, as in Zilla. Certificates are parsed with `x509-parser`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod fields;
pub mod roles;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use schemars::JsonSchema;
use serde::Deserialize;
use x509_parser::pem::Pem;
use zilla_engine::components::{ComponentContext, ComponentFactory};
use zilla_engine::events::Events;
use zilla_engine::guard::{Guard, GuardSession};
use zilla_engine::{BuildError, Registry};

use crate::roles::Roles;

/// Zilla's event when credentials are refused.
pub const AUTHORIZATION_FAILED: &str = "GUARD_X509_AUTHORIZATION_FAILED";

/// The identity field when `identity` is absent.
pub const IDENTITY_DEFAULT: &str = "subject.dn";

/// `options` of an `x509` guard.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct X509Options {
    /// The field naming the identity (default `subject.dn`).
    #[schemars(regex(pattern = r"^[a-zA-Z]+[a-zA-Z0-9._-]*$"))]
    pub identity: Option<String>,
    /// Attribute name → field.
    pub attributes: Option<BTreeMap<String, String>>,
    /// Role → matches (each a map of field → glob pattern).
    pub roles: Option<BTreeMap<String, Vec<BTreeMap<String, String>>>>,
}

/// Registers the `x509` guard type.
pub fn register(registry: &mut Registry) {
    registry.guard(X509GuardFactory);
}

/// Builds `x509` guards.
#[derive(Debug, Clone, Copy)]
pub struct X509GuardFactory;

impl ComponentFactory<dyn Guard> for X509GuardFactory {
    fn type_name(&self) -> &'static str {
        "x509"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(X509Options)))
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Guard>, BuildError> {
        context.refuse_store("an x509 guard")?;
        context.refuse_vault("an x509 guard")?;
        let options: X509Options = context.options()?;
        X509Guard::new(options, context.events.clone()).map(|guard| Arc::new(guard) as _)
    }
}

/// A built `x509` guard.
#[derive(Debug)]
pub struct X509Guard {
    identity: String,
    attributes: BTreeMap<String, String>,
    roles: Roles,
    events: Events,
}

impl X509Guard {
    /// The guard of `options`; a field name no certificate carries is an error at its path.
    pub fn new(options: X509Options, events: Events) -> Result<Self, BuildError> {
        let identity = options
            .identity
            .unwrap_or_else(|| IDENTITY_DEFAULT.to_owned());
        check_field("options.identity", &identity)?;
        let attributes = options.attributes.unwrap_or_default();
        for (name, field) in &attributes {
            check_field(&format!("options.attributes.{name}"), field)?;
        }
        let roles = options.roles.unwrap_or_default();
        for (role, matches) in &roles {
            if matches.is_empty() {
                return Err(BuildError::at(
                    format!("options.roles.{role}"),
                    "a role needs at least one match",
                ));
            }
            for (index, fields) in matches.iter().enumerate() {
                if fields.is_empty() {
                    return Err(BuildError::at(
                        format!("options.roles.{role}.{index}"),
                        "a match needs at least one field",
                    ));
                }
                for field in fields.keys() {
                    check_field(&format!("options.roles.{role}.{index}.{field}"), field)?;
                }
            }
        }
        let roles =
            Roles::compile(&roles).map_err(|message| BuildError::at("options.roles", message))?;
        Ok(Self {
            identity,
            attributes,
            roles,
            events,
        })
    }

    fn session(&self, credentials: &str) -> Result<X509Session, &'static str> {
        // Credentials that went through a transport escaping their newlines, as Zilla accepts.
        let pem = credentials
            .replace("\\r\\n", "\n")
            .replace("\\n", "\n")
            .replace("\\r", "\n");
        let mut chain = Vec::new();
        for block in Pem::iter_from_buffer(pem.trim().as_bytes()) {
            let block = block.map_err(|_| UNPARSEABLE)?;
            if block.label == "CERTIFICATE" {
                chain.push(block);
            }
        }
        let leaf = chain.first().ok_or(EMPTY)?;
        let certificate = leaf.parse_x509().map_err(|_| UNPARSEABLE)?;
        let fields = fields::resolve(&certificate, &leaf.contents);
        let first = |field: &str| fields.get(field).and_then(|values| values.first()).cloned();
        let attributes = self
            .attributes
            .iter()
            .filter_map(|(name, field)| Some((name.clone(), first(field)?)))
            .collect();
        let not_after = certificate.validity().not_after.timestamp();
        let expires_at = u64::try_from(not_after)
            .ok()
            .map(|seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        Ok(X509Session {
            identity: first(&self.identity),
            roles: self.roles.resolve(&fields),
            attributes,
            expires_at,
            credentials: credentials.to_owned(),
        })
    }
}

const EMPTY: &str = "Empty certificate chain.";
const UNPARSEABLE: &str = "Unable to parse certificate chain.";

fn check_field(path: &str, field: &str) -> Result<(), BuildError> {
    if fields::is_known(field) {
        Ok(())
    } else {
        Err(BuildError::at(
            path,
            format!(
                "`{field}` is not a certificate field; expected one of: {}",
                fields::known().join(", ")
            ),
        ))
    }
}

impl Guard for X509Guard {
    fn reauthorize(&self, credentials: &str) -> Option<Arc<dyn GuardSession>> {
        match self.session(credentials) {
            Ok(session) => Some(Arc::new(session)),
            Err(reason) => {
                self.events.emit_with(AUTHORIZATION_FAILED, 0, || {
                    format!("X509 certificate chain authorization failed for identity (). {reason}")
                });
                None
            }
        }
    }

    fn trusts_credentials(&self) -> bool {
        true
    }
}

/// A session for one certificate chain.
#[derive(Debug)]
pub struct X509Session {
    identity: Option<String>,
    roles: Vec<String>,
    attributes: BTreeMap<String, String>,
    expires_at: Option<SystemTime>,
    credentials: String,
}

impl GuardSession for X509Session {
    fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    fn verify(&self, roles: &[String]) -> bool {
        roles.iter().all(|role| self.roles.contains(role))
    }

    fn attribute(&self, name: &str) -> Option<String> {
        self.attributes.get(name).cloned()
    }

    fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    fn roles(&self) -> Vec<String> {
        self.roles.clone()
    }

    fn credentials(&self) -> Option<String> {
        Some(self.credentials.clone())
    }
}
