//! Will and expiry signals, served by whichever gateway instance is alive.
//!
//! Every instance of the proxy follows the sessions topic's signals (`type` header: will
//! signals, expiry signals, instance liveness) and writes its own liveness record every
//! [`HEARTBEAT`]. A signal names the instance that owns it: while a session is connected its
//! signals say "not yet" (-1); when it ends, its gateway rewrites them with the time they are
//! due and delivers them then. When an instance stops writing liveness records for
//! [`LEASE`] (it was killed), another instance claims its signals by rewriting them under its
//! own name (a will due "not yet" becomes due its delay from now); all instances read the
//! signals of a client in the same partition order, so the last claim is the one everyone
//! sees, and its owner acts on it after [`CLAIM_SETTLE`] (when any competing claim is read
//! too). A new session of the client replaces both signals, which cancels what was due.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use zilla_binding_kafka::kind::{
    Acks, Condition, Filter, MergedItem, MergedRequest, Message as Record, ProduceRequest, Start,
};

use crate::proxy::{MqttKafkaProxy, latest_records, publish_will};
use crate::records::{
    self, EXPIRY_SIGNAL, ExpirySignal, INSTANCE, InstanceAlive, WILL, WILL_SIGNAL, WillHeader,
    WillSignal,
};

/// How often an instance says it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long an instance may be silent before its signals are claimed.
pub(crate) const LEASE: Duration = Duration::from_secs(10);
/// How long a claimed signal waits for competing claims to be read.
pub(crate) const CLAIM_SETTLE: Duration = Duration::from_secs(1);
/// How often due signals are looked for.
const TICK: Duration = Duration::from_millis(100);
/// How long a silent instance's liveness record is kept before it is deleted.
const FORGET_AFTER: Duration = Duration::from_secs(60);

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The instance identifier of the binding `name` in this process: the same for every build
/// of the binding, so that a reload does not make the sessions it keeps look orphaned.
pub(crate) fn instance_id(name: &str) -> String {
    static PROCESS: OnceLock<String> = OnceLock::new();
    let process = PROCESS.get_or_init(|| uuid::Uuid::new_v4().to_string());
    format!("{process}:{name}")
}

/// A signal as last read, and when.
struct Tracked<T> {
    signal: T,
    /// Local time it was read (ms).
    read_at: i64,
    /// It replaced a signal owned by another instance (a claim).
    claimed: bool,
    /// A claim or delivery was started for it.
    acted: bool,
}

/// What this instance knows of the sessions topic's signals.
pub(crate) struct Signals {
    /// This instance.
    me: String,
    /// Last liveness time per instance (ms).
    instances: HashMap<String, i64>,
    /// When an instance without a liveness record was first named by a signal (ms).
    first_named: HashMap<String, i64>,
    wills: HashMap<String, Tracked<WillSignal>>,
    expiries: HashMap<String, Tracked<ExpirySignal>>,
    /// Whether the read reached the topic's end once.
    synced: bool,
}

impl Signals {
    pub(crate) fn new(me: String) -> Self {
        Self {
            me,
            instances: HashMap::new(),
            first_named: HashMap::new(),
            wills: HashMap::new(),
            expiries: HashMap::new(),
            synced: false,
        }
    }

    fn name(&mut self, instance: &str, now: i64) {
        if !self.instances.contains_key(instance) {
            self.first_named.entry(instance.to_owned()).or_insert(now);
        }
    }

    /// Whether `client_id`'s session has an expiry signal that is due.
    pub(crate) fn expired(&self, client_id: &str, now: i64) -> bool {
        self.expiries
            .get(client_id)
            .is_some_and(|tracked| (0..=now).contains(&tracked.signal.expire_at))
    }

