//! The kafka binding factory: `client`, `cache_client`, `cache_server` and `proxy` kinds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zilla_engine::binding::{Binding, BindingFactory, BindingSchema, BuildContext, StartContext};
use zilla_engine::metrics::Gauge;
use zilla_engine::pattern::Pattern;
use zilla_engine::properties::Properties;
use zilla_engine::route::Routes;
use zilla_engine::stream::{BoxFuture, Bytes, StreamError};
use zilla_engine::{BindingKind, BuildError, QualifiedName};

use crate::cache::{Cache, CacheHandler, CacheTuning, DiskBudget, DiskTuning, MemoryBudget};
use crate::cache_disk::name_component;
use crate::client::{ClientTuning, KafkaClient};
use crate::config::{DefaultOffset, KafkaCondition, KafkaOptions};
use crate::kind::{
    FetchBatch, FetchRequest, FollowStream, Kafka, KafkaHandler, MergedRequest, MergedStream,
    OffsetSpec, ProduceAck, ProduceRequest, ProducerIdentity, Start, TopicConfig, TopicMetadata,
};
use crate::models::{self, TopicModels};
use crate::wire;

/// Builds kafka bindings.
#[derive(Debug)]
pub struct KafkaFactory;

impl BindingFactory for KafkaFactory {
    fn type_name(&self) -> &'static str {
        "kafka"
    }

    fn kinds(&self) -> &'static [BindingKind] {
        &[
            BindingKind::Client,
            BindingKind::CacheClient,
            BindingKind::CacheServer,
            BindingKind::Proxy,
        ]
    }

    fn accepts(&self, kind: BindingKind) -> &'static [&'static str] {
        match kind {
            BindingKind::Proxy => &["bytes"],
            _ => &["kafka"],
        }
    }

    fn emits(&self, kind: BindingKind) -> Option<&'static str> {
        match kind {
            BindingKind::Client | BindingKind::Proxy => Some("bytes"),
            _ => Some("kafka"),
        }
    }

    fn schema(&self, kind: BindingKind) -> BindingSchema {
        if kind == BindingKind::Proxy {
            return BindingSchema {
                options: Some(BindingSchema::of::<crate::proxy::KafkaProxyOptions>()),
                options_required: true,
                // Routes are the topic allow-list: `when` topics, `guarded` identities.
                when: Some(BindingSchema::of::<KafkaCondition>()),
                with: None,
            };
        }
        let mut options = BindingSchema::of::<KafkaOptions>();
        if kind != BindingKind::CacheServer
            && let Some(schema) = options.pointer_mut("/$defs/TopicOptions/properties/transforms")
        {
            let name = if kind == BindingKind::Client {
                "client"
            } else {
                "cache_client"
            };
            schema["x-unsupported"] = serde_json::Value::from(format!(
                "topic `transforms` are not supported on a kafka `{name}`: they apply where records enter the cache, so give them on the `cache_server`"
            ));
        }
        if kind == BindingKind::Client {
            // Topic models apply where records enter and leave the cache (cache_client and
            // cache_server); a client passes records through as they are.
            for model in ["key", "value"] {
                let pointer = format!("/$defs/TopicOptions/properties/{model}");
                if let Some(schema) = options.pointer_mut(&pointer) {
                    schema["x-unsupported"] = serde_json::Value::from(format!(
                        "topic `{model}` models are not supported on a kafka `client`; give them on the cache_client and cache_server"
                    ));
                }
            }
        } else {
            // Brokers and SASL credentials are the client's: the cache kinds reach Kafka
            // through one.
            for (key, reason) in [
                (
                    "authorization",
                    "`authorization` is not supported on kafka cache kinds: SASL credentials belong to the kafka `client`",
                ),
                (
                    "sasl",
                    "`sasl` is not supported on kafka cache kinds: SASL credentials belong to the kafka `client`",
                ),
                (
                    "servers",
                    "`servers` is not supported on kafka cache kinds: the kafka `client` names the brokers",
                ),
            ] {
                if let Some(schema) = options.pointer_mut(&format!("/properties/{key}")) {
                    schema["x-unsupported"] = serde_json::Value::from(reason);
                }
            }
        }
        if kind != BindingKind::CacheServer
            && let Some(bootstrap) = options.pointer_mut("/properties/bootstrap")
        {
            bootstrap["x-unsupported"] = serde_json::Value::from(
                "`bootstrap` is not supported here: it names the topics a kafka `cache_server` fetches from start-up",
            );
        }
        BindingSchema {
            options: Some(options),
            options_required: false,
            // Only a cache_client routes by topic; a client and a cache_server have one exit.
            when: match kind {
                BindingKind::CacheClient => Some(BindingSchema::of::<KafkaCondition>()),
                _ => None,
            },
            with: None,
        }
    }

    fn build(&self, context: &mut BuildContext<'_>) -> Result<Arc<dyn Binding>, BuildError> {
        if context.kind() == BindingKind::Proxy {
            return crate::proxy::build(context);
        }
        let options: KafkaOptions = context.options()?;
        refuse_routes(context)?;
        match context.kind() {
            BindingKind::Client => build_client(context, &options),
            BindingKind::CacheServer => build_cache_server(context, &options),
            _ => build_cache_client(context, &options),
        }
    }
}

