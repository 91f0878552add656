//! Routes compiled at load: `when` conditions into patterns, `with` expressions into segment
//! lists, and the async location templates into matchers that recover the correlation id from
//! a later `GET`.

use bytes::Bytes;
use http::HeaderName;
use regex::Regex;
use serde::Deserialize;
use zilla_binding_kafka::kind::{Acks, Filter};
use zilla_binding_kafka::mapping::{FilterTemplate, compile_headers};
use zilla_engine::expr::{Expression, ExpressionContext, RouteScope, Segment};
use zilla_engine::guard::{Authorization, GuardSession};
use zilla_engine::pattern::{Captures, Pattern};

use crate::config::{FetchWith, HttpKafkaCondition, HttpKafkaWith, ProduceWith};

/// The variable an async location template puts the correlation id in.
pub(crate) const CORRELATION_ID: &str = "correlationId";
/// The variable a key or override puts the idempotency key in.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotencyKey";

/// A compiled `when` entry.
#[derive(Debug)]
pub(crate) struct Condition {
    method: Option<Pattern>,
    path: Option<Pattern>,
}

impl Condition {
    pub(crate) fn compile(raw: HttpKafkaCondition) -> Result<Self, String> {
        // As in Zilla, `{name}` crosses `/`, and the method is a pattern too.
        Ok(Self {
            method: raw
                .method
                .as_deref()
                .map(|method| Pattern::compile(method, None))
                .transpose()?,
            path: raw
                .path
                .as_deref()
                .map(|path| Pattern::compile(path, None))
                .transpose()?,
        })
    }

    /// The path captures when `method` and `path` (without query) match.
    pub(crate) fn matches(&self, method: &str, path: &str) -> Option<Captures> {
        if self
            .method
            .as_ref()
            .is_some_and(|pattern| !pattern.matches(method))
        {
            return None;
        }
        match &self.path {
            Some(pattern) => pattern.captures(path),
            None => Some(Captures::new()),
        }
    }
}

/// A compiled `with`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "HttpKafkaWith")]
pub(crate) enum Target {
    Fetch(FetchTarget),
    Produce(ProduceTarget),
}

impl TryFrom<HttpKafkaWith> for Target {
    type Error = String;

    fn try_from(with: HttpKafkaWith) -> Result<Self, String> {
        match with {
            HttpKafkaWith::Fetch(fetch) => FetchTarget::compile(fetch).map(Target::Fetch),
            HttpKafkaWith::Produce(produce) => ProduceTarget::compile(produce).map(Target::Produce),
        }
    }
}

/// A compiled fetch `with`.
#[derive(Debug)]
pub(crate) struct FetchTarget {
    pub(crate) topic: Expression,
    filters: Vec<FilterTemplate>,
    /// Whether every latest value is answered as one JSON array.
    pub(crate) merge: bool,
}

impl FetchTarget {
    fn compile(fetch: FetchWith) -> Result<Self, String> {
        Ok(Self {
            topic: Expression::compile(&fetch.topic, &[])?,
            filters: FilterTemplate::all(fetch.filters, &[])?,
            merge: fetch.merge.is_some(),
        })
    }

    /// The Kafka filters for one request; as in Zilla, a value with nothing behind it (a guard
    /// the request has no session of) is empty rather than a refusal.
    pub(crate) fn filters(&self, scope: &Scope<'_>) -> Vec<Filter> {
        self.filters
            .iter()
            .map(|filter| filter.render(scope))
            .collect()
    }
}

/// A compiled produce `with`.
#[derive(Debug)]
pub(crate) struct ProduceTarget {
    pub(crate) topic: Expression,
    pub(crate) acks: Acks,
    pub(crate) key: Option<Expression>,
    pub(crate) overrides: Vec<(Bytes, Expression)>,
    pub(crate) reply_to: Option<Expression>,
    /// The header the correlation id is produced in, when not the binding's.
    pub(crate) correlation_header: Option<Bytes>,
    /// Response headers of a `202 Accepted`.
    pub(crate) async_headers: Vec<(HeaderName, Expression)>,
    /// The async templates that carry `${correlationId}`, as matchers of a later `GET` path.
    async_paths: Vec<Regex>,
}

