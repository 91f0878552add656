//! `topics[].key` / `topics[].value` models, applied where Zilla applies them: a
//! `cache_client` encodes what it produces (validating it, and converting it to the stored
//! form, e.g. JSON to registry-framed Avro), a `cache_server` decodes what it serves
//! (validating records from Kafka and converting them to the view, e.g. Avro to JSON).
//!
//! A produced record that its model refuses is answered [`StreamError::Protocol`] and never
//! reaches Kafka (http-kafka answers 400). A record from Kafka that its model refuses is
//! skipped, and the model raises its validation failed event; readers see the records
//! around it. A `strategy: topic` reference resolves to the `<topic>-key` or
//! `<topic>-value` subject.
//!
//! The cache keeps records as Kafka has them, so decoding happens per read; key filters
//! compare the stored key bytes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use zilla_engine::BuildError;
use zilla_engine::binding::BuildContext;
use zilla_engine::components::Validator;
use zilla_engine::stream::{BoxFuture, StreamError};

use crate::config::KafkaOptions;
use crate::kind::{
    FetchBatch, FetchRequest, KafkaHandler, MergedItem, MergedRequest, MergedStream, Message,
    OffsetSpec, ProduceAck, ProduceRequest, ProducerIdentity, TopicConfig, TopicMetadata,
};

/// The models of one topic.
#[derive(Clone, Default)]
struct Models {
    key: Option<Arc<dyn Validator>>,
    value: Option<Arc<dyn Validator>>,
}

/// The models of every configured topic, by topic name.
#[derive(Clone, Default)]
pub struct TopicModels {
    by_topic: HashMap<String, Models>,
}

impl std::fmt::Debug for TopicModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_topic.keys()).finish()
    }
}

impl TopicModels {
    /// Builds the models `options.topics` names (errors at `options.topics[i].key|value`).
    pub fn build(context: &BuildContext<'_>, options: &KafkaOptions) -> Result<Self, BuildError> {
        let mut by_topic = HashMap::new();
        for (index, topic) in options.topics.iter().flatten().enumerate() {
            let build = |reference: &Option<serde_json::Value>, part: &str| {
                reference
                    .as_ref()
                    .map(|reference| {
                        context.model_with_subject(
                            reference,
                            &format!("options.topics[{index}].{part}"),
                            Some(&format!("{}-{part}", topic.name)),
                        )
                    })
                    .transpose()
            };
            let models = Models {
                key: build(&topic.key, "key")?,
                value: build(&topic.value, "value")?,
            };
            if models.key.is_some() || models.value.is_some() {
                by_topic.insert(topic.name.clone(), models);
            }
        }
        Ok(Self { by_topic })
    }

    /// Whether no topic has a model.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// Waits for whatever the models need fetched to encode `request` (a schema its prefix
    /// names that is not cached yet), so [`encode`](Self::encode) does not wait.
    pub async fn fetch_for(&self, request: &ProduceRequest) {
        if let Some(models) = self.by_topic.get(&request.topic) {
            fetch_parts(models, &request.key, &request.value).await;
        }
    }

