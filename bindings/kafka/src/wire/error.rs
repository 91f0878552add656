//! Errors of the Kafka client: transport, protocol and broker error codes.

use std::fmt;
use std::io;
use std::time::Duration;

use kafka_protocol::ResponseError;
use zilla_engine::stream::StreamError;

use super::records::RecordsError;

/// A Kafka protocol error code as carried in responses (`0` is no error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub i16);

impl ErrorCode {
    /// No error.
    pub const NONE: Self = Self(0);
    /// The server experienced an unexpected error.
    pub const UNKNOWN_SERVER_ERROR: Self = Self(-1);
    /// The requested offset is outside the log.
    pub const OFFSET_OUT_OF_RANGE: Self = Self(1);
    /// The broker does not host this topic-partition.
    pub const UNKNOWN_TOPIC_OR_PARTITION: Self = Self(3);
    /// A leader election is in progress.
    pub const LEADER_NOT_AVAILABLE: Self = Self(5);
    /// The broker is not the leader of the partition.
    pub const NOT_LEADER_OR_FOLLOWER: Self = Self(6);
    /// The broker timed the request out.
    pub const REQUEST_TIMED_OUT: Self = Self(7);
    /// The group coordinator is still loading.
    pub const COORDINATOR_LOAD_IN_PROGRESS: Self = Self(14);
    /// The group coordinator is not available.
    pub const COORDINATOR_NOT_AVAILABLE: Self = Self(15);
    /// The broker is not the coordinator of the group.
    pub const NOT_COORDINATOR: Self = Self(16);
    /// The generation of the member is stale.
    pub const ILLEGAL_GENERATION: Self = Self(22);
    /// The member is not known to the coordinator.
    pub const UNKNOWN_MEMBER_ID: Self = Self(25);
    /// The group is rebalancing: rejoin.
    pub const REBALANCE_IN_PROGRESS: Self = Self(27);
    /// The SASL mechanism is not enabled on the broker.
    pub const UNSUPPORTED_SASL_MECHANISM: Self = Self(33);
    /// The broker already has an idempotent batch with this producer and sequence.
    pub const DUPLICATE_SEQUENCE_NUMBER: Self = Self(46);
    /// The request version is not supported by the broker.
    pub const UNSUPPORTED_VERSION: Self = Self(35);
    /// The topic already exists.
    pub const TOPIC_ALREADY_EXISTS: Self = Self(36);
    /// SASL authentication failed.
    pub const SASL_AUTHENTICATION_FAILED: Self = Self(58);
    /// The leader epoch in the request is older than the broker's.
    pub const FENCED_LEADER_EPOCH: Self = Self(74);
    /// The leader epoch in the request is newer than the broker's.
    pub const UNKNOWN_LEADER_EPOCH: Self = Self(75);
    /// The member must rejoin with the member id given in the response.
    pub const MEMBER_ID_REQUIRED: Self = Self(79);

    /// Whether this is no error.
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }

    /// Whether Kafka classifies the error as retriable.
    pub fn is_retriable(self) -> bool {
        error_is_retriable(self.0)
    }

    /// Whether the error means the client's view of partition leadership is stale.
    pub fn is_stale_metadata(self) -> bool {
        matches!(
            self,
            Self::UNKNOWN_TOPIC_OR_PARTITION
                | Self::LEADER_NOT_AVAILABLE
                | Self::NOT_LEADER_OR_FOLLOWER
                | Self::FENCED_LEADER_EPOCH
                | Self::UNKNOWN_LEADER_EPOCH
        )
    }

    /// Whether the error means the cached group coordinator is stale.
    pub fn is_stale_coordinator(self) -> bool {
        matches!(
            self,
            Self::NOT_COORDINATOR
                | Self::COORDINATOR_NOT_AVAILABLE
                | Self::COORDINATOR_LOAD_IN_PROGRESS
        )
    }

    /// `Ok` for no error, else the code as a broker error of `api`.
    pub fn check(self, api: &'static str) -> Result<(), KafkaError> {
        self.check_with(api, None)
    }

    /// [`Self::check`], the error carrying the broker's `message`.
    pub fn check_with(self, api: &'static str, message: Option<String>) -> Result<(), KafkaError> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(KafkaError::Broker {
                api,
                code: self,
                message,
            })
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match error_name(self.0) {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "error code {}", self.0),
        }
    }
}

