//! Port sets as Zilla writes them in tcp and tls options and routes: a number, a
//! `"8080-8090"` range, or a list of those.

use std::borrow::Cow;
use std::ops::RangeInclusive;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Ports: a number, a `"8080-8090"` range, or a list of those.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports(pub Vec<RangeInclusive<u16>>);

impl Ports {
    /// Every port, in order.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.0.iter().flat_map(|range| range.clone())
    }

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
        enum Many {
            One(One),
            List(Vec<One>),
        }
        let one = |value: One| match value {
            One::Number(port) => u16::try_from(port)
                .map(|port| port..=port)
                .map_err(|_| format!("port {port} is out of range 0-65535")),
            One::Text(text) => parse_range(&text),
        };
        let ranges = match Many::deserialize(deserializer)? {
            Many::One(value) => vec![one(value).map_err(de::Error::custom)?],
            Many::List(values) => values
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
        let ports: Ports = serde_json::from_str("8080").unwrap();
        assert_eq!(ports.iter().collect::<Vec<_>>(), vec![8080]);
        let ports: Ports = serde_json::from_str("\"8080-8082\"").unwrap();
        assert_eq!(ports.iter().collect::<Vec<_>>(), vec![8080, 8081, 8082]);
        let ports: Ports = serde_json::from_str("[1, \"3-4\"]").unwrap();
        assert_eq!(ports.iter().collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!(serde_json::from_str::<Ports>("70000").is_err());
        assert!(serde_json::from_str::<Ports>("\"9-1\"").is_err());
    }
}
