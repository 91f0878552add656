//! Whole Kafka messages where the proxy needs them: requests it looks into (checked against
//! Kafka's request schema before the protocol library decodes them, so a count announcing more
//! than the bytes left is refused before anything is allocated from it) and the responses it
//! writes itself.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::frame::skip_tagged_fields;
use crate::wire;

/// Where the body of a request frame (size prefix included) starts: after api key, version,
/// correlation id, client id and, for flexible header versions, the header's tagged fields.
/// `None` when the frame is too short or the API unknown here.
pub(crate) fn request_body_offset(api_key: i16, version: i16, frame: &[u8]) -> Option<usize> {
    let key = kp::ApiKey::try_from(api_key).ok()?;
    let mut rest = frame.get(12..)?;
    let before = rest.len();
    let client_id = i16::from_be_bytes([*rest.first()?, *rest.get(1)?]);
    rest = rest.get(2..)?;
    if client_id > 0 {
        rest = rest.get(client_id as usize..)?;
    }
    if key.request_header_version(version) >= 2 {
        skip_tagged_fields(&mut rest)?;
    }
    Some(12 + before - rest.len())
}

/// Decodes the request in `frame` (size prefix included) of `api_key` at `version`, after
/// checking its bytes against Kafka's request schema.
pub(crate) fn decode_request<M: Decodable>(
    api_key: i16,
    version: i16,
    frame: &Bytes,
) -> Result<(usize, M), String> {
    let offset = request_body_offset(api_key, version, frame).ok_or("malformed request header")?;
    let body = frame.slice(offset..);
    wire::check_request_schema(api_key, version, &body)?;
    let message = M::decode(&mut body.clone(), version).map_err(|error| error.to_string())?;
    Ok((offset, message))
}

/// A frame of `header` (bytes as they came, size prefix excluded) followed by `message`
/// encoded at `version`.
pub(crate) fn frame_with<M: Encodable>(
    header: &[u8],
    message: &M,
    version: i16,
) -> Result<Bytes, String> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    out.put_slice(header);
    message
        .encode(&mut out, version)
        .map_err(|error| error.to_string())?;
    let size = i32::try_from(out.len() - 4).map_err(|_| "larger than 2 GiB".to_owned())?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

/// The header of a response answering `correlation_id`, for a request of `api_key` at
/// `version` (size prefix excluded).
pub(crate) fn response_header(
    api_key: i16,
    version: i16,
    correlation_id: i32,
) -> Result<BytesMut, String> {
    let key = kp::ApiKey::try_from(api_key).map_err(|()| format!("API key {api_key}"))?;
    let mut header = BytesMut::with_capacity(5);
    header.put_i32(correlation_id);
    if key.response_header_version(version) >= 1 {
        // No tagged fields.
        header.put_u8(0);
    }
    Ok(header)
}

/// A response frame answering `correlation_id`, for a request of `api_key` at `version`.
pub(crate) fn response_frame<M: Encodable>(
    api_key: i16,
    version: i16,
    correlation_id: i32,
    message: &M,
) -> Result<Bytes, String> {
    let header = response_header(api_key, version, correlation_id)?;
    frame_with(&header, message, version)
}

/// A response frame of `message` answering correlation id 7, and where its body starts, for
/// tests.
#[cfg(test)]
pub(crate) fn response_for_test<M: Encodable>(
    api_key: i16,
    version: i16,
    message: &M,
) -> (Bytes, usize) {
    let header = response_header(api_key, version, 7).unwrap();
    let offset = 4 + header.len();
    (frame_with(&header, message, version).unwrap(), offset)
}

/// A request frame with header fields `api_key`, `version`, correlation id 1, no client id,
/// then `body` as it is, for tests of malformed requests.
#[cfg(test)]
pub(crate) fn raw_request(api_key: i16, version: i16, body: &[u8]) -> Bytes {
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32 + 10);
    frame.put_i16(api_key);
    frame.put_i16(version);
    frame.put_i32(1);
    frame.put_i16(-1);
    frame.put_slice(body);
    frame.freeze()
}

/// A request frame of `message` with correlation id 7 and client id `client`, for tests.
#[cfg(test)]
pub(crate) fn request_frame<M: Encodable>(api_key: i16, version: i16, message: &M) -> Bytes {
    let key = kp::ApiKey::try_from(api_key).unwrap();
    let mut header = kp::RequestHeader::default();
    header.request_api_key = api_key;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(kafka_protocol::protocol::StrBytes::from_static_str(
        "client",
    ));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    frame_with(&buf, message, version).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    use super::request_frame as request;

    #[test]
    fn requests_decode_after_their_header_at_old_and_flexible_versions() {
        for version in [1, 9, 12] {
            let mut metadata = kp::MetadataRequest::default();
            let mut topic = kp::metadata_request::MetadataRequestTopic::default();
            topic.name = Some(kp::TopicName(StrBytes::from_static_str("orders")));
            metadata.topics = Some(vec![topic]);
            let frame = request(3, version, &metadata);
            let (_, decoded): (usize, kp::MetadataRequest) =
                decode_request(3, version, &frame).unwrap();
            assert_eq!(
                decoded.topics.unwrap()[0].name.as_ref().unwrap().0.as_str(),
                "orders"
            );
        }
    }

    #[test]
    fn a_huge_announced_count_is_refused_before_decoding() {
        // Metadata v4: header, then a topic count of two billion and nothing behind it.
        let mut body = BytesMut::new();
        body.put_i32(2_000_000_000);
        body.put_u8(1);
        let mut header = BytesMut::new();
        header.put_i16(3);
        header.put_i16(4);
        header.put_i32(1);
        header.put_i16(-1);
        let mut frame = BytesMut::new();
        frame.put_i32((header.len() + body.len()) as i32);
        frame.put_slice(&header);
        frame.put_slice(&body);
        let result: Result<(usize, kp::MetadataRequest), _> = decode_request(3, 4, &frame.freeze());
        assert!(result.is_err());
    }

    proptest! {
        #[test]
        fn random_requests_are_errors_not_panics(
            api in prop::sample::select(vec![0i16, 1, 3, 17, 36]),
            version in 0i16..13,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let frame = raw_request(api, version, &body);
            let _ = request_body_offset(api, version, &frame);
            let _: Result<(usize, kp::ProduceRequest), _> = decode_request(0, version, &frame);
            let _: Result<(usize, kp::FetchRequest), _> = decode_request(1, version, &frame);
            let _: Result<(usize, kp::MetadataRequest), _> = decode_request(3, version, &frame);
        }
    }
}