/// What the routes of a kafka `client`, `cache_client` or `cache_server` cannot do: a client
/// and a cache_server have their one `exit` (a cache_server's cache fetches every topic through
/// it), and a cache_client's requests carry no guard session to check roles against.
fn refuse_routes(context: &BuildContext<'_>) -> Result<(), BuildError> {
    let routes = &context.config().routes;
    match context.kind() {
        BindingKind::Client | BindingKind::CacheServer if !routes.is_empty() => {
            Err(BuildError::at(
                "routes",
                format!(
                    "`routes` are not supported on a kafka `{}`: give the binding one `exit`",
                    context.kind()
                ),
            ))
        }
        BindingKind::CacheClient => match routes.iter().position(|r| !r.guarded.is_empty()) {
            Some(index) => Err(BuildError::at(
                format!("routes[{index}].guarded"),
                "kafka cache_client `guarded` routes are not supported: its requests carry no credentials; guard the binding in front of it",
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// A binding whose handler is all there is.
struct Passive;

impl Binding for Passive {}

/// The binding's `exit`, or the load error `missing` saying what it must name.
fn exit_of(context: &BuildContext<'_>, missing: &'static str) -> Result<String, BuildError> {
    context
        .config()
        .exit
        .clone()
        .ok_or_else(|| BuildError::at("", missing))
}

fn build_client(
    context: &mut BuildContext<'_>,
    options: &KafkaOptions,
) -> Result<Arc<dyn Binding>, BuildError> {
    let exit = exit_of(
        context,
        "a kafka client needs an `exit` (a tcp or tls client)",
    )?;
    let connector = context.exit::<Bytes>(&exit)?;
    let sasl = crate::credentials::sasl_config(
        context,
        options.sasl.as_ref(),
        options.authorization.as_ref(),
    )?;
    let properties = context.properties();
    // Without `servers`, brokers are reached through the exit's own host and port.
    let bootstrap = options
        .servers
        .clone()
        .unwrap_or_else(|| vec!["localhost:9092".to_owned()]);
    let config = wire::ClusterConfig {
        bootstrap,
        connection: wire::ConnectionConfig {
            client_id: properties
                .get("zilla.binding.kafka.client.id")
                .unwrap_or("zilla")
                .to_owned(),
            sasl,
            ..wire::ConnectionConfig::default()
        },
        metadata_max_age: properties.millis(
            "zilla.binding.kafka.client.meta.max.age.ms",
            Duration::from_secs(300),
        ),
        decode_limits: decode_limits(properties.u64(
            "zilla.binding.kafka.client.decompress.max.bytes",
            wire::DecodeLimits::default().max_fetch_decompressed_bytes as u64,
        )),
        ..wire::ClusterConfig::default()
    };
    let cluster = wire::Cluster::new(connector, config)
        .map_err(|error| BuildError::at("options.servers", error.to_string()))?;
    let tuning = ClientTuning {
        fetch_max_wait: properties.millis(
            "zilla.binding.kafka.client.fetch.max.wait.millis",
            ClientTuning::default().fetch_max_wait,
        ),
        fetch_max_bytes: properties.u64(
            "zilla.binding.kafka.client.fetch.max.bytes",
            ClientTuning::default().fetch_max_bytes as u64,
        ) as i32,
        produce_timeout: properties.millis(
            "zilla.binding.kafka.client.produce.request.timeout.millis",
            ClientTuning::default().produce_timeout,
        ),
        produce_idempotent: properties.bool(
            "zilla.binding.kafka.client.produce.idempotent",
            ClientTuning::default().produce_idempotent,
        ),
    };
    context.publish::<Kafka>(Arc::new(
        KafkaClient::new(cluster, tuning).with_default_offsets(defaults(options)),
    ));
    Ok(Arc::new(Passive))
}

/// Decompression bounded to `bytes` per fetch response (and so per batch too).
fn decode_limits(bytes: u64) -> wire::DecodeLimits {
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    wire::DecodeLimits {
        max_decompressed_bytes: bytes,
        max_fetch_decompressed_bytes: bytes,
    }
}

fn defaults(options: &KafkaOptions) -> HashMap<String, Start> {
    options
        .topics
        .iter()
        .flatten()
        .filter_map(|topic| {
            topic.default_offset.map(|offset| {
                let start = match offset {
                    DefaultOffset::Live => Start::Live,
                    DefaultOffset::Historical => Start::Historical,
                };
                (topic.name.clone(), start)
            })
        })
        .collect()
}

struct CacheServer {
    cache: Arc<Cache>,
    bootstrap: Vec<String>,
    /// How long a topic without readers stays cached.
    idle: Duration,
    /// `kafka.cache.size`, when enabled.
    size: Option<Gauge>,
    /// `kafka.cache.disk.size`, when enabled.
    disk_size: Option<Gauge>,
}

/// How often `kafka.cache.size` and `kafka.cache.disk.size` are sampled.
const CACHE_SIZE_INTERVAL: Duration = Duration::from_secs(1);

impl Binding for CacheServer {
    fn start(&self, context: &StartContext) {
        for topic in &self.bootstrap {
            let cache = self.cache.clone();
            let topic = topic.clone();
            tokio::spawn(async move {
                // The broker may not be up yet: keep trying, as the cache would on demand.
                let mut delay = Duration::from_millis(200);
                while let Err(error) = cache.bootstrap(&topic).await {
                    tracing::debug!(%topic, %error, "bootstrap fetch not started yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            });
        }
        let cache = self.cache.clone();
        let retired = context.retired.clone();
        let shutdown = context.shutdown.clone();
        let idle = self.idle;
        let size = self.size.clone();
        let disk_size = self.disk_size.clone();
        let sampled = size.is_some() || disk_size.is_some();
        tokio::spawn(async move {
            // Topics nobody reads are evicted once idle for `idle`, checked a few times as
            // often.
            let mut sweep = tokio::time::interval(
                (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(5)),
            );
            let mut sample = tokio::time::interval(CACHE_SIZE_INTERVAL);
            loop {
                tokio::select! {
                    _ = retired.cancelled() => break,
                    _ = shutdown.cancelled() => break,
                    _ = sweep.tick() => {
                        cache.evict_idle(idle);
                    }
                    _ = sample.tick(), if sampled => {
                        if let Some(size) = &size {
                            size.set(i64::try_from(cache.budget().held()).unwrap_or(i64::MAX));
                        }
                        if let Some(disk_size) = &disk_size {
                            disk_size.set(i64::try_from(cache.disk_used()).unwrap_or(i64::MAX));
                        }
                    }
                }
            }
            cache.stop();
        });
    }
}

fn build_cache_server(
    context: &mut BuildContext<'_>,
    options: &KafkaOptions,
) -> Result<Arc<dyn Binding>, BuildError> {
    let exit = exit_of(
        context,
        "a kafka cache_server needs an `exit` (a kafka client)",
    )?;
    let upstream = context.exit::<Kafka>(&exit)?;
    let properties = context.properties();
    let disk = disk_tuning(properties, context.name());
    let tuning = cache_tuning(properties, disk.is_some());
    let idle = properties.millis(
        "zilla.binding.kafka.cache.idle.evict.millis",
        Duration::from_secs(60),
    );
    // One budget for every cache_server of the gateway.
    let budget = MemoryBudget::shared(tuning.memory_bytes);
    let transforms = crate::transforms::build(options)
        .map_err(|(path, message)| BuildError::at(path, message))?;
    let mut cache =
        Cache::with_budget(upstream, defaults(options), tuning, budget).transforming(transforms);
    if let Some(disk) = disk {
        cache = cache.with_disk(disk);
    }
    let cache = Arc::new(cache);
    let topic_models = TopicModels::build(context, options)?;
    let handler: Arc<dyn KafkaHandler> = Arc::new(CacheHandler {
        cache: cache.clone(),
    });
    context.publish::<Kafka>(models::apply(handler, topic_models, false));
    Ok(Arc::new(CacheServer {
        cache,
        bootstrap: options.bootstrap.clone().unwrap_or_default(),
        idle,
        size: context.metrics().gauge("kafka.cache.size"),
        disk_size: context.metrics().gauge("kafka.cache.disk.size"),
    }))
}

/// A `cache_server`'s tuning from its properties. A partition keeps
/// `zilla.binding.kafka.cache.partition.bytes` of its newest records in memory: by default
/// 4 MiB where segment files hold every record fetched (`with_disk`), so memory is a hot tail
/// and the OS page cache, which the kernel can reclaim, holds the rest; 64 MiB where memory is
/// the only tier, since what it drops is then read from Kafka again. What a partition's tail
/// fetches while its history is still fetched stays in memory only, so it keeps the property's
/// value or 64 MiB whatever the tiers.
fn cache_tuning(properties: &Properties, with_disk: bool) -> CacheTuning {
    let default = CacheTuning::default();
    let partition_bytes = |default: usize| properties.u64(PARTITION_BYTES, default as u64) as usize;
    CacheTuning {
        partition_bytes: partition_bytes(if with_disk {
            DEFAULT_DISK_BACKED_PARTITION_BYTES
        } else {
            default.partition_bytes
        }),
        // A tail is kept in memory only, whatever the tiers.
        tail_bytes: partition_bytes(default.tail_bytes),
        fetch_max_wait_ms: properties
            .millis(
                "zilla.binding.kafka.client.fetch.max.wait.millis",
                Duration::from_millis(default.fetch_max_wait_ms as u64),
            )
            .as_millis() as i32,
        // Per partition and fetch; the client caps it at its own fetch.max.bytes.
        fetch_max_bytes: properties
            .u64(
                "zilla.binding.kafka.client.fetch.max.bytes",
                default.fetch_max_bytes as u64,
            )
            .min(i32::MAX as u64) as i32,
        memory_bytes: properties.u64(
            "zilla.binding.kafka.cache.memory.bytes",
            default.memory_bytes as u64,
        ) as usize,
    }
}

/// Where and how much a `cache_server` named `name` keeps on disk: `None` when
/// `zilla.binding.kafka.cache.disk.bytes` is 0.
fn disk_tuning(properties: &Properties, name: &QualifiedName) -> Option<DiskTuning> {
    let limit = properties.u64(
        "zilla.binding.kafka.cache.disk.bytes",
        DEFAULT_CACHE_DISK_BYTES,
    );
    if limit == 0 {
        return None;
    }
    let engine = PathBuf::from(
        properties
            .get("zilla.engine.directory")
            .unwrap_or(".zilla/engine"),
    );
    // An absolute cache directory replaces the engine directory, as `Path::join` does.
    let cache = engine.join(
        properties
            .get("zilla.engine.cache.directory")
            .unwrap_or("cache"),
    );
    Some(DiskTuning {
        directory: cache.join(format!(
            "{}.{}",
            name_component(&name.namespace),
            name_component(&name.name)
        )),
        segment_bytes: properties.u64(
            "zilla.binding.kafka.cache.segment.bytes",
            DEFAULT_CACHE_SEGMENT_BYTES,
        ),
        budget: DiskBudget::shared(limit),
    })
}

/// The bytes each cached partition keeps in memory.
const PARTITION_BYTES: &str = "zilla.binding.kafka.cache.partition.bytes";
/// The default of [`PARTITION_BYTES`] where segment files hold a partition's records too.
const DEFAULT_DISK_BACKED_PARTITION_BYTES: usize = 4 << 20;
/// The gateway's default disk budget for cached records.
const DEFAULT_CACHE_DISK_BYTES: u64 = 4 << 30;
/// The default size of a cache segment file.
const DEFAULT_CACHE_SEGMENT_BYTES: u64 = 64 << 20;

struct Topic(Option<Pattern>);

/// Routes each operation by topic to a cache server, applying the topic's `defaultOffset`.
struct CacheClient {
    routes: Routes<Topic, (), Arc<dyn KafkaHandler>>,
    defaults: HashMap<String, Start>,
}

impl CacheClient {
    fn route(&self, topic: &str) -> Result<&Arc<dyn KafkaHandler>, StreamError> {
        self.routes
            .resolve(None, |condition| {
                condition.0.as_ref().is_none_or(|p| p.matches(topic))
            })
            .map(|route| &route.exit)
            .ok_or(StreamError::NoRoute)
    }
}

impl KafkaHandler for CacheClient {
    fn merged(
        &self,
        mut request: MergedRequest,
    ) -> BoxFuture<'_, Result<MergedStream, StreamError>> {
        Box::pin(async move {
            request.start = request
                .start
                .or_topic_default(&request.topic, &self.defaults);
            self.route(&request.topic)?.merged(request).await
        })
    }

    fn produce(&self, request: ProduceRequest) -> BoxFuture<'_, Result<ProduceAck, StreamError>> {
        Box::pin(async move { self.route(&request.topic)?.produce(request).await })
    }

    fn metadata(&self, topic: &str) -> BoxFuture<'_, Result<TopicMetadata, StreamError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.route(&topic)?.metadata(&topic).await })
    }

    fn init_producer(&self, topic: &str) -> BoxFuture<'_, Result<ProducerIdentity, StreamError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.route(&topic)?.init_producer(&topic).await })
    }

    fn describe(&self, topic: &str) -> BoxFuture<'_, Result<TopicConfig, StreamError>> {
        let topic = topic.to_owned();
        Box::pin(async move { self.route(&topic)?.describe(&topic).await })
    }

    fn fetch(&self, request: FetchRequest) -> BoxFuture<'_, Result<FetchBatch, StreamError>> {
        Box::pin(async move { self.route(&request.topic)?.fetch(request).await })
    }

    fn follow(&self, request: FetchRequest) -> FollowStream<'_> {
        match self.route(&request.topic) {
            Ok(handler) => handler.follow(request),
            Err(error) => Box::pin(futures_util::stream::once(async move { Err(error) })),
        }
    }

    fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        spec: OffsetSpec,
    ) -> BoxFuture<'_, Result<i64, StreamError>> {
        let topic = topic.to_owned();
        Box::pin(async move {
            self.route(&topic)?
                .list_offset(&topic, partition, spec)
                .await
        })
    }

    crate::kind::forward_group_calls!(self, topic => self.route(topic));
}