    fn apply(&mut self, record: &Record, now: i64) {
        let Some(kind) = record.header(records::TYPE.as_bytes()) else {
            return;
        };
        let Some(key) = record
            .key
            .as_deref()
            .and_then(|key| std::str::from_utf8(key).ok())
        else {
            return;
        };
        match kind.as_ref() {
            k if k == INSTANCE.as_bytes() => {
                let Some(instance) = key.strip_prefix("#instance-") else {
                    return;
                };
                match record
                    .value
                    .as_deref()
                    .and_then(records::decode::<InstanceAlive>)
                {
                    Some(alive) => {
                        let at = alive.at.max(record.timestamp);
                        self.first_named.remove(instance);
                        self.instances.insert(instance.to_owned(), at);
                    }
                    None => {
                        self.instances.remove(instance);
                    }
                }
            }
            k if k == WILL_SIGNAL.as_bytes() => {
                if let Some(client_id) = key.strip_suffix("#will") {
                    let signal = record.value.as_deref().and_then(records::decode);
                    let owner = track(&mut self.wills, client_id, signal, now);
                    if let Some(owner) = owner {
                        self.name(&owner, now);
                    }
                }
            }
            k if k == EXPIRY_SIGNAL.as_bytes() => {
                if let Some(client_id) = key.strip_suffix("#expiry") {
                    let signal = record.value.as_deref().and_then(records::decode);
                    let owner = track(&mut self.expiries, client_id, signal, now);
                    if let Some(owner) = owner {
                        self.name(&owner, now);
                    }
                }
            }
            _ => {}
        }
    }

    /// What is to be done now.
    fn due(&mut self, now: i64) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.synced {
            return actions;
        }
        let is_alive =
            |instance: &str| alive(&self.me, &self.instances, &self.first_named, instance, now);
        for (signal, claim) in due_of(&mut self.wills, is_alive, &self.me, now) {
            actions.push(if claim {
                Action::ClaimWill(signal)
            } else {
                Action::DeliverWill(signal)
            });
        }
        let is_alive =
            |instance: &str| alive(&self.me, &self.instances, &self.first_named, instance, now);
        for (signal, claim) in due_of(&mut self.expiries, is_alive, &self.me, now) {
            actions.push(if claim {
                Action::ClaimExpiry(signal)
            } else {
                Action::Expire(signal)
            });
        }
        let forget = millis(FORGET_AFTER);
        let silent: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, last)| now - **last > forget)
            .map(|(instance, _)| instance.clone())
            .collect();
        for instance in silent {
            self.instances.remove(&instance);
            actions.push(Action::Forget(instance));
        }
        actions
    }

    /// Whether `signal` is still the client's current will signal.
    fn will_current(&self, signal: &WillSignal) -> bool {
        self.wills
            .get(&signal.client_id)
            .is_some_and(|tracked| tracked.signal == *signal)
    }

    fn expiry_current(&self, signal: &ExpirySignal) -> bool {
        self.expiries
            .get(&signal.client_id)
            .is_some_and(|tracked| tracked.signal == *signal)
    }
}

/// What will and expiry signals have in common: an owner, and a time they are due.
trait Signal: Clone + PartialEq {
    fn owner(&self) -> &str;
    /// Milliseconds since the epoch; -1 while the session is connected.
    fn due_at(&self) -> i64;
    /// Seconds from the end of the session to when it is due.
    fn delay(&self) -> u32;
    /// The same signal, owned by `owner` and due at `due_at`.
    fn claimed(&self, owner: &str, due_at: i64) -> Self;
}

impl Signal for WillSignal {
    fn owner(&self) -> &str {
        &self.instance_id
    }
    fn due_at(&self) -> i64 {
        self.deliver_at
    }
    fn delay(&self) -> u32 {
        self.delay
    }
    fn claimed(&self, owner: &str, due_at: i64) -> Self {
        Self {
            instance_id: owner.to_owned(),
            deliver_at: due_at,
            ..self.clone()
        }
    }
}

impl Signal for ExpirySignal {
    fn owner(&self) -> &str {
        &self.instance_id
    }
    fn due_at(&self) -> i64 {
        self.expire_at
    }
    fn delay(&self) -> u32 {
        self.delay
    }
    fn claimed(&self, owner: &str, due_at: i64) -> Self {
        Self {
            instance_id: owner.to_owned(),
            expire_at: due_at,
            ..self.clone()
        }
    }
}

/// Whether `instance` said it was alive within the lease (or was first named within it).
fn alive(
    me: &str,
    instances: &HashMap<String, i64>,
    first_named: &HashMap<String, i64>,
    instance: &str,
    now: i64,
) -> bool {
    if instance == me {
        return true;
    }
    let last = instances
        .get(instance)
        .or_else(|| first_named.get(instance))
        .copied()
        .unwrap_or(now);
    now - last < millis(LEASE)
}

