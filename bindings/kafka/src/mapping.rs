//! Pieces shared by the bindings that map a protocol onto Kafka (`http-kafka`, `sse-kafka`,
//! `grpc-kafka`, `kafka-grpc`): the config shapes their routes have in common (`acks`,
//! ordered `overrides`) and fetch filters compiled once at load and evaluated per stream.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;

use bytes::Bytes;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use zilla_engine::expr::{Expression, ExpressionContext};

use crate::kind::{Acks, Condition, Filter};

/// `with.acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProduceAcks {
    /// No acknowledgement: the response does not wait for Kafka.
    None,
    /// The partition leader has the record.
    LeaderOnly,
    /// Every in-sync replica has the record.
    #[default]
    InSyncReplicas,
}

impl From<ProduceAcks> for Acks {
    fn from(acks: ProduceAcks) -> Self {
        match acks {
            ProduceAcks::None => Acks::None,
            ProduceAcks::LeaderOnly => Acks::Leader,
            ProduceAcks::InSyncReplicas => Acks::All,
        }
    }
}

/// A map of strings that keeps the order it was written in (header order is part of the
/// correlation id).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderedStrings(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedStrings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;

        impl<'de> Visitor<'de> for Entries {
            type Value = OrderedStrings;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a map of strings")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(OrderedStrings(entries))
            }
        }

        deserializer.deserialize_map(Entries)
    }
}

impl JsonSchema for OrderedStrings {
    fn schema_name() -> Cow<'static, str> {
        "OrderedStrings".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <BTreeMap<String, String>>::json_schema(generator)
    }
}

/// Compiles Kafka header templates, `name: value` (a filter's `headers`, a produce's
/// `overrides`); `variables` as for [`Expression::compile`].
pub fn compile_headers(
    headers: impl IntoIterator<Item = (String, String)>,
    variables: &[&str],
) -> Result<Vec<(Bytes, Expression)>, String> {
    headers
        .into_iter()
        .map(|(name, value)| Ok((Bytes::from(name), Expression::compile(&value, variables)?)))
        .collect()
}

/// One fetch filter: all its conditions must hold.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchFilter {
    /// The record key; may use `${params.name}` and guard values.
    pub key: Option<String>,
    /// Header values the record must carry; values may use expressions.
    pub headers: Option<BTreeMap<String, String>>,
}

/// One fetch filter of a route's `with` (`{key, headers: {name: value}}`), its expressions
/// compiled: every condition must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterTemplate {
    key: Option<Expression>,
    headers: Vec<(Bytes, Expression)>,
}

impl FilterTemplate {
    /// Compiles a [`FetchFilter`]; `variables` are the plain variables the binding supplies
    /// besides `params` and `guarded`.
    pub fn of(filter: FetchFilter, variables: &[&str]) -> Result<Self, String> {
        Self::compile(
            filter.key.as_deref(),
            filter.headers.unwrap_or_default(),
            variables,
        )
    }

    /// Compiles a route's `filters` (none when absent), as [`FilterTemplate::of`].
    pub fn all(filters: Option<Vec<FetchFilter>>, variables: &[&str]) -> Result<Vec<Self>, String> {
        filters
            .unwrap_or_default()
            .into_iter()
            .map(|filter| Self::of(filter, variables))
            .collect()
    }

    /// Compiles a filter's `key` and `headers`.
    pub fn compile(
        key: Option<&str>,
        headers: impl IntoIterator<Item = (String, String)>,
        variables: &[&str],
    ) -> Result<Self, String> {
        Ok(Self {
            key: key
                .map(|key| Expression::compile(key, variables))
                .transpose()?,
            headers: compile_headers(headers, variables)?,
        })
    }

    /// The Kafka filter for one stream; `None` when a value has nothing behind it in
    /// `context` (a guard without a session), which must neither widen nor blank a filter.
    pub fn evaluate(&self, context: &dyn ExpressionContext) -> Option<Filter> {
        self.fill(|expression| expression.evaluate(context).ok_or(()))
            .ok()
    }

