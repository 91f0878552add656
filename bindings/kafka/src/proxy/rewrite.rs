//! Responses that name brokers, rewritten so clients reach every broker through the gateway:
//! Metadata, FindCoordinator and DescribeCluster carry the gateway's host and each broker's
//! gateway port instead of the broker's own address. ApiVersions is rewritten too, to keep
//! those three APIs within the versions decoded here; every other API and version passes as
//! the client and broker agreed it.
//!
//! A response is walked against Kafka's message schema (the wire module's check) before the
//! protocol library decodes it, so a count announcing more than the bytes left is refused
//! before anything is allocated from it.

use bytes::Bytes;
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Encodable, Message, StrBytes};

use super::brokers::{BrokerAddress, Brokers};
use super::frame::{skip_tagged_fields, unsigned_varint};
use crate::wire;

/// Why a response that must be rewritten could not be.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RewriteError {
    /// The broker's response does not decode at the agreed version.
    #[error("malformed {api} v{version} response: {reason}")]
    Malformed {
        api: &'static str,
        version: i16,
        reason: String,
    },
    /// More brokers than gateway ports.
    #[error("no gateway port left for broker {0}; widen `external.ports`")]
    NoPort(i32),
}

/// API keys whose responses name brokers.
const METADATA: i16 = 3;
const FIND_COORDINATOR: i16 = 10;
const API_VERSIONS: i16 = 18;
const DESCRIBE_CLUSTER: i16 = 60;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;

/// Whether responses of `api_key` are rewritten (and so read whole and decoded).
pub(crate) fn rewrites(api_key: i16) -> bool {
    matches!(
        api_key,
        METADATA | FIND_COORDINATOR | API_VERSIONS | DESCRIBE_CLUSTER
    )
}

/// The highest version of a rewritten API this proxy decodes: the protocol library's range,
/// narrowed to the schema the wire module checks against where it has one.
fn highest_version(api_key: i16) -> Option<i16> {
    let library = match api_key {
        METADATA => kp::MetadataResponse::VERSIONS.max,
        FIND_COORDINATOR => kp::FindCoordinatorResponse::VERSIONS.max,
        API_VERSIONS => kp::ApiVersionsResponse::VERSIONS.max,
        DESCRIBE_CLUSTER => kp::DescribeClusterResponse::VERSIONS.max,
        _ => return None,
    };
    Some(match wire::response_schema_versions(api_key) {
        Some((_, max)) => library.min(max),
        None => library,
    })
}

/// Where the body of a response frame (size prefix included) starts: after the correlation
/// id and, for flexible header versions, the header's tagged fields. `None` for API keys
/// the protocol library does not know (their responses are never looked into).
pub(crate) fn body_offset(api_key: i16, version: i16, frame: &[u8]) -> Option<usize> {
    let key = kp::ApiKey::try_from(api_key).ok()?;
    if key.response_header_version(version) >= 1 {
        let mut rest = frame.get(8..)?;
        let before = rest.len();
        skip_tagged_fields(&mut rest)?;
        Some(8 + before - rest.len())
    } else {
        (frame.len() >= 8).then_some(8)
    }
}

/// The version range a proxy offers for an API in ApiVersions, from the broker's (key, min,
/// max); `None` leaves the API out.
pub(crate) type ApiRange<'a> = &'a dyn Fn(i16, i16, i16) -> Option<(i16, i16)>;

/// A change to the topics of a Metadata response (the topic allow-list's).
pub(crate) type TopicsFix<'a> = &'a dyn Fn(&mut Vec<kp::metadata_response::MetadataResponseTopic>);

/// The broker's own ranges, narrowed only where a rewritten API needs it.
pub(crate) fn as_broker_offers(_api_key: i16, min: i16, max: i16) -> Option<(i16, i16)> {
    Some((min, max))
}

