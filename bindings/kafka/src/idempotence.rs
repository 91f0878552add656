//! The idempotent producer of one partition's produce loop ([`crate::client`]): the loop
//! sends one batch at a time, so one producer id and one running sequence number per
//! partition are all Kafka's idempotence needs. A batch sent again after a lost connection, a
//! broker restart or a leader move carries the same producer id and sequence, and the broker
//! keeps one copy (it answers `DUPLICATE_SEQUENCE_NUMBER` or the first write's offset).
//!
//! A batch whose outcome is unknown (it failed after every retry) may or may not be in the
//! log, so the sequence that follows it is unknown too: the next batch gets a new producer id.
//! A batch the broker refused for its producer state (an expired producer id, a sequence it
//! does not expect) was not written: it is sent once more under a new producer id. A broker
//! that grants no producer id (no InitProducerId, or no `IdempotentWrite` permission) gets
//! plain batches, as it would from a client with idempotence off.

use std::time::Duration;

use crate::wire::{self, Cluster, ErrorCode, KafkaError};

/// The broker's sequence number for this producer is not the one the batch has.
const OUT_OF_ORDER_SEQUENCE_NUMBER: ErrorCode = ErrorCode(45);
/// The producer's epoch is older than the broker's.
const INVALID_PRODUCER_EPOCH: ErrorCode = ErrorCode(47);
/// The broker no longer knows the producer id (its state expired or was deleted).
const UNKNOWN_PRODUCER_ID: ErrorCode = ErrorCode(59);
/// Another producer with the same id and a newer epoch exists.
const PRODUCER_FENCED: ErrorCode = ErrorCode(90);

/// The principal may not write idempotently (Kafka before 2.8 asks IDEMPOTENT_WRITE on the
/// cluster).
const CLUSTER_AUTHORIZATION_FAILED: ErrorCode = ErrorCode(31);

/// How long the broker keeps a producer id without a transaction: unused for an idempotent
/// producer, which has none.
const NO_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// One partition's idempotent producer: its identity and the sequence of the next record.
#[derive(Debug)]
pub(crate) struct PartitionProducer {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No producer id yet, or the last one was given up: one is asked for before the next
    /// batch.
    Unidentified,
    /// Batches carry this producer id and epoch, the next one from `next` on.
    Identified {
        producer_id: i64,
        producer_epoch: i16,
        next: i32,
    },
    /// Plain batches: idempotence is off, or the broker grants no producer id.
    Plain,
}

impl PartitionProducer {
    /// A producer for one partition; `idempotent` false sends plain batches.
    pub(crate) fn new(idempotent: bool) -> Self {
        Self {
            state: if idempotent {
                State::Unidentified
            } else {
                State::Plain
            },
        }
    }