impl ProduceTarget {
    fn compile(produce: ProduceWith) -> Result<Self, String> {
        let with_key = [IDEMPOTENCY_KEY];
        let overrides = compile_headers(produce.overrides.unwrap_or_default().0, &with_key)?;
        let async_headers: Vec<(HeaderName, Expression)> = produce
            .async_headers
            .unwrap_or_default()
            .0
            .into_iter()
            .map(|(name, value)| {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not an HTTP header name"))?;
                Ok((name, Expression::compile(&value, &[CORRELATION_ID])?))
            })
            .collect::<Result<_, String>>()?;
        if !async_headers.is_empty() && produce.reply_to.is_none() {
            return Err("`async` needs `reply-to`".into());
        }
        let async_paths = async_headers
            .iter()
            .filter(|(_, template)| {
                template
                    .segments()
                    .contains(&Segment::Variable(CORRELATION_ID.into()))
            })
            .map(|(_, template)| location_matcher(template))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            topic: Expression::compile(&produce.topic, &[])?,
            acks: produce.acks.into(),
            key: produce
                .key
                .as_deref()
                .map(|key| Expression::compile(key, &with_key))
                .transpose()?,
            overrides,
            reply_to: produce
                .reply_to
                .as_deref()
                .map(|reply_to| Expression::compile(reply_to, &[]))
                .transpose()?,
            correlation_header: produce.correlation_id.map(Bytes::from),
            async_headers,
            async_paths,
        })
    }

    /// The correlation id a `GET` on an async location names, if `path` is one.
    pub(crate) fn async_correlation_id(&self, path: &str) -> Option<String> {
        self.async_paths.iter().find_map(|matcher| {
            matcher
                .captures(path)
                .and_then(|captures| captures.name(CORRELATION_ID))
                .map(|id| id.as_str().to_owned())
        })
    }
}

/// A matcher of the paths an async location template produces: each variable matches one or
/// more characters, and `${correlationId}` is captured.
fn location_matcher(template: &Expression) -> Result<Regex, String> {
    let mut regex = String::from("^");
    let mut captured = false;
    for segment in template.segments() {
        match segment {
            Segment::Literal(text) => regex.push_str(&regex::escape(text)),
            Segment::Variable(name) if name == CORRELATION_ID && !captured => {
                regex.push_str("(?P<correlationId>.+)");
                captured = true;
            }
            _ => regex.push_str(".+"),
        }
    }
    regex.push('$');
    Regex::new(&regex).map_err(|error| error.to_string())
}

/// What a request's expressions are evaluated against: the route's captures and the
/// request's sessions, and the request's idempotency key and correlation id.
pub(crate) struct Scope<'a> {
    pub(crate) route: RouteScope<'a>,
    pub(crate) idempotency_key: Option<&'a str>,
    pub(crate) correlation_id: Option<&'a str>,
}

impl ExpressionContext for Scope<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.route.param(name)
    }

    fn guarded(&self, guard: &str) -> Option<&dyn GuardSession> {
        self.route.guarded(guard)
    }

    fn variable(&self, name: &str) -> Option<String> {
        match name {
            IDEMPOTENCY_KEY => self.idempotency_key,
            CORRELATION_ID => self.correlation_id,
            _ => None,
        }
        .map(str::to_owned)
    }
}

impl<'a> Scope<'a> {
    pub(crate) fn new(
        captures: &'a Captures,
        authorization: Option<&'a Authorization>,
        namespace: &'a str,
        idempotency_key: Option<&'a str>,
        correlation_id: Option<&'a str>,
    ) -> Self {
        Self {
            route: RouteScope {
                captures,
                authorization,
                namespace,
            },
            idempotency_key,
            correlation_id,
        }
    }