/// Rewrites one response frame of `api_key` at `version`, whose body starts at `offset`:
/// broker addresses name `host` and the gateway ports of `brokers`, ApiVersions offers what
/// `api_range` gives, and Metadata's topics go through `topics`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rewrite(
    api_key: i16,
    version: i16,
    frame: &Bytes,
    offset: usize,
    host: &str,
    brokers: &Brokers,
    api_range: ApiRange<'_>,
    topics: Option<TopicsFix<'_>>,
) -> Result<Bytes, RewriteError> {
    if highest_version(api_key).is_some_and(|highest| version > highest) || version < 0 {
        return Err(RewriteError::Malformed {
            api: "rewritten API",
            version,
            reason: format!("version not decoded here (API key {api_key})"),
        });
    }
    let body = frame.slice(offset..);
    let header = &frame[4..offset];
    let external = StrBytes::from_string(host.to_owned());
    let map = |id: i32, host: &StrBytes, port: i32| -> Result<i32, RewriteError> {
        let address = BrokerAddress {
            host: host.as_str().to_owned(),
            port: u16::try_from(port).map_err(|_| RewriteError::Malformed {
                api: "broker",
                version,
                reason: format!("port {port}"),
            })?,
        };
        brokers
            .port_for(id, address)
            .map(i32::from)
            .ok_or(RewriteError::NoPort(id))
    };
    match api_key {
        API_VERSIONS => {
            let mut response: kp::ApiVersionsResponse =
                decode("ApiVersions", api_key, version, body)?;
            response.api_keys.retain_mut(|api| {
                let mut max = api.max_version;
                if let Some(highest) = highest_version(api.api_key) {
                    max = max.min(highest);
                }
                match api_range(api.api_key, api.min_version, max) {
                    Some((min, max)) if min <= max => {
                        api.min_version = min;
                        api.max_version = max;
                        true
                    }
                    _ => false,
                }
            });
            // The SASL APIs a proxy answers itself are offered even by a broker without SASL:
            // asked with the empty range, `api_range` gives one only for those.
            for api_key in [SASL_HANDSHAKE, SASL_AUTHENTICATE] {
                if response.api_keys.iter().all(|api| api.api_key != api_key)
                    && let Some((min, max)) = api_range(api_key, 1, 0)
                    && min <= max
                {
                    let mut api = kp::api_versions_response::ApiVersion::default();
                    api.api_key = api_key;
                    api.min_version = min;
                    api.max_version = max;
                    response.api_keys.push(api);
                }
            }
            encode("ApiVersions", header, &response, version)
        }
        METADATA => {
            let mut response: kp::MetadataResponse = decode("Metadata", api_key, version, body)?;
            for broker in &mut response.brokers {
                broker.port = map(broker.node_id.0, &broker.host, broker.port)?;
                broker.host = external.clone();
            }
            if let Some(topics) = topics {
                topics(&mut response.topics);
            }
            encode("Metadata", header, &response, version)
        }
        FIND_COORDINATOR => {
            let mut response: kp::FindCoordinatorResponse =
                decode("FindCoordinator", api_key, version, body)?;
            if version < 4 {
                if response.error_code == 0 {
                    response.port = map(response.node_id.0, &response.host, response.port)?;
                    response.host = external.clone();
                }
            } else {
                for coordinator in &mut response.coordinators {
                    if coordinator.error_code == 0 {
                        coordinator.port =
                            map(coordinator.node_id.0, &coordinator.host, coordinator.port)?;
                        coordinator.host = external.clone();
                    }
                }
            }
            encode("FindCoordinator", header, &response, version)
        }
        DESCRIBE_CLUSTER => {
            check_describe_cluster(version, &body).map_err(|reason| RewriteError::Malformed {
                api: "DescribeCluster",
                version,
                reason,
            })?;
            let mut response = kp::DescribeClusterResponse::decode(&mut body.clone(), version)
                .map_err(|error| RewriteError::Malformed {
                    api: "DescribeCluster",
                    version,
                    reason: error.to_string(),
                })?;
            for broker in &mut response.brokers {
                broker.port = map(broker.broker_id.0, &broker.host, broker.port)?;
                broker.host = external.clone();
            }
            encode("DescribeCluster", header, &response, version)
        }
        _ => Ok(frame.clone()),
    }
}

fn decode<M: Decodable>(
    api: &'static str,
    api_key: i16,
    version: i16,
    mut body: Bytes,
) -> Result<M, RewriteError> {
    let malformed = |reason: String| RewriteError::Malformed {
        api,
        version,
        reason,
    };
    wire::check_response_schema(api_key, version, &body).map_err(malformed)?;
    M::decode(&mut body, version).map_err(|error| malformed(error.to_string()))
}