    /// Produces `records` as one batch (see [`Cluster::produce`]) with this partition's
    /// producer id and the next sequence; the base offset, `None` for a batch the broker
    /// already had.
    pub(crate) async fn produce(
        &mut self,
        cluster: &Cluster,
        topic: &str,
        partition: i32,
        records: &[wire::Record],
        options: wire::ProduceOptions,
    ) -> Result<Option<i64>, KafkaError> {
        // A broker that does not answer cannot tell a duplicate from a write.
        if options.acks == wire::Acks::None {
            return cluster.produce(topic, partition, records, &options).await;
        }
        let mut refused_once = false;
        loop {
            let idempotent = self.identify(cluster).await?;
            let options = wire::ProduceOptions {
                idempotent,
                ..options
            };
            match cluster.produce(topic, partition, records, &options).await {
                Ok(offset) => {
                    self.advance(records.len());
                    return Ok(offset);
                }
                Err(error) => {
                    if idempotent.is_none() || refused_outright(&error) {
                        // The batch is not in the log and the broker's sequence did not move:
                        // the next batch takes the same sequence under the same producer id.
                        return Err(error);
                    }
                    // Whether the batch is in the log is unknown (or, refused for the
                    // producer's state, it is not): what follows needs a producer id of its
                    // own.
                    self.state = State::Unidentified;
                    if refused_for_producer_state(&error) && !refused_once {
                        tracing::debug!(%topic, partition, %error, "idempotent batch refused; sending it under a new producer id");
                        refused_once = true;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    /// The producer id, epoch and sequence for the next batch, asking the broker for a
    /// producer id when there is none; `None` for a plain batch.
    async fn identify(&mut self, cluster: &Cluster) -> Result<Option<(i64, i16, i32)>, KafkaError> {
        if self.state == State::Unidentified {
            match cluster.init_producer_id(None, NO_TRANSACTION_TIMEOUT).await {
                Ok(identity) => {
                    self.state = State::Identified {
                        producer_id: identity.producer_id,
                        producer_epoch: identity.producer_epoch,
                        next: 0,
                    };
                }
                Err(error) if grants_no_producer_id(&error) => {
                    tracing::warn!(%error, "the broker grants no idempotent producer id: produce batches may be written twice when a connection is lost");
                    self.state = State::Plain;
                }
                // The broker is away, or refused for a passing reason (credentials not yet
                // valid): the batch is not produced now, and the next one asks again.
                Err(error) => return Err(error),
            }
        }
        Ok(match self.state {
            State::Identified {
                producer_id,
                producer_epoch,
                next,
            } => Some((producer_id, producer_epoch, next)),
            State::Unidentified | State::Plain => None,
        })
    }

    /// Moves the sequence past a written batch of `records` records.
    fn advance(&mut self, records: usize) {
        if let State::Identified { next, .. } = &mut self.state {
            *next = next_sequence(*next, records);
        }
    }
}

/// The sequence after `records` records from `sequence`: Kafka's sequences wrap to 0 after
/// `i32::MAX`.
fn next_sequence(sequence: i32, records: usize) -> i32 {
    let span = i64::from(i32::MAX) + 1;
    let records = i64::try_from(records).unwrap_or(i64::MAX) % span;
    // Both operands are below 2^31, so the sum fits and the remainder is below i32::MAX + 1.
    i32::try_from((i64::from(sequence) + records) % span).unwrap_or(0)
}

/// Whether the broker refused the batch for the producer's state, so did not write it.
/// Whether the broker said, for good, that it hands out no producer id to this client: it
/// speaks no InitProducerId, or the principal may not write idempotently.
fn grants_no_producer_id(error: &KafkaError) -> bool {
    matches!(error, KafkaError::UnsupportedVersion { .. })
        || matches!(
            error.code(),
            Some(CLUSTER_AUTHORIZATION_FAILED | ErrorCode::UNSUPPORTED_VERSION)
        )
}

/// Whether the broker refused the batch for what it holds (its size, its records, the topic's
/// policy or authorization), so that it certainly wrote nothing and kept the producer's
/// sequence where it was.
fn refused_outright(error: &KafkaError) -> bool {
    matches!(
        error.code(),
        // CORRUPT_MESSAGE, MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE, INVALID_REQUIRED_ACKS,
        // TOPIC_AUTHORIZATION_FAILED, INVALID_TIMESTAMP, POLICY_VIOLATION, INVALID_RECORD
        Some(ErrorCode(2 | 10 | 18 | 21 | 29 | 32 | 44 | 87))
    )
}

fn refused_for_producer_state(error: &KafkaError) -> bool {
    matches!(
        error.code(),
        Some(
            OUT_OF_ORDER_SEQUENCE_NUMBER
                | INVALID_PRODUCER_EPOCH
                | UNKNOWN_PRODUCER_ID
                | PRODUCER_FENCED
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_advance_by_the_batch_and_wrap_after_i32_max() {
        assert_eq!(next_sequence(0, 1), 1);
        assert_eq!(next_sequence(7, 1024), 1031);
        assert_eq!(next_sequence(i32::MAX, 1), 0);
        assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn only_producer_state_refusals_are_sent_again() {
        let refused = |code| KafkaError::Broker {
            api: "Produce",
            code,
            message: None,
        };
        for code in [
            OUT_OF_ORDER_SEQUENCE_NUMBER,
            INVALID_PRODUCER_EPOCH,
            UNKNOWN_PRODUCER_ID,
            PRODUCER_FENCED,
        ] {
            assert!(refused_for_producer_state(&refused(code)), "{code}");
        }
        assert!(!refused_for_producer_state(&refused(
            ErrorCode::NOT_LEADER_OR_FOLLOWER
        )));
        assert!(!refused_for_producer_state(&KafkaError::ConnectionClosed));
    }

    #[test]
    fn only_a_lasting_refusal_turns_the_producer_plain_and_only_outright_ones_keep_the_id() {
        let refused = |code| KafkaError::Broker {
            api: "InitProducerId",
            code,
            message: None,
        };
        assert!(grants_no_producer_id(&refused(
            CLUSTER_AUTHORIZATION_FAILED
        )));
        assert!(grants_no_producer_id(&KafkaError::UnsupportedVersion {
            api: "InitProducerId"
        }));
        // Credentials that fail now may work later: the next batch asks again.
        assert!(!grants_no_producer_id(&KafkaError::Authentication(
            "expired".into()
        )));
        assert!(!grants_no_producer_id(&KafkaError::ConnectionClosed));
        // MESSAGE_TOO_LARGE wrote nothing; a lost answer or a leader move may have.
        assert!(refused_outright(&refused(ErrorCode(10))));
        assert!(!refused_outright(&refused(
            ErrorCode::NOT_LEADER_OR_FOLLOWER
        )));
        assert!(!refused_outright(&KafkaError::ConnectionClosed));
        assert!(!refused_outright(&refused(OUT_OF_ORDER_SEQUENCE_NUMBER)));
    }

    #[test]
    fn acks_none_and_plain_producers_carry_no_sequence() {
        let mut plain = PartitionProducer::new(false);
        plain.advance(5);
        assert_eq!(plain.state, State::Plain);
        let mut identified = PartitionProducer {
            state: State::Identified {
                producer_id: 9,
                producer_epoch: 0,
                next: 3,
            },
        };
        identified.advance(2);
        assert_eq!(
            identified.state,
            State::Identified {
                producer_id: 9,
                producer_epoch: 0,
                next: 5
            }
        );
    }
}