    /// The value of `expression`; as in Zilla, a value that is missing (a parameter another
    /// `when` entry captures, a guard the request has no session of) is empty.
    pub(crate) fn render(&self, expression: &Expression) -> String {
        expression.render(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;
    use zilla_binding_kafka::kind::Condition as KafkaCondition;

    fn produce(with: serde_json::Value) -> ProduceTarget {
        match serde_json::from_value::<Target>(with).unwrap() {
            Target::Produce(produce) => produce,
            Target::Fetch(_) => panic!("not produce"),
        }
    }

    /// A request signed in to guard `test0` as `alice`.
    fn signed_in() -> Authorization {
        let mut authorization = Authorization::default();
        authorization.insert("test:test0", std::sync::Arc::new(Session));
        authorization
    }

    #[test]
    fn conditions_match_method_and_path_with_captures_across_slashes() {
        let condition = Condition::compile(HttpKafkaCondition {
            method: Some("GET".into()),
            path: Some("/items/{id};cid={correlationId}".into()),
        })
        .unwrap();
        assert_eq!(
            condition.matches("GET", "/items/a/b;cid=k-1"),
            Some(vec![
                ("id".into(), "a/b".into()),
                ("correlationId".into(), "k-1".into())
            ])
        );
        assert_eq!(condition.matches("PUT", "/items/a;cid=k"), None);
        let any = Condition::compile(HttpKafkaCondition {
            method: None,
            path: Some("/events".into()),
        })
        .unwrap();
        assert!(any.matches("DELETE", "/events").is_some());
        assert!(any.matches("GET", "/events/1").is_none());
    }

    #[test]
    fn async_locations_give_back_the_correlation_id() {
        let target = produce(json!({
            "capability": "produce",
            "topic": "items-requests",
            "key": "${params.id}",
            "reply-to": "items-responses",
            "async": {"location": "/items/${params.id};cid=${correlationId}"}
        }));
        assert_eq!(
            target
                .async_correlation_id("/items/42;cid=k-0123abcd")
                .as_deref(),
            Some("k-0123abcd")
        );
        assert_eq!(target.async_correlation_id("/items/42"), None);
        let captures = vec![("id".to_owned(), "42".to_owned())];
        let scope = Scope::new(&captures, None, "test", Some("k"), Some("k-0123abcd"));
        assert_eq!(
            scope.render(&target.async_headers[0].1),
            "/items/42;cid=k-0123abcd"
        );
        assert_eq!(scope.render(target.key.as_ref().unwrap()), "42");
    }

    #[test]
    fn expressions_are_checked_at_load() {
        let bad = serde_json::from_value::<Target>(json!({
            "capability": "produce", "topic": "t", "key": "${correlationId}"
        }));
        assert!(bad.unwrap_err().to_string().contains("unknown expression"));
        let no_reply = serde_json::from_value::<Target>(json!({
            "capability": "produce", "topic": "t", "async": {"location": "/x/${correlationId}"}
        }));
        assert!(no_reply.unwrap_err().to_string().contains("reply-to"));
        let target = produce(json!({
            "capability": "produce", "topic": "t", "key": "${idempotencyKey}",
            "overrides": {"zilla:identity": "${guarded['jwt0'].identity}", "id": "${params.missing}"}
        }));
        let captures = Vec::new();
        let scope = Scope::new(&captures, None, "test", Some("abc"), None);
        assert_eq!(scope.render(target.key.as_ref().unwrap()), "abc");
        assert_eq!(scope.render(&target.overrides[0].1), "");
        assert_eq!(scope.render(&target.overrides[1].1), "");
    }

    struct Session;

    impl zilla_engine::guard::GuardSession for Session {
        fn identity(&self) -> Option<&str> {
            Some("alice")
        }
        fn verify(&self, _roles: &[String]) -> bool {
            true
        }
        fn attribute(&self, name: &str) -> Option<String> {
            (name == "topic").then(|| "items".to_owned())
        }
        fn expires_at(&self) -> Option<std::time::SystemTime> {
            None
        }
    }

    #[test]
    fn guard_values_come_from_the_request_session() {
        let target = produce(json!({
            "capability": "produce",
            "topic": "${guarded['test0'].identity}/${guarded['test0'].attributes.topic}",
            "overrides": {"zilla:identity": "${guarded['test0'].identity}"}
        }));
        let authorization = signed_in();
        let captures = Vec::new();
        let mut scope = Scope::new(&captures, Some(&authorization), "test", None, None);
        assert_eq!(scope.render(&target.topic), "alice/items");
        assert_eq!(scope.render(&target.overrides[0].1), "alice");
        // A session of another namespace's guard of the same name does not count.
        scope.route.namespace = "other";
        assert_eq!(scope.render(&target.topic), "/");
    }

    #[test]
    fn fetch_filters_become_kafka_filters() {
        let Target::Fetch(target) = serde_json::from_value::<Target>(json!({
            "capability": "fetch",
            "topic": "items-children",
            "filters": [{"key": "${params.child}", "headers": {"item-id": "${params.item}"}}]
        }))
        .unwrap() else {
            panic!("not fetch")
        };
        let captures = vec![
            ("item".to_owned(), "i1".to_owned()),
            ("child".to_owned(), "c1".to_owned()),
        ];
        let scope = Scope::new(&captures, None, "test", None, None);
        assert_eq!(
            target.filters(&scope),
            vec![Filter {
                conditions: vec![
                    KafkaCondition::Key(Bytes::from_static(b"c1")),
                    KafkaCondition::Header {
                        name: Bytes::from_static(b"item-id"),
                        value: Bytes::from_static(b"i1"),
                    },
                ]
            }]
        );
        assert!(!target.merge);
    }

    #[test]
    fn guarded_fetch_filters_are_empty_without_a_session() {
        let Target::Fetch(target) = serde_json::from_value::<Target>(json!({
            "capability": "fetch",
            "topic": "items",
            "filters": [{"key": "${guarded['test0'].identity}",
                         "headers": {"topic": "${guarded['test0'].attributes.topic}"}}]
        }))
        .unwrap() else {
            panic!("not fetch")
        };
        let filter = |key: &'static [u8], topic: &'static [u8]| Filter {
            conditions: vec![
                KafkaCondition::Key(Bytes::from_static(key)),
                KafkaCondition::Header {
                    name: Bytes::from_static(b"topic"),
                    value: Bytes::from_static(topic),
                },
            ],
        };
        let authorization = signed_in();
        let captures = Vec::new();
        let mut scope = Scope::new(&captures, Some(&authorization), "test", None, None);
        assert_eq!(target.filters(&scope), vec![filter(b"alice", b"items")]);
        // As in Zilla: no session, empty values; the conditions stay, so the filter matches
        // only records whose key and header are empty, never every record.
        scope.route.authorization = None;
        assert_eq!(target.filters(&scope), vec![filter(b"", b"")]);
    }
}
