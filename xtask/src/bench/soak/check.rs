//! After the run: the topics read back with confluent-kafka and compared with what the
//! producers had acknowledged and every subscriber received; and the process samples taken
//! every 10 s reduced to drift per hour.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zilla_tests::Broker;

use super::super::sse_fanout::Seen;
use super::clients::{Produced, Subscription, Value};

/// Reads partition 0 of the topic from the start to its end offset and prints the values as a
/// JSON list of base64 strings (a value need not be text). A consumer that makes no progress for
/// `STALLED` seconds is replaced by a fresh one assigned at the next offset (new connections,
/// new fetch session): after an hour of load the broker once left a consumer's fetches
/// unanswered for minutes while answering other connections. Progress and every replacement
/// go to standard error.
const READ_BACK: &str = r#"
import base64, json, sys, time, uuid
from confluent_kafka import Consumer, TopicPartition
STALLED, DEADLINE = 30, 900
bootstrap, topic = sys.argv[1], sys.argv[2]
def consumer_at(offset):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4()),
                         "enable.auto.commit": False, "isolation.level": "read_uncommitted",
                         "fetch.max.bytes": 1048576, "max.partition.fetch.bytes": 262144,
                         "fetch.wait.max.ms": 100, "socket.timeout.ms": 20000})
    consumer.assign([TopicPartition(topic, 0, offset)])
    return consumer
watermarks = Consumer({"bootstrap.servers": bootstrap, "group.id": str(uuid.uuid4())})
low, high = watermarks.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
watermarks.close()
started = time.time()
values, next_offset, replaced = [], low, 0
consumer, progressed = consumer_at(low), time.time()
while next_offset < high:
    if time.time() - started > DEADLINE:
        sys.exit(f"read {next_offset - low} of {high - low} records of {topic} in {DEADLINE} s "
                 f"({replaced} stalled consumers replaced)")
    if time.time() - progressed > STALLED:
        replaced += 1
        print(f"{topic}: no record for {STALLED} s at offset {next_offset} of {high}; "
              f"replacing the consumer", file=sys.stderr, flush=True)
        consumer.close()
        consumer, progressed = consumer_at(next_offset), time.time()
    for message in consumer.consume(1000, timeout=1):
        if message.error():
            sys.exit(str(message.error()))
        if message.offset() < next_offset:
            continue
        values.append(base64.b64encode(message.value() or b"").decode())
        next_offset, progressed = message.offset() + 1, time.time()
consumer.close()
print(f"{topic}: read {high - low} records in {time.time() - started:.1f} s, "
      f"{replaced} stalled consumers replaced", file=sys.stderr, flush=True)
print(json.dumps(values))
"#;

/// Every value on partition 0 of `topic`, read by confluent-kafka, as text (invalid UTF-8
/// replaced).
pub fn read_back(broker: &Broker, topic: &str) -> Result<Vec<String>> {
    Ok(read_back_bytes(broker, topic)?
        .iter()
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .collect())
}

/// The `message` of every `FanoutMessage` on partition 0 of `topic`; a record that is none is
/// an empty string (not a value of the run).
pub fn read_back_messages(broker: &Broker, topic: &str) -> Result<Vec<String>> {
    Ok(read_back_bytes(broker, topic)?
        .iter()
        .map(|value| super::grpc::decode_value(value).unwrap_or_default())
        .collect())
}