fn encode<M: Encodable>(
    api: &'static str,
    header: &[u8],
    message: &M,
    version: i16,
) -> Result<Bytes, RewriteError> {
    super::message::frame_with(header, message, version).map_err(|reason| RewriteError::Malformed {
        api,
        version,
        reason,
    })
}

/// Walks a DescribeCluster body up to its broker array (the wire module has no schema for
/// this API) and refuses a broker count larger than the bytes left could hold.
fn check_describe_cluster(version: i16, body: &[u8]) -> Result<(), String> {
    let mut rest = body;
    let short = || "truncated".to_owned();
    let skip = |rest: &mut &[u8], n: usize| -> Result<(), String> {
        *rest = rest.get(n..).ok_or_else(short)?;
        Ok(())
    };
    skip(&mut rest, 6)?; // throttle_time_ms, error_code
    let message = unsigned_varint(&mut rest).ok_or_else(short)? as usize;
    skip(&mut rest, message.saturating_sub(1))?;
    if version >= 1 {
        skip(&mut rest, 1)?; // endpoint_type
    }
    let cluster_id = unsigned_varint(&mut rest).ok_or_else(short)? as usize;
    skip(&mut rest, cluster_id.saturating_sub(1))?;
    skip(&mut rest, 4)?; // controller_id
    let brokers = (unsigned_varint(&mut rest).ok_or_else(short)? as usize).saturating_sub(1);
    // A broker is at least id, host length, port, rack length and tagged-field count.
    if brokers.saturating_mul(11) > rest.len() {
        return Err(format!(
            "{brokers} brokers announced in {} bytes",
            rest.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use proptest::prelude::*;

    fn frame_of<M: Encodable>(api_key: i16, version: i16, message: &M) -> Bytes {
        let key = kp::ApiKey::try_from(api_key).unwrap();
        let mut out = BytesMut::new();
        out.put_i32(0);
        out.put_i32(42);
        if key.response_header_version(version) >= 1 {
            out.put_u8(0);
        }
        message.encode(&mut out, version).unwrap();
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        out.freeze()
    }

    fn run(api_key: i16, version: i16, frame: &Bytes, brokers: &Brokers) -> Bytes {
        let offset = body_offset(api_key, version, frame).unwrap();
        rewrite(
            api_key,
            version,
            frame,
            offset,
            "gateway.example",
            brokers,
            &as_broker_offers,
            None,
        )
        .unwrap()
    }

    fn metadata(version: i16) -> kp::MetadataResponse {
        let mut response = kp::MetadataResponse::default();
        for (id, host) in [(111, "10.1.1.1"), (2, "10.1.1.2")] {
            let mut broker = kp::metadata_response::MetadataResponseBroker::default();
            broker.node_id = kp::BrokerId(id);
            broker.host = StrBytes::from_static_str(host);
            broker.port = 9092;
            response.brokers.push(broker);
        }
        if version >= 1 {
            response.controller_id = kp::BrokerId(111);
        }
        response
    }

    #[test]
    fn metadata_names_the_gateway_for_every_broker_at_every_version() {
        for version in 0..=12 {
            let brokers = Brokers::new(9100..=9199);
            let frame = frame_of(METADATA, version, &metadata(version));
            let rewritten = run(METADATA, version, &frame, &brokers);
            assert_eq!(rewritten[4..8], 42i32.to_be_bytes());
            let offset = body_offset(METADATA, version, &rewritten).unwrap();
            let decoded =
                kp::MetadataResponse::decode(&mut rewritten.slice(offset..), version).unwrap();
            let seen: Vec<_> = decoded
                .brokers
                .iter()
                .map(|b| (b.node_id.0, b.host.as_str().to_owned(), b.port))
                .collect();
            assert_eq!(
                seen,
                vec![
                    (111, "gateway.example".to_owned(), 9100),
                    (2, "gateway.example".to_owned(), 9102)
                ],
                "v{version}"
            );
            let (_, real) = brokers.broker_at(9102).unwrap();
            assert_eq!(real.host, "10.1.1.2");
        }
    }

    #[test]
    fn coordinators_are_rewritten_in_both_shapes() {
        let brokers = Brokers::new(9100..=9101);
        let mut old = kp::FindCoordinatorResponse::default();
        old.node_id = kp::BrokerId(1);
        old.host = StrBytes::from_static_str("10.0.0.9");
        old.port = 9093;
        let rewritten = run(
            FIND_COORDINATOR,
            3,
            &frame_of(FIND_COORDINATOR, 3, &old),
            &brokers,
        );
        let offset = body_offset(FIND_COORDINATOR, 3, &rewritten).unwrap();
        let decoded =
            kp::FindCoordinatorResponse::decode(&mut rewritten.slice(offset..), 3).unwrap();
        assert_eq!(
            (decoded.host.as_str(), decoded.port),
            ("gateway.example", 9101)
        );

        let mut new = kp::FindCoordinatorResponse::default();
        let mut coordinator = kp::find_coordinator_response::Coordinator::default();
        coordinator.node_id = kp::BrokerId(1);
        coordinator.host = StrBytes::from_static_str("10.0.0.10");
        coordinator.port = 9093;
        new.coordinators.push(coordinator);
        let rewritten = run(
            FIND_COORDINATOR,
            6,
            &frame_of(FIND_COORDINATOR, 6, &new),
            &brokers,
        );
        let offset = body_offset(FIND_COORDINATOR, 6, &rewritten).unwrap();
        let decoded =
            kp::FindCoordinatorResponse::decode(&mut rewritten.slice(offset..), 6).unwrap();
        assert_eq!(decoded.coordinators[0].port, 9101);
        assert_eq!(brokers.broker_at(9101).unwrap().1.host, "10.0.0.10");
    }

    #[test]
    fn describe_cluster_and_api_versions_are_rewritten() {
        let brokers = Brokers::new(9100..=9101);
        let mut cluster = kp::DescribeClusterResponse::default();
        let mut broker = kp::describe_cluster_response::DescribeClusterBroker::default();
        broker.broker_id = kp::BrokerId(0);
        broker.host = StrBytes::from_static_str("10.0.0.1");
        broker.port = 9092;
        cluster.brokers.push(broker);
        let rewritten = run(
            DESCRIBE_CLUSTER,
            1,
            &frame_of(DESCRIBE_CLUSTER, 1, &cluster),
            &brokers,
        );
        let offset = body_offset(DESCRIBE_CLUSTER, 1, &rewritten).unwrap();
        let decoded =
            kp::DescribeClusterResponse::decode(&mut rewritten.slice(offset..), 1).unwrap();
        assert_eq!(decoded.brokers[0].port, 9100);

        let mut versions = kp::ApiVersionsResponse::default();
        for (key, max) in [(METADATA, 99), (0, 99)] {
            let mut api = kp::api_versions_response::ApiVersion::default();
            api.api_key = key;
            api.max_version = max;
            versions.api_keys.push(api);
        }
        let rewritten = run(
            API_VERSIONS,
            3,
            &frame_of(API_VERSIONS, 3, &versions),
            &brokers,
        );
        let decoded = kp::ApiVersionsResponse::decode(&mut rewritten.slice(8..), 3).unwrap();
        assert_eq!(decoded.api_keys[0].max_version, 12);
        assert_eq!(decoded.api_keys[1].max_version, 99, "other APIs untouched");
    }

    #[test]
    fn a_full_port_range_is_an_error() {
        let brokers = Brokers::new(9100..=9100);
        let frame = frame_of(METADATA, 12, &metadata(12));
        let offset = body_offset(METADATA, 12, &frame).unwrap();
        assert!(matches!(
            rewrite(
                METADATA,
                12,
                &frame,
                offset,
                "g",
                &brokers,
                &as_broker_offers,
                None
            ),
            Err(RewriteError::NoPort(2))
        ));
    }

    proptest! {
        #[test]
        fn random_responses_are_errors_not_panics(
            api in prop::sample::select(vec![METADATA, FIND_COORDINATOR, API_VERSIONS, DESCRIBE_CLUSTER]),
            version in 0i16..13,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let brokers = Brokers::new(9100..=9101);
            let mut frame = BytesMut::new();
            frame.put_i32(body.len() as i32 + 4);
            frame.put_i32(1);
            frame.put_slice(&body);
            let frame = frame.freeze();
            if let Some(offset) = body_offset(api, version, &frame) {
                let _ = rewrite(api, version, &frame, offset, "g", &brokers, &as_broker_offers, None);
            }
        }
    }
}
