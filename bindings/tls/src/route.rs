//! Compiled route conditions and the handshake settings every kind shares.

use std::sync::Arc;
use std::time::Duration;

use serde::de::IgnoredAny;
use zilla_engine::pattern::Pattern;
use zilla_engine::properties::Properties;
use zilla_engine::route::{Route, Routes};
use zilla_engine::stream::BytesHandler;

use crate::config::{Ports, TlsCondition};

/// The routes of a tls binding: conditions on SNI, ALPN and port, exits taking bytes.
pub type TlsRoutes = Routes<Condition, IgnoredAny, Arc<dyn BytesHandler>>;

/// One route of a tls binding.
pub type TlsRoute = Route<Condition, IgnoredAny, Arc<dyn BytesHandler>>;

/// One compiled `when` entry.
#[derive(Debug, Clone)]
pub struct Condition {
    authority: Option<Pattern>,
    alpn: Option<Pattern>,
    port: Option<Ports>,
}

impl Condition {
    /// Compiles a `when` entry; host names match without regard to case.
    pub fn compile(raw: TlsCondition) -> Result<Self, String> {
        Ok(Self {
            authority: raw
                .authority
                .map(|authority| Pattern::compile(&authority.to_ascii_lowercase(), None))
                .transpose()?,
            alpn: raw
                .alpn
                .map(|alpn| Pattern::compile(&alpn, None))
                .transpose()?,
            port: raw.port,
        })
    }

    /// Whether the port condition holds; an unknown port only matches no condition.
    pub fn matches_port(&self, port: Option<u16>) -> bool {
        match &self.port {
            None => true,
            Some(ports) => port.is_some_and(|port| ports.contains(port)),
        }
    }

    /// Whether every condition holds for one authority, ALPN protocol and port.
    pub fn matches(&self, authority: Option<&str>, alpn: Option<&str>, port: Option<u16>) -> bool {
        self.matches_authority(authority)
            && self.matches_port(port)
            && match &self.alpn {
                None => true,
                Some(pattern) => alpn.is_some_and(|alpn| pattern.matches(alpn)),
            }
    }

    /// Like [`Self::matches`], with the ALPN condition met by any of `alpn`.
    pub fn matches_any_alpn(
        &self,
        authority: Option<&str>,
        alpn: &[String],
        port: Option<u16>,
    ) -> bool {
        self.matches_authority(authority)
            && self.matches_port(port)
            && match &self.alpn {
                None => true,
                Some(pattern) => alpn.iter().any(|alpn| pattern.matches(alpn)),
            }
    }

    /// Whether the conditions other than ALPN hold.
    pub fn matches_ignoring_alpn(&self, authority: Option<&str>, port: Option<u16>) -> bool {
        self.matches_authority(authority) && self.matches_port(port)
    }

    fn matches_authority(&self, authority: Option<&str>) -> bool {
        match &self.authority {
            None => true,
            Some(pattern) => {
                authority.is_some_and(|authority| pattern.matches(&authority.to_ascii_lowercase()))
            }
        }
    }
}

/// Whether some route could take a stream on `port`, before anything else is known.
pub fn routable_on_port(routes: &TlsRoutes, port: Option<u16>) -> bool {
    first_unguarded(routes, |condition| condition.matches_port(port)).is_some()
}

/// The first route whose conditions match, ignoring `guarded`: before the handshake no guard
/// has run, so, as in Zilla, a server checks `guarded` only once the handshake has completed.
pub fn first_unguarded(
    routes: &TlsRoutes,
    matches: impl Fn(&Condition) -> bool,
) -> Option<&TlsRoute> {
    routes
        .iter()
        .find(|route| route.when.is_empty() || route.when.iter().any(&matches))
}

/// Engine properties of the tls binding (`zilla.binding.tls.*`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `handshake.timeout`: seconds for a handshake (or a proxy's ClientHello) to complete.
    pub handshake_timeout: Duration,
    /// `handshake.window.bytes`: the most a proxy buffers while reading a ClientHello.
    pub handshake_window: usize,
    /// `client.https.identification`: whether a client checks the server certificate's name.
    pub https_identification: bool,
    /// `client.server.name.indication`: whether a client sends SNI.
    pub server_name_indication: bool,
}

