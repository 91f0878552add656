//! Flags of `cargo xtask bench`; each scenario reads those that apply to it and says so in its
//! help.

/// Sizes of a benchmark run. Defaults keep every scenario within a few minutes on 2 cores.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Options {
    /// sse-fanout: SSE subscribers held open at once (default 10000); mqtt-idle: idle MQTT
    /// connections (default 18000); mqtt-kafka: QoS 0 subscribers of the fan-out (default 1000).
    #[arg(long)]
    pub clients: Option<usize>,
    /// sse-fanout, kafka-produce, kafka-proxy, validation, grpc-proxy, grpc-kafka: measured
    /// rounds (default 5);
    /// mqtt-kafka: rounds of the fan-in and the fan-out (default 3); figures are medians over
    /// them.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// sse-fanout: seconds per producer rate step; kafka-produce, validation: seconds per
    /// throughput run; grpc-proxy, grpc-kafka: seconds per run; kafka-proxy: seconds per
    /// fixed-rate latency run (default 10);
    /// mqtt-kafka: seconds per fan-in run (default 8).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// http-proxy: a short S1 for iterating (3 rounds of 5 s, no S2); tls-h2, jwt,
    /// metrics-overhead, validation: 3 rounds of 5 s; grpc-proxy, grpc-kafka: 3 rounds of 5 s,
    /// printed and not recorded;
    /// kafka-proxy: one round of 20000 records and 3 s of latency; printed and not recorded;
    /// mqtt-idle: 2000 connections; mqtt-kafka: one round, 3 s fan-in runs, bursts of 200 and
    /// 12 s of QoS 2; both printed and not recorded; cache-scale: 100 000 keys and 200 000
    /// records, printed and not recorded.
    #[arg(long)]
    pub quick: bool,
    /// http-proxy, tls-h2, kafka-proxy, jwt, metrics-overhead, validation, mqtt-idle,
    /// mqtt-kafka, grpc-proxy, grpc-kafka, cache-scale: measure this zilla executable instead of building one
    /// (to compare builds, e.g. one kept from an earlier commit).
    #[arg(long)]
    pub binary: Option<std::path::PathBuf>,
}
