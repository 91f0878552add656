//! Route `with`s compiled at load: expressions into segment lists evaluated per call.

use bytes::Bytes;
use serde::Deserialize;
use zilla_binding_kafka::kind::Acks;
use zilla_binding_kafka::mapping::{FilterTemplate, compile_headers};
use zilla_engine::expr::Expression;

use crate::config::{FetchWith, GrpcKafkaWith, ProduceWith};

/// A compiled `with`.
#[derive(Debug, Deserialize)]
#[serde(try_from = "GrpcKafkaWith")]
pub(crate) enum Target {
    Fetch(FetchTarget),
    Produce(ProduceTarget),
}

/// A compiled fetch `with`.
#[derive(Debug)]
pub(crate) struct FetchTarget {
    pub(crate) topic: Expression,
    pub(crate) filters: Vec<FilterTemplate>,
}

/// A compiled produce `with`.
#[derive(Debug)]
pub(crate) struct ProduceTarget {
    pub(crate) topic: Expression,
    pub(crate) acks: Acks,
    pub(crate) key: Option<Expression>,
    pub(crate) overrides: Vec<(Bytes, Expression)>,
    pub(crate) reply_to: Option<Expression>,
}

impl TryFrom<GrpcKafkaWith> for Target {
    type Error = String;

    fn try_from(with: GrpcKafkaWith) -> Result<Self, String> {
        let compile = |text: &str| Expression::compile(text, &[]);
        Ok(match with {
            GrpcKafkaWith::Fetch(FetchWith { topic, filters }) => Target::Fetch(FetchTarget {
                topic: compile(&topic)?,
                filters: FilterTemplate::all(filters, &[])?,
            }),
            GrpcKafkaWith::Produce(ProduceWith {
                topic,
                acks,
                key,
                overrides,
                reply_to,
            }) => Target::Produce(ProduceTarget {
                topic: compile(&topic)?,
                acks: acks.into(),
                key: key.as_deref().map(compile).transpose()?,
                overrides: compile_headers(overrides.unwrap_or_default().0, &[])?,
                reply_to: reply_to.as_deref().map(compile).transpose()?,
            }),
        })
    }
}