/// Records the signal read for `client_id` (`None`: cancelled); the owner it names.
fn track<T: Signal>(
    signals: &mut HashMap<String, Tracked<T>>,
    client_id: &str,
    signal: Option<T>,
    now: i64,
) -> Option<String> {
    let Some(signal) = signal else {
        signals.remove(client_id);
        return None;
    };
    let owner = signal.owner().to_owned();
    let claimed = signals
        .get(client_id)
        .is_some_and(|previous| previous.signal.owner() != owner);
    signals.insert(
        client_id.to_owned(),
        Tracked {
            signal,
            read_at: now,
            claimed,
            acted: false,
        },
    );
    Some(owner)
}

/// The signals to act on now, each once: this instance's that are due (a claim once it
/// settled), with `false`; those of silent instances, claimed by this one, with `true`.
fn due_of<T: Signal>(
    signals: &mut HashMap<String, Tracked<T>>,
    alive: impl Fn(&str) -> bool,
    me: &str,
    now: i64,
) -> Vec<(T, bool)> {
    let settle = millis(CLAIM_SETTLE);
    let mut due = Vec::new();
    for tracked in signals.values_mut().filter(|tracked| !tracked.acted) {
        let signal = &tracked.signal;
        if signal.owner() == me {
            let settled = !tracked.claimed || tracked.read_at + settle <= now;
            if (0..=now).contains(&signal.due_at()) && settled {
                tracked.acted = true;
                due.push((signal.clone(), false));
            }
        } else if !alive(signal.owner()) {
            tracked.acted = true;
            let due_at = if signal.due_at() < 0 {
                now + i64::from(signal.delay()) * 1000
            } else {
                signal.due_at()
            };
            due.push((signal.claimed(me, due_at), true));
        }
    }
    due
}

enum Action {
    DeliverWill(WillSignal),
    ClaimWill(WillSignal),
    Expire(ExpirySignal),
    ClaimExpiry(ExpirySignal),
    Forget(String),
}

fn signal_filters() -> Vec<Filter> {
    [WILL_SIGNAL, EXPIRY_SIGNAL, INSTANCE]
        .into_iter()
        .map(|kind| Filter {
            conditions: vec![Condition::Header {
                name: Bytes::from_static(records::TYPE.as_bytes()),
                value: Bytes::from_static(kind.as_bytes()),
            }],
        })
        .collect()
}

/// A signal record of `kind` for `key`: `value` or, for `None`, its cancellation.
pub(crate) fn signal_record(
    proxy: &MqttKafkaProxy,
    kind: &'static str,
    key: Bytes,
    client_id: Option<&str>,
    value: Option<Bytes>,
) -> ProduceRequest {
    ProduceRequest {
        topic: proxy.topics.sessions.clone(),
        key: Some(key),
        hash_key: client_id.map(|client_id| Bytes::from(client_id.to_owned())),
        value,
        headers: vec![records::type_header(kind)],
        acks: Acks::Leader,
        ..ProduceRequest::default()
    }
}

/// Follows the signals and acts on them until `shutdown`.
pub(crate) async fn run(proxy: Arc<MqttKafkaProxy>, shutdown: CancellationToken) {
    let heartbeat = tokio::spawn(heartbeat(proxy.clone(), shutdown.clone()));
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let request = MergedRequest {
            topic: proxy.topics.sessions.clone(),
            start: Start::Historical,
            offsets: Vec::new(),
            filters: signal_filters(),
            latest_per_key: true,
            partitions: Vec::new(),
        };
        let mut read = match proxy.sessions_exit.merged(request).await {
            Ok(read) => read,
            Err(error) => {
                tracing::debug!(%error, "sessions topic cannot be read; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                item = read.next() => match item {
                    Some(Ok(MergedItem::Message { message, .. })) => {
                        if let Ok(mut signals) = proxy.signals.lock() {
                            signals.apply(&message, records::now_millis());
                        }
                    }
                    Some(Ok(MergedItem::Synced(_))) => {
                        if let Ok(mut signals) = proxy.signals.lock() {
                            signals.synced = true;
                        }
                    }
                    Some(Ok(MergedItem::Snapshot(_))) => {}
                    Some(Err(error)) => tracing::debug!(%error, "sessions topic read failed"),
                    None => break,
                },
                _ = tick.tick() => {
                    let actions = proxy
                        .signals
                        .lock()
                        .map(|mut signals| signals.due(records::now_millis()))
                        .unwrap_or_default();
                    for action in actions {
                        tokio::spawn(act(proxy.clone(), action));
                    }
                }
            }
        }
    }
    heartbeat.abort();
}