/// On failure the error carries the end of the broker's log, since the read-back runs after
/// the broker has been through the whole fault schedule.
fn read_back_bytes(broker: &Broker, topic: &str) -> Result<Vec<Vec<u8>>> {
    let values = zilla_tests::python_json(READ_BACK, &[&broker.address(), topic], "")
        .with_context(|| {
            let log = broker.log();
            let tail: Vec<&str> = log.lines().rev().take(BROKER_LOG_LINES).collect();
            format!(
                "reading {topic} back with confluent-kafka; the broker log ends with:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })?;
    let values: Vec<String> =
        serde_json::from_value(values).context("the read-back is not a list of strings")?;
    values
        .iter()
        .map(|value| {
            STANDARD
                .decode(value)
                .with_context(|| format!("not base64: {value:?}"))
        })
        .collect()
}

/// How much of the broker's log a failed read-back shows.
const BROKER_LOG_LINES: usize = 40;

/// The comparison of the topic with the producers and subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Measured values in the topic (each counted once).
    pub in_topic: u64,
    /// Measured values found more than once in the topic.
    pub topic_duplicates: u64,
    pub acknowledged: u64,
    /// Acknowledged with `204` but not in the topic: must be 0.
    pub acknowledged_missing: u64,
    /// In the topic though the request failed (the broker wrote it, the answer was lost).
    pub unacknowledged_written: u64,
    pub subscribers: usize,
    /// Subscribers that never received a warm-up value (so were never known to be live).
    pub never_live: usize,
    /// Repeats beyond what the topic holds (a value written twice is received twice by an
    /// exact subscriber), over all subscribers, and the most any one saw.
    pub duplicates: u64,
    pub most_duplicates: u64,
    /// Repeats of values the topic holds more than once: not the subscribers' doing.
    pub topic_repeats: u64,
    /// Values in the topic a subscriber did not receive, over all subscribers.
    pub missed: u64,
    /// Values received that are not in the topic.
    pub phantom: u64,
    pub malformed: u64,
    /// delivered ÷ expected: the lowest of any subscriber, and over all of them.
    pub lowest_ratio: f64,
    pub overall_ratio: f64,
    pub reconnects: u64,
    pub failed_attempts: u64,
    /// For each fault: the median and the longest time to a subscriber's first event after it,
    /// and how many subscribers had none.
    pub first_event: Vec<FirstEvent>,
    pub longest_stall: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstEvent {
    pub median: Duration,
    pub max: Duration,
    pub without: usize,
}

impl Comparison {
    pub fn new(
        topic: &[String],
        total: u64,
        produced: &Produced,
        subscriptions: &[Subscription],
        faults: usize,
    ) -> Self {
        let mut in_topic = Seen::new(total);
        let (mut count, mut topic_duplicates) = (0, 0);
        // How many more times than once the topic holds a value.
        let mut written_again: HashMap<u64, u64> = HashMap::new();
        for value in topic {
            if let Some(Value::Sample(seq)) = Value::parse(value.as_bytes())
                && seq < total
            {
                if in_topic.insert(seq) {
                    count += 1;
                } else {
                    topic_duplicates += 1;
                    *written_again.entry(seq).or_default() += 1;
                }
            }
        }
        let (mut acknowledged_missing, mut unacknowledged_written) = (0, 0);
        for seq in 0..total {
            match (produced.acknowledged.contains(seq), in_topic.contains(seq)) {
                (true, false) => acknowledged_missing += 1,
                (false, true) => unacknowledged_written += 1,
                _ => {}
            }
        }
        let mut comparison = Self {
            in_topic: count,
            topic_duplicates,
            acknowledged: produced.acknowledged_count,
            acknowledged_missing,
            unacknowledged_written,
            subscribers: subscriptions.len(),
            never_live: 0,
            duplicates: 0,
            most_duplicates: 0,
            topic_repeats: 0,
            missed: 0,
            phantom: 0,
            malformed: 0,
            lowest_ratio: 1.0,
            overall_ratio: 1.0,
            reconnects: 0,
            failed_attempts: 0,
            first_event: Vec::new(),
            longest_stall: Duration::ZERO,
        };
        let mut delivered_all = 0u64;
        for subscription in subscriptions {
            let delivered = (0..total)
                .filter(|&seq| in_topic.contains(seq) && subscription.seen.contains(seq))
                .count() as u64;
            comparison.phantom += subscription.received - delivered;
            comparison.missed += count - delivered;
            delivered_all += delivered;
            let ratio = delivered as f64 / count.max(1) as f64;
            comparison.lowest_ratio = comparison.lowest_ratio.min(ratio);
            comparison.never_live += usize::from(!subscription.warmed);
            let (mut duplicates, mut topic_repeats) = (0, 0);
            for (seq, repeats) in &subscription.repeats {
                let allowed = written_again.get(seq).copied().unwrap_or(0);
                duplicates += repeats.saturating_sub(allowed);
                topic_repeats += (*repeats).min(allowed);
            }
            comparison.duplicates += duplicates;
            comparison.most_duplicates = comparison.most_duplicates.max(duplicates);
            comparison.topic_repeats += topic_repeats;
            comparison.malformed += subscription.malformed;
            comparison.reconnects += subscription.reconnects;
            comparison.failed_attempts += subscription.failed_attempts;
            comparison.longest_stall = comparison.longest_stall.max(subscription.longest_stall);
        }
        comparison.overall_ratio =
            delivered_all as f64 / (count * subscriptions.len() as u64).max(1) as f64;
        comparison.first_event = (0..faults)
            .map(|fault| {
                let mut times: Vec<Duration> = subscriptions
                    .iter()
                    .filter_map(|s| s.first_event_after.get(fault).copied())
                    .collect();
                times.sort_unstable();
                FirstEvent {
                    median: times.get(times.len() / 2).copied().unwrap_or_default(),
                    max: times.last().copied().unwrap_or_default(),
                    without: subscriptions.len() - times.len(),
                }
            })
            .collect();
        comparison
    }

    /// An error naming every broken guarantee: an acknowledged value missing from the topic,
    /// a subscriber that missed a value or saw one twice or one that was never written.
    pub fn verdict(&self) -> Result<()> {
        let mut broken = Vec::new();
        if self.acknowledged_missing > 0 {
            broken.push(format!(
                "{} acknowledged values are not in the topic",
                self.acknowledged_missing
            ));
        }
        if self.missed > 0 {
            broken.push(format!(
                "subscribers missed {} deliveries of values in the topic",
                self.missed
            ));
        }
        if self.duplicates > 0 {
            broken.push(format!(
                "subscribers received {} duplicates",
                self.duplicates
            ));
        }
        if self.phantom > 0 {
            broken.push(format!(
                "subscribers received {} values not in the topic",
                self.phantom
            ));
        }
        if self.never_live > 0 {
            broken.push(format!(
                "{} subscribers never received an event",
                self.never_live
            ));
        }
        if self.in_topic == 0 {
            broken.push("nothing was written".to_owned());
        }
        if broken.is_empty() {
            Ok(())
        } else {
            bail!("{}", broken.join("; "))
        }
    }
}

/// One process sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    pub process: String,
    pub pid: u32,
    pub rss_kib: u64,
    pub fds: u64,
    pub cpu_percent: f64,
}

pub const CSV_HEADER: &str = "seconds,process,pid,rss_kib,fds,cpu_percent";

impl Sample {
    pub fn csv(&self) -> String {
        format!(
            "{:.1},{},{},{},{},{:.1}",
            self.seconds, self.process, self.pid, self.rss_kib, self.fds, self.cpu_percent
        )
    }
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .with_context(|| format!("cannot list {path}"))?
        .count() as u64)
}

/// How one process's memory and descriptors moved over the samples from `from_seconds` on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    pub samples: usize,
    pub rss_mean_kib: f64,
    /// The least-squares slope of RSS, in % of the mean per hour.
    pub rss_percent_per_hour: f64,
    pub fds_min: u64,
    pub fds_max: u64,
    pub cpu_mean_percent: f64,
}