    /// Validates and converts a record about to be produced; the error says which part
    /// failed and why.
    pub fn encode(&self, request: &mut ProduceRequest) -> Result<(), StreamError> {
        let Some(models) = self.by_topic.get(&request.topic) else {
            return Ok(());
        };
        for (part, model, data) in [
            ("key", &models.key, &mut request.key),
            ("value", &models.value, &mut request.value),
        ] {
            if let (Some(model), Some(bytes)) = (model, data.as_mut()) {
                match model.encode(bytes) {
                    Ok(Some(converted)) => *bytes = Bytes::from(converted),
                    Ok(None) => {}
                    Err(reason) => {
                        return Err(StreamError::Protocol(format!(
                            "{part} refused by its model: {reason}"
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Validates and converts a record read from Kafka; `None` when a model refuses it.
    fn decode(models: &Models, message: &Message) -> Option<Message> {
        let convert = |model: &Option<Arc<dyn Validator>>, data: &Option<Bytes>| match (model, data)
        {
            (Some(model), Some(bytes)) => match model.decode(bytes) {
                Ok(Some(converted)) => Some(Some(Bytes::from(converted))),
                Ok(None) => Some(Some(bytes.clone())),
                Err(reason) => {
                    tracing::debug!(
                        partition = message.partition,
                        offset = message.offset,
                        %reason,
                        "record skipped: refused by its model"
                    );
                    None
                }
            },
            _ => Some(data.clone()),
        };
        Some(Message {
            key: convert(&models.key, &message.key)?,
            value: convert(&models.value, &message.value)?,
            ..message.clone()
        })
    }

    /// `stream` with every record decoded, refused records left out.
    pub fn decode_stream(&self, topic: &str, stream: MergedStream) -> MergedStream {
        let Some(models) = self.by_topic.get(topic).cloned() else {
            return stream;
        };
        Box::pin(stream.filter_map(move |item| {
            let models = models.clone();
            async move {
                match item {
                    Ok(MergedItem::Message { message, progress }) => {
                        fetch_parts(&models, &message.key, &message.value).await;
                        Self::decode(&models, &message).map(|message| {
                            Ok(MergedItem::Message {
                                message: Arc::new(message),
                                progress,
                            })
                        })
                    }
                    other => Some(other),
                }
            }
        }))
    }
}

/// Awaits the fetches `models` need for a record's `key` and `value`: a slow catalog holds up
/// this record's stream, not the worker's thread.
async fn fetch_parts(models: &Models, key: &Option<Bytes>, value: &Option<Bytes>) {
    for (model, data) in [(&models.key, key), (&models.value, value)] {
        if let (Some(model), Some(bytes)) = (model, data)
            && let Some(fetching) = model.fetch(bytes)
        {
            fetching.await;
        }
    }
}

/// `inner` with `models` applied (encoding produced records when `encode_produced`, else
/// decoding read records); `inner` itself when no topic has a model.
pub fn apply(
    inner: Arc<dyn KafkaHandler>,
    models: TopicModels,
    encode_produced: bool,
) -> Arc<dyn KafkaHandler> {
    if models.is_empty() {
        inner
    } else {
        Arc::new(Modeled {
            inner,
            models,
            encode_produced,
        })
    }
}

/// A kafka handler with topic models applied: produced records encoded (`cache_client`) or
/// read records decoded (`cache_server`).
pub struct Modeled {
    /// The handler the models wrap.
    pub inner: Arc<dyn KafkaHandler>,
    /// The models.
    pub models: TopicModels,
    /// Whether produced records are encoded (else read records are decoded).
    pub encode_produced: bool,
}

impl KafkaHandler for Modeled {
    fn merged(&self, request: MergedRequest) -> BoxFuture<'_, Result<MergedStream, StreamError>> {
        Box::pin(async move {
            let topic = request.topic.clone();
            let stream = self.inner.merged(request).await?;
            Ok(if self.encode_produced {
                stream
            } else {
                self.models.decode_stream(&topic, stream)
            })
        })
    }

    fn produce(
        &self,
        mut request: ProduceRequest,
    ) -> BoxFuture<'_, Result<ProduceAck, StreamError>> {
        Box::pin(async move {
            if self.encode_produced {
                self.models.fetch_for(&request).await;
                self.models.encode(&mut request)?;
            }
            self.inner.produce(request).await
        })
    }

    fn metadata(&self, topic: &str) -> BoxFuture<'_, Result<TopicMetadata, StreamError>> {
        self.inner.metadata(topic)
    }

    fn init_producer(&self, topic: &str) -> BoxFuture<'_, Result<ProducerIdentity, StreamError>> {
        self.inner.init_producer(topic)
    }

    fn describe(&self, topic: &str) -> BoxFuture<'_, Result<TopicConfig, StreamError>> {
        self.inner.describe(topic)
    }

    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<FetchBatch, StreamError>> {
        self.inner.fetch(request)
    }

    fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> BoxFuture<'_, Result<i64, StreamError>> {
        self.inner.list_offset(topic, partition, spec)
    }

    crate::kind::forward_group_calls!(self, _topic => Ok::<_, StreamError>(&self.inner));
}
