//! Typed options and route conditions of the tls binding.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// `options` of a tls `server` or `client` binding (a `proxy` takes none).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    /// The highest TLS version to offer: `TLSv1.3` or `TLS` (TLS 1.2 and 1.3, the default), or
    /// `TLSv1.2` (TLS 1.2 only).
    pub version: Option<String>,
    /// Aliases of private keys (with their certificate chains) in the binding's vault. A server
    /// presents the one whose certificate names the requested SNI host, else the first; a
    /// client presents the first when the server asks for a certificate.
    pub keys: Option<Vec<String>>,
    /// Aliases of trusted certificates in the binding's vault. A server verifies client
    /// certificates against them; a client verifies the server certificate against them.
    pub trust: Option<Vec<String>>,
    /// Client: also trust the operating system's CA certificates.
    pub trustcacerts: Option<bool>,
    /// Server: the only host names accepted as SNI. Client: the SNI host name to send (the
    /// first one), instead of the stream's authority.
    pub sni: Option<Vec<String>>,
    /// Server: the application protocols that may be negotiated (default: those named by
    /// routes). Client: the protocols to offer, instead of the stream's.
    pub alpn: Option<Vec<String>>,
    /// Server: whether to ask for a client certificate (default `required` when `trust` is
    /// given, else `none`).
    pub mutual: Option<Mutual>,
    /// Aliases of signer (CA) certificates in the vault, to present keys issued by them.
    pub signers: Option<Vec<String>>,
}

/// Client certificate authentication on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mutual {
    /// The handshake fails without a trusted client certificate.
    Required,
    /// A client certificate is asked for; if one is sent it must be trusted.
    Requested,
    /// No client certificate is asked for.
    None,
}

/// A route condition of a tls binding; all given fields must match.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsCondition {
    /// The SNI host name (server, proxy) or the authority connected to (client). `*` wildcards
    /// allowed, e.g. `*.example.com`.
    pub authority: Option<String>,
    /// The negotiated (server), offered (proxy) or wanted (client) application protocol.
    pub alpn: Option<String>,
    /// The destination port.
    pub port: Option<Ports>,
}

/// Ports: a number, a `"8080-8090"` range, or a list of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<RangeInclusive<u16>>);

impl Ports {
    /// Whether `port` is one of these.
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|range| range.contains(&port))
    }
}

fn parse_range(text: &str) -> Result<RangeInclusive<u16>, String> {
    let parse = |part: &str| {
        part.trim()
            .parse::<u16>()
            .map_err(|_| format!("port `{part}` is not a number from 0 to 65535"))
    };
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (parse(low)?, parse(high)?);
            if low > high {
                return Err(format!("port range `{text}` ends before it starts"));
            }
            Ok(low..=high)
        }
        None => parse(text).map(|port| port..=port),
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum One {
            Number(u64),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(One),
            Many(Vec<One>),
        }
        let one = |value: One| match value {
            One::Number(port) => u16::try_from(port)
                .map(|port| port..=port)
                .map_err(|_| format!("port {port} is out of range 0-65535")),
            One::Text(text) => parse_range(&text),
        };
        let ranges = match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(value) => vec![one(value).map_err(de::Error::custom)?],
            OneOrMany::Many(values) => values
                .into_iter()
                .map(|value| one(value).map_err(de::Error::custom))
                .collect::<Result<_, _>>()?,
        };
        Ok(Ports(ranges))
    }
}

impl JsonSchema for Ports {
    fn schema_name() -> Cow<'static, str> {
        "Ports".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A port number from 0 to 65535, a range such as \"8080-8090\", or a list of those.",
            "x-expected": "a port number from 0 to 65535, a range such as \"8080-8090\", or a list of those",
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": 65535},
                {"type": "string", "pattern": "^\\d+(-\\d+)?$"},
                {"type": "array", "items": {"oneOf": [
                    {"type": "integer", "minimum": 0, "maximum": 65535},
                    {"type": "string", "pattern": "^\\d+(-\\d+)?$"}
                ]}}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_every_form() {
        let ports: Ports = serde_json::from_str("8443").unwrap();
        assert!(ports.contains(8443) && !ports.contains(8444));
        let ports: Ports = serde_json::from_str("\"8443-8445\"").unwrap();
        assert!(ports.contains(8444) && !ports.contains(8446));
        let ports: Ports = serde_json::from_str("[443, \"8443-8444\"]").unwrap();
        assert!(ports.contains(443) && ports.contains(8444) && !ports.contains(444));
        assert!(serde_json::from_str::<Ports>("70000").is_err());
        assert!(serde_json::from_str::<Ports>("\"9-1\"").is_err());
    }

    #[test]
    fn options_reject_unknown_keys_and_bad_mutual() {
        let options: TlsOptions =
            serde_json::from_str(r#"{"keys": ["localhost"], "mutual": "requested"}"#).unwrap();
        assert_eq!(options.mutual, Some(Mutual::Requested));
        assert!(serde_json::from_str::<TlsOptions>(r#"{"key": ["localhost"]}"#).is_err());
        assert!(serde_json::from_str::<TlsOptions>(r#"{"mutual": "maybe"}"#).is_err());
    }
}