/// Why a Kafka client call failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// Opening the connection through the connector failed.
    #[error("connecting to {address} failed: {source}")]
    Connect {
        /// `host:port`.
        address: String,
        /// What the connector said.
        #[source]
        source: StreamError,
    },
    /// Reading or writing the connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The connection closed (or was closed after a failure) before the response came.
    #[error("connection closed")]
    ConnectionClosed,
    /// A response frame is larger than the configured maximum.
    #[error("response frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Announced frame size.
        size: i64,
        /// Configured maximum.
        limit: usize,
    },
    /// The broker sent bytes that do not decode as the expected response.
    #[error("malformed {api} response: {reason}")]
    Malformed {
        /// The API whose response was malformed.
        api: &'static str,
        /// What did not decode.
        reason: String,
    },
    /// A request could not be encoded (e.g. a string longer than the protocol allows).
    #[error("cannot encode {api} request: {reason}")]
    Encode {
        /// The API.
        api: &'static str,
        /// Why.
        reason: String,
    },
    /// No response came in time.
    #[error("{api} request timed out after {timeout:?}")]
    Timeout {
        /// The API.
        api: &'static str,
        /// The time waited.
        timeout: Duration,
    },
    /// The broker and this client have no version of an API in common.
    #[error("the broker supports no version of {api} this client speaks")]
    UnsupportedVersion {
        /// The API.
        api: &'static str,
    },
    /// The broker answered with an error code.
    #[error("{api} failed: {code}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The API.
        api: &'static str,
        /// The error code.
        code: ErrorCode,
        /// The broker's error message, when it sent one.
        message: Option<String>,
    },
    /// SASL authentication failed on the client side (bad server proof, missing mechanism...).
    #[error("authentication failed: {0}")]
    Authentication(String),
    /// The topic is not in the cluster metadata.
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    /// The partition is not in the topic's metadata or has no leader.
    #[error("no leader known for {topic}-{partition}")]
    NoLeader {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// No bootstrap server or broker could be reached.
    #[error("no broker reachable: {0}")]
    NoBroker(String),
    /// A caller-supplied argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Encoding or decoding record batches failed.
    #[error(transparent)]
    Records(#[from] RecordsError),
}

impl KafkaError {
    /// Whether retrying (after a metadata refresh or reconnect) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Io(_) | Self::ConnectionClosed | Self::Timeout { .. } => {
                true
            }
            Self::NoBroker(_) | Self::NoLeader { .. } => true,
            Self::Broker { code, .. } => code.is_retriable() || code.is_stale_metadata(),
            _ => false,
        }
    }

    /// Whether the failure says the connection or the cached leadership is stale.
    pub(crate) fn invalidates_metadata(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Io(_) | Self::ConnectionClosed | Self::Timeout { .. } => {
                true
            }
            Self::NoBroker(_) | Self::NoLeader { .. } => true,
            Self::Broker { code, .. } => code.is_stale_metadata(),
            _ => false,
        }
    }

    /// The broker error code, when the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn malformed(api: &'static str, reason: impl fmt::Display) -> Self {
        Self::Malformed {
            api,
            reason: reason.to_string(),
        }
    }
}

/// Whether Kafka classifies an error code as retriable.
pub(crate) fn error_is_retriable(code: i16) -> bool {
    ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

/// Kafka's name of an error code (`NOT_LEADER_OR_FOLLOWER`), when known.
pub(crate) fn error_name(code: i16) -> Option<String> {
    match ResponseError::try_from_code(code)? {
        ResponseError::Unknown(_) => None,
        known => {
            let camel = known.to_string();
            let mut name = String::with_capacity(camel.len() + 8);
            for (index, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && index > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            Some(name)
        }
    }
}
