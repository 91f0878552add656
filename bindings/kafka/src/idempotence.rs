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
                    if idempotent.is_none() {
                        return Err(error);
                    }
                    // Whether the batch is in the log is unknown (or, refused, it is not):
                    // what follows needs a producer id of its own.
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
                // The broker is away: the batch could not be produced now either.
                Err(error) if error.is_retriable() => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, "the broker grants no idempotent producer id: produce batches may be written twice when a connection is lost");
                    self.state = State::Plain;
                }
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