async fn heartbeat(proxy: Arc<MqttKafkaProxy>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let me = proxy.instance_id.clone();
    let key = records::instance_key(&me);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let alive = InstanceAlive {
            instance_id: me.clone(),
            at: records::now_millis(),
        };
        let record = signal_record(
            &proxy,
            INSTANCE,
            key.clone(),
            None,
            Some(records::encode(&alive)),
        );
        if let Err(error) = proxy.sessions_exit.produce(record).await {
            tracing::debug!(%error, "instance liveness not written");
        }
    }
}

async fn act(proxy: Arc<MqttKafkaProxy>, action: Action) {
    let written = match action {
        Action::ClaimWill(signal) => {
            tracing::debug!(client_id = %signal.client_id, "claiming the will of a silent instance");
            let key = records::will_signal_key(&signal.client_id);
            let record = signal_record(
                &proxy,
                WILL_SIGNAL,
                key,
                Some(&signal.client_id),
                Some(records::encode(&signal)),
            );
            proxy.sessions_exit.produce(record).await.map(|_| ())
        }
        Action::ClaimExpiry(signal) => {
            let key = records::expiry_signal_key(&signal.client_id);
            let record = signal_record(
                &proxy,
                EXPIRY_SIGNAL,
                key,
                Some(&signal.client_id),
                Some(records::encode(&signal)),
            );
            proxy.sessions_exit.produce(record).await.map(|_| ())
        }
        Action::DeliverWill(signal) => {
            deliver_will(&proxy, &signal).await;
            Ok(())
        }
        Action::Expire(signal) => {
            expire(&proxy, &signal).await;
            Ok(())
        }
        Action::Forget(instance) => {
            let record = signal_record(
                &proxy,
                INSTANCE,
                records::instance_key(&instance),
                None,
                None,
            );
            proxy.sessions_exit.produce(record).await.map(|_| ())
        }
    };
    if let Err(error) = written {
        tracing::debug!(%error, "session signal not written");
    }
}

/// Publishes a due will, unless a new session replaced its signal meanwhile, then removes it.
async fn deliver_will(proxy: &Arc<MqttKafkaProxy>, signal: &WillSignal) {
    let key = records::will_message_key(&signal.client_id, &signal.lifetime_id);
    let never = CancellationToken::new();
    let filters = vec![Filter {
        conditions: vec![Condition::Key(key.clone())],
    }];
    let stored = match latest_records(
        &proxy.sessions_exit,
        &proxy.topics.sessions,
        &filters,
        false,
        &never,
    )
    .await
    {
        Ok(stored) => stored.get(&key).cloned(),
        Err(error) => {
            tracing::debug!(%error, "will message cannot be read");
            // Tried again at the next tick.
            if let Ok(mut signals) = proxy.signals.lock()
                && let Some(tracked) = signals.wills.get_mut(&signal.client_id)
                && tracked.signal == *signal
            {
                tracked.acted = false;
            }
            return;
        }
    };
    let current = proxy
        .signals
        .lock()
        .map(|signals| signals.will_current(signal))
        .unwrap_or(false);
    if !current {
        return;
    }
    let will = stored.and_then(|record| {
        let header = record.header(WILL.as_bytes())?;
        let header: WillHeader = records::decode(header)?;
        (header.will_id == signal.will_id).then(|| (header, record.value.clone()))
    });
    if let Some((header, Some(payload))) = will {
        let message = header.message(payload);
        publish_will(proxy, &signal.client_id, header.authorized, message).await;
    }
    let mut cleanup = vec![ProduceRequest {
        topic: proxy.topics.sessions.clone(),
        key: Some(key),
        hash_key: Some(Bytes::from(signal.client_id.clone())),
        value: None,
        acks: Acks::Leader,
        ..ProduceRequest::default()
    }];
    let still_current = proxy
        .signals
        .lock()
        .map(|signals| signals.will_current(signal))
        .unwrap_or(false);
    if still_current {
        cleanup.push(signal_record(
            proxy,
            WILL_SIGNAL,
            records::will_signal_key(&signal.client_id),
            Some(&signal.client_id),
            None,
        ));
    }
    for record in cleanup {
        if let Err(error) = proxy.sessions_exit.produce(record).await {
            tracing::debug!(%error, "will records not removed");
        }
    }
}