fn build_cache_client(
    context: &mut BuildContext<'_>,
    options: &KafkaOptions,
) -> Result<Arc<dyn Binding>, BuildError> {
    let routes = context.routes::<Kafka, KafkaCondition, Topic, ()>(|condition| {
        condition
            .topic
            .map(|topic| Pattern::compile(&topic, None))
            .transpose()
            .map(Topic)
    })?;
    if routes.is_empty() {
        return Err(BuildError::at(
            "",
            "a kafka cache_client needs an `exit` or `routes` (to a cache_server)",
        ));
    }
    let topic_models = TopicModels::build(context, options)?;
    let handler: Arc<dyn KafkaHandler> = Arc::new(CacheClient {
        routes,
        defaults: defaults(options),
    });
    context.publish::<Kafka>(models::apply(handler, topic_models, true));
    Ok(Arc::new(Passive))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> QualifiedName {
        QualifiedName {
            namespace: "test".to_owned(),
            name: "cache0".to_owned(),
        }
    }

    #[test]
    fn a_partition_keeps_a_hot_tail_in_memory_where_segment_files_hold_its_records() {
        let properties = Properties::default();
        let disk = disk_tuning(&properties, &name());
        assert!(disk.is_some(), "segment files are on by default");
        let tuning = cache_tuning(&properties, disk.is_some());
        assert_eq!(tuning.partition_bytes, 4 << 20);
        // What a partition's tail fetches while its history is fetched is in memory only.
        assert_eq!(tuning.tail_bytes, 64 << 20);
    }

    #[test]
    fn a_partition_keeps_64_mib_in_memory_without_segment_files() {
        let properties = Properties::from_assignments(["zilla.binding.kafka.cache.disk.bytes=0"]);
        let disk = disk_tuning(&properties, &name());
        assert!(disk.is_none());
        let tuning = cache_tuning(&properties, disk.is_some());
        assert_eq!(tuning.partition_bytes, 64 << 20);
    }

    #[test]
    fn the_partition_bytes_property_replaces_either_default() {
        for disk in ["0", "1073741824"] {
            let properties = Properties::from_assignments([
                format!("zilla.binding.kafka.cache.disk.bytes={disk}").as_str(),
                "zilla.binding.kafka.cache.partition.bytes=1048576",
            ]);
            let with_disk = disk_tuning(&properties, &name()).is_some();
            let tuning = cache_tuning(&properties, with_disk);
            assert_eq!(tuning.partition_bytes, 1 << 20);
            assert_eq!(tuning.tail_bytes, 1 << 20);
        }
    }
}