/// The drift of `process` (its last pid only: a restarted process starts afresh) over the
/// samples from `from_seconds` on; `None` with fewer than two.
pub fn drift(samples: &[Sample], process: &str, from_seconds: f64) -> Option<Drift> {
    let pid = samples.iter().rev().find(|s| s.process == process)?.pid;
    let own: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.process == process && s.pid == pid && s.seconds >= from_seconds)
        .collect();
    if own.len() < 2 {
        return None;
    }
    let n = own.len() as f64;
    let mean_t = own.iter().map(|s| s.seconds).sum::<f64>() / n;
    let mean_rss = own.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
    let covariance: f64 = own
        .iter()
        .map(|s| (s.seconds - mean_t) * (s.rss_kib as f64 - mean_rss))
        .sum();
    let variance: f64 = own.iter().map(|s| (s.seconds - mean_t).powi(2)).sum();
    let slope_per_second = if variance > 0.0 {
        covariance / variance
    } else {
        0.0
    };
    Some(Drift {
        samples: own.len(),
        rss_mean_kib: mean_rss,
        rss_percent_per_hour: slope_per_second * 3600.0 / mean_rss.max(1.0) * 100.0,
        fds_min: own.iter().map(|s| s.fds).min().unwrap_or(0),
        fds_max: own.iter().map(|s| s.fds).max().unwrap_or(0),
        cpu_mean_percent: own.iter().map(|s| s.cpu_percent).sum::<f64>() / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seconds: f64, process: &str, pid: u32, rss_kib: u64, fds: u64) -> Sample {
        Sample {
            seconds,
            process: process.to_owned(),
            pid,
            rss_kib,
            fds,
            cpu_percent: 10.0,
        }
    }

    #[test]
    fn drift_is_the_slope_over_the_last_pid_after_warm_up() {
        let samples = [
            sample(0.0, "a", 1, 50_000, 10),
            sample(0.0, "b", 2, 1_000, 5),
            sample(10.0, "a", 3, 900, 8),
            sample(20.0, "a", 3, 1_000, 9),
            sample(3600.0, "a", 3, 1_010, 9),
            sample(7200.0, "a", 3, 1_020, 12),
        ];
        let drift = drift(&samples, "a", 15.0).expect("three samples");
        assert_eq!(drift.samples, 3);
        assert_eq!((drift.fds_min, drift.fds_max), (9, 12));
        assert!(
            (drift.rss_percent_per_hour - 0.990).abs() < 0.01,
            "{drift:?}"
        );
        assert_eq!(super::drift(&samples, "b", 0.0), None);
        assert!(fd_count(std::process::id()).is_ok_and(|fds| fds >= 3));
    }

    fn produced(acknowledged: &[u64], total: u64) -> Produced {
        let mut seen = Seen::new(total);
        for &seq in acknowledged {
            seen.insert(seq);
        }
        Produced {
            acknowledged: seen,
            acknowledged_count: acknowledged.len() as u64,
            failed: total - acknowledged.len() as u64,
            first_error: None,
        }
    }

    #[test]
    fn an_acknowledged_value_missing_from_the_topic_fails_the_run() {
        let topic: Vec<String> = ["warm-0", "soak-0", "soak-2", "soak-3", "soak-3"]
            .map(str::to_owned)
            .to_vec();
        let comparison = Comparison::new(&topic, 4, &produced(&[0, 1, 2], 4), &[], 0);
        assert_eq!(comparison.in_topic, 3);
        assert_eq!(comparison.topic_duplicates, 1);
        assert_eq!(comparison.acknowledged_missing, 1, "soak-1");
        assert_eq!(comparison.unacknowledged_written, 1, "soak-3");
        let error = comparison.verdict().err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("1 acknowledged values are not in the topic")
        );
        let whole = Comparison::new(&topic, 4, &produced(&[0, 2], 4), &[], 0);
        assert!(whole.verdict().is_ok(), "{whole:?}");
    }

    #[test]
    fn each_subscriber_is_compared_with_the_topic() {
        use std::net::SocketAddr;
        let shared = super::super::clients::Shared::new(SocketAddr::from(([127, 0, 0, 1], 1)), 4);
        let now = tokio::time::Instant::now();
        let mut whole = Subscription::new(4);
        let mut partial = Subscription::new(4);
        for value in ["warm-0", "soak-0", "soak-1", "soak-2"] {
            whole.event(&shared, None, value.as_bytes(), now);
        }
        for value in [
            "warm-0", "soak-0", "soak-0", "soak-3", "soak-2", "soak-2", "soak-2",
        ] {
            partial.event(&shared, None, value.as_bytes(), now);
        }
        // soak-2 written twice: receiving it twice is exact, a third time is a duplicate.
        let topic: Vec<String> = ["soak-0", "soak-1", "soak-2", "soak-2"]
            .map(str::to_owned)
            .to_vec();
        let comparison = Comparison::new(&topic, 4, &produced(&[0, 1, 2], 4), &[whole, partial], 0);
        assert_eq!(comparison.acknowledged_missing, 0);
        assert_eq!(comparison.missed, 1);
        assert_eq!((comparison.duplicates, comparison.most_duplicates), (2, 2));
        assert_eq!(comparison.topic_repeats, 1);
        assert_eq!(comparison.phantom, 1, "soak-3 was never written");
        assert!((comparison.lowest_ratio - 2.0 / 3.0).abs() < 1e-9);
        assert!((comparison.overall_ratio - 5.0 / 6.0).abs() < 1e-9);
        let error = comparison
            .verdict()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("missed 1 deliveries"), "{error}");
        assert!(error.contains("2 duplicates"), "{error}");
    }

    #[test]
    fn csv_rows_follow_the_header() {
        let row = Sample {
            cpu_percent: 12.34,
            ..sample(10.0, "gateway-a", 7, 2048, 30)
        }
        .csv();
        assert_eq!(row, "10.0,gateway-a,7,2048,30,12.3");
        assert_eq!(CSV_HEADER.split(',').count(), row.split(',').count());
    }
}