/// Every property [`Settings::from_properties`] reads, declared to the registry.
pub const PROPERTIES: &[&str] = &[
    "zilla.binding.tls.client.https.identification",
    "zilla.binding.tls.client.server.name.indication",
    "zilla.binding.tls.handshake.timeout",
    "zilla.binding.tls.handshake.window.bytes",
];

impl Settings {
    /// Reads the properties, with Zilla's defaults.
    pub fn from_properties(properties: &Properties) -> Self {
        const PREFIX: &str = "zilla.binding.tls.";
        let name = |suffix: &str| format!("{PREFIX}{suffix}");
        Self {
            handshake_timeout: Duration::from_secs(properties.u64(&name("handshake.timeout"), 10)),
            handshake_window: usize::try_from(
                properties.u64(&name("handshake.window.bytes"), 65_536),
            )
            .unwrap_or(usize::MAX),
            https_identification: properties.bool(&name("client.https.identification"), true),
            server_name_indication: properties.bool(&name("client.server.name.indication"), true),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use zilla_engine::BindingKind;
    use zilla_engine::config::model::{BindingConfig, Origin, RouteConfig};
    use zilla_engine::stream::{BoxFuture, ByteStream, StreamError, StreamInfo};

    struct Nowhere;

    impl BytesHandler for Nowhere {
        fn connect(&self, _info: StreamInfo) -> BoxFuture<'_, Result<ByteStream, StreamError>> {
            Box::pin(async { Err(StreamError::NoRoute) })
        }
    }

    /// Routes from `(when, exit)` pairs and a default exit, every exit going nowhere.
    pub(crate) fn routes(entries: &[(&str, &str)], exit: Option<&str>) -> TlsRoutes {
        let config = BindingConfig {
            type_name: "tls".into(),
            kind: BindingKind::Server,
            entry: None,
            vault: None,
            catalog: None,
            options: None,
            exit: exit.map(str::to_owned),
            routes: entries
                .iter()
                .map(|(when, exit)| RouteConfig {
                    when: vec![serde_json::from_str(when).unwrap()],
                    guarded: Vec::new(),
                    exit: (*exit).to_owned(),
                    with: None,
                    origin: Origin::default(),
                })
                .collect(),
            telemetry_metrics: Vec::new(),
            telemetry_attributes: Vec::new(),
            json: serde_json::Value::Null,
            origin: Origin::default(),
            namespace: "test".into(),
        };
        Routes::build(
            &config,
            |_| Ok(Arc::new(Nowhere) as Arc<dyn BytesHandler>),
            Condition::compile,
        )
        .unwrap()
    }

    fn condition(json: &str) -> Condition {
        Condition::compile(serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn conditions_and_together() {
        let when = condition(r#"{"authority": "*.Example.com", "alpn": "h2", "port": 443}"#);
        assert!(when.matches(Some("api.example.com"), Some("h2"), Some(443)));
        assert!(when.matches(Some("API.example.com"), Some("h2"), Some(443)));
        assert!(!when.matches(Some("api.example.org"), Some("h2"), Some(443)));
        assert!(!when.matches(Some("api.example.com"), Some("http/1.1"), Some(443)));
        assert!(!when.matches(Some("api.example.com"), None, Some(443)));
        assert!(!when.matches(Some("api.example.com"), Some("h2"), Some(8443)));
        assert!(!when.matches(None, Some("h2"), Some(443)));
        assert!(when.matches_any_alpn(
            Some("api.example.com"),
            &["http/1.1".into(), "h2".into()],
            Some(443)
        ));
        assert!(when.matches_ignoring_alpn(Some("api.example.com"), Some(443)));
    }

    #[test]
    fn empty_condition_matches_anything() {
        let when = condition("{}");
        assert!(when.matches(None, None, None));
        assert!(when.matches_port(None));
        assert!(!condition(r#"{"port": "8000-8010"}"#).matches_port(None));
    }

    #[test]
    fn properties_override_defaults() {
        let defaults = Settings::from_properties(&Properties::default());
        assert_eq!(defaults.handshake_timeout, Duration::from_secs(10));
        assert!(defaults.https_identification && defaults.server_name_indication);
        let properties = Properties::from_assignments([
            "zilla.binding.tls.handshake.timeout=2",
            "zilla.binding.tls.client.server.name.indication=false",
        ]);
        let settings = Settings::from_properties(&properties);
        assert_eq!(settings.handshake_timeout, Duration::from_secs(2));
        assert!(!settings.server_name_indication);
    }
}