/// Ends an expired session: its state is deleted, unless a new session replaced the signal.
async fn expire(proxy: &Arc<MqttKafkaProxy>, signal: &ExpirySignal) {
    let current = proxy
        .signals
        .lock()
        .map(|signals| signals.expiry_current(signal))
        .unwrap_or(false);
    if !current {
        return;
    }
    tracing::debug!(client_id = %signal.client_id, "session expired");
    let state = ProduceRequest {
        topic: proxy.topics.sessions.clone(),
        key: Some(records::state_key(&signal.client_id)),
        hash_key: Some(Bytes::from(signal.client_id.clone())),
        value: None,
        acks: Acks::Leader,
        ..ProduceRequest::default()
    };
    let cancel = signal_record(
        proxy,
        EXPIRY_SIGNAL,
        records::expiry_signal_key(&signal.client_id),
        Some(&signal.client_id),
        None,
    );
    for record in [state, cancel] {
        if let Err(error) = proxy.sessions_exit.produce(record).await {
            tracing::debug!(%error, "expired session not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zilla_binding_kafka::kind::Header;

    const ME: &str = "me";

    fn record(key: &str, kind: &'static str, value: Option<Bytes>, timestamp: i64) -> Record {
        Record {
            partition: 0,
            offset: 0,
            key: Some(Bytes::from(key.to_owned())),
            value,
            headers: vec![records::type_header(kind)],
            timestamp,
        }
    }

    fn will(instance: &str, deliver_at: i64) -> WillSignal {
        WillSignal {
            instance_id: instance.to_owned(),
            client_id: "c1".to_owned(),
            delay: 5,
            deliver_at,
            lifetime_id: "l".to_owned(),
            will_id: "w".to_owned(),
        }
    }

    #[test]
    fn a_silent_instances_will_is_claimed_then_delivered_by_the_claimant() {
        let mut signals = Signals::new(ME.to_owned());
        let alive = InstanceAlive {
            instance_id: "other".into(),
            at: 1_000,
        };
        signals.apply(
            &record(
                "#instance-other",
                INSTANCE,
                Some(records::encode(&alive)),
                1_000,
            ),
            1_000,
        );
        signals.apply(
            &record(
                "c1#will",
                WILL_SIGNAL,
                Some(records::encode(&will("other", -1))),
                1_000,
            ),
            1_000,
        );
        signals.synced = true;
        // Alive: nothing to do.
        assert!(signals.due(5_000).is_empty());
        // Silent past the lease: claimed, due its delay from now.
        let now = 1_000 + millis(LEASE) + 1;
        let actions = signals.due(now);
        let [Action::ClaimWill(claim)] = actions.as_slice() else {
            panic!("expected one claim");
        };
        assert_eq!(claim.instance_id, ME);
        assert_eq!(claim.deliver_at, now + 5_000);
        assert!(signals.due(now + 1).is_empty(), "claimed once");
        // The claim read back: delivered once due and settled.
        signals.apply(
            &record("c1#will", WILL_SIGNAL, Some(records::encode(claim)), now),
            now,
        );
        assert!(signals.will_current(claim));
        assert!(signals.due(now + 4_999).is_empty());
        let actions = signals.due(now + 5_000);
        assert!(matches!(actions.as_slice(), [Action::DeliverWill(_)]));
        assert!(signals.due(now + 6_000).is_empty(), "delivered once");
    }

    #[test]
    fn a_cancellation_or_a_new_session_replaces_the_signal() {
        let mut signals = Signals::new(ME.to_owned());
        signals.synced = true;
        let due = will(ME, 10);
        signals.apply(
            &record("c1#will", WILL_SIGNAL, Some(records::encode(&due)), 0),
            0,
        );
        assert!(signals.will_current(&due));
        signals.apply(&record("c1#will", WILL_SIGNAL, None, 0), 0);
        assert!(!signals.will_current(&due));
        assert!(signals.due(100).is_empty());
        let expiry = ExpirySignal {
            instance_id: ME.to_owned(),
            client_id: "c1".into(),
            delay: 1,
            expire_at: 50,
        };
        let mut expiring = record(
            "c1#expiry",
            EXPIRY_SIGNAL,
            Some(records::encode(&expiry)),
            0,
        );
        expiring
            .headers
            .push(Header::new(Bytes::from_static(b"x"), Bytes::new()));
        signals.apply(&expiring, 0);
        assert!(signals.expired("c1", 60));
        assert!(matches!(signals.due(60).as_slice(), [Action::Expire(_)]));
    }
}
