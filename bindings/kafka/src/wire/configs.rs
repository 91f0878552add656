//! Kafka's documented topic-config defaults, for brokers whose DescribeConfigs returns only the
//! configs set explicitly on a topic (tansu does).

use super::types::{ConfigEntry, ConfigSource, TopicConfigs};

/// Topic configs and their defaults in Apache Kafka.
pub const TOPIC_DEFAULTS: &[(&str, &str)] = &[
    ("cleanup.policy", "delete"),
    ("compression.type", "producer"),
    ("delete.retention.ms", "86400000"),
    ("file.delete.delay.ms", "60000"),
    ("flush.messages", "9223372036854775807"),
    ("flush.ms", "9223372036854775807"),
    ("index.interval.bytes", "4096"),
    ("max.compaction.lag.ms", "9223372036854775807"),
    ("max.message.bytes", "1048588"),
    ("message.timestamp.type", "CreateTime"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("min.compaction.lag.ms", "0"),
    ("min.insync.replicas", "1"),
    ("preallocate", "false"),
    ("retention.bytes", "-1"),
    ("retention.ms", "604800000"),
    ("segment.bytes", "1073741824"),
    ("segment.index.bytes", "10485760"),
    ("segment.jitter.ms", "0"),
    ("segment.ms", "604800000"),
    ("unclean.leader.election.enable", "false"),
];

/// Adds every default the broker did not return, marked [`ConfigSource::KafkaDefault`].
pub fn fill_topic_defaults(configs: &mut TopicConfigs) {
    for (name, value) in TOPIC_DEFAULTS {
        configs
            .entry((*name).to_owned())
            .or_insert_with(|| ConfigEntry {
                value: Some((*value).to_owned()),
                source: ConfigSource::KafkaDefault,
                read_only: false,
                sensitive: false,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_values_win_over_defaults() {
        let mut configs = TopicConfigs::new();
        configs.insert(
            "cleanup.policy".into(),
            ConfigEntry {
                value: Some("compact".into()),
                source: ConfigSource::Topic,
                read_only: false,
                sensitive: false,
            },
        );
        fill_topic_defaults(&mut configs);
        assert_eq!(configs["cleanup.policy"].value.as_deref(), Some("compact"));
        assert_eq!(configs["cleanup.policy"].source, ConfigSource::Topic);
        assert_eq!(configs["retention.ms"].value.as_deref(), Some("604800000"));
        assert_eq!(configs["retention.ms"].source, ConfigSource::KafkaDefault);
        assert_eq!(configs.len(), TOPIC_DEFAULTS.len());
    }
}