    /// The Kafka filter for one request with a value that has nothing behind it in `context`
    /// written as empty ([`Expression::render`]): Zilla's `http-kafka` fills its filters so,
    /// and a guard value without a session then matches only records whose key or header is
    /// empty.
    pub fn render(&self, context: &dyn ExpressionContext) -> Filter {
        match self.fill(|expression| Ok::<_, Infallible>(expression.render(context))) {
            Ok(filter) => filter,
            Err(never) => match never {},
        }
    }

    fn fill<E>(&self, value: impl Fn(&Expression) -> Result<String, E>) -> Result<Filter, E> {
        let mut conditions = Vec::with_capacity(self.headers.len() + 1);
        if let Some(key) = &self.key {
            conditions.push(Condition::Key(Bytes::from(value(key)?)));
        }
        for (name, header) in &self.headers {
            conditions.push(Condition::Header {
                name: name.clone(),
                value: Bytes::from(value(header)?),
            });
        }
        Ok(Filter { conditions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zilla_engine::guard::GuardSession;

    struct Params;

    impl ExpressionContext for Params {
        fn param(&self, name: &str) -> Option<&str> {
            (name == "id").then_some("42")
        }
    }

    #[test]
    fn filters_evaluate_per_stream() {
        let template = FilterTemplate::compile(
            Some("${params.id}"),
            [("tag".to_owned(), "t-${params.id}".to_owned())],
            &[],
        )
        .unwrap();
        assert_eq!(
            template.evaluate(&Params),
            Some(Filter {
                conditions: vec![
                    Condition::Key(Bytes::from_static(b"42")),
                    Condition::Header {
                        name: Bytes::from_static(b"tag"),
                        value: Bytes::from_static(b"t-42"),
                    },
                ]
            })
        );
        assert!(FilterTemplate::compile(Some("${nope}"), [], &[]).is_err());
    }

    struct Session;

    impl GuardSession for Session {
        fn identity(&self) -> Option<&str> {
            Some("alice")
        }
        fn verify(&self, _roles: &[String]) -> bool {
            true
        }
        fn attribute(&self, name: &str) -> Option<String> {
            (name == "tenant").then(|| "t1".to_owned())
        }
        fn expires_at(&self) -> Option<std::time::SystemTime> {
            None
        }
    }

    struct Signed;

    impl ExpressionContext for Signed {
        fn guarded(&self, guard: &str) -> Option<&dyn GuardSession> {
            (guard == "jwt").then_some(&Session as &dyn GuardSession)
        }
    }

    #[test]
    fn guarded_filters_with_and_without_a_session() {
        let template = FilterTemplate::compile(
            Some("${guarded['jwt'].identity}"),
            [(
                "tenant".to_owned(),
                "${guarded['jwt'].attributes.tenant}".to_owned(),
            )],
            &[],
        )
        .unwrap();
        let filled = Filter {
            conditions: vec![
                Condition::Key(Bytes::from_static(b"alice")),
                Condition::Header {
                    name: Bytes::from_static(b"tenant"),
                    value: Bytes::from_static(b"t1"),
                },
            ],
        };
        assert_eq!(template.evaluate(&Signed), Some(filled.clone()));
        assert_eq!(template.render(&Signed), filled);
        // Without the session: refused by `evaluate`, empty values (never no condition) by
        // `render`.
        assert_eq!(template.evaluate(&Params), None);
        assert_eq!(
            template.render(&Params),
            Filter {
                conditions: vec![
                    Condition::Key(Bytes::new()),
                    Condition::Header {
                        name: Bytes::from_static(b"tenant"),
                        value: Bytes::new(),
                    },
                ]
            }
        );
        assert!(FilterTemplate::compile(Some("${nope}"), [], &[]).is_err());
    }

    #[test]
    fn overrides_keep_their_order_and_acks_map() {
        let overrides: OrderedStrings =
            serde_json::from_value(serde_json::json!({"b": "1", "a": "2"})).unwrap();
        assert_eq!(
            overrides.0,
            [("b".into(), "1".into()), ("a".into(), "2".into())]
        );
        assert_eq!(Acks::from(ProduceAcks::default()), Acks::All);
        assert_eq!(Acks::from(ProduceAcks::LeaderOnly), Acks::Leader);
    }
}
