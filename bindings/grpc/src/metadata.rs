//! gRPC metadata on HTTP/2 headers: which headers are metadata, and `-bin` values in base64.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::kind::{Metadata, MetadataValue};

/// Whether header `name` is read or written by the bindings themselves rather than carried as
/// metadata.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(':')
        || name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "te" | "user-agent" | "content-length" | "host" | "connection"
        )
}

/// A `-bin` value as sent: base64, padded or not (gRPC accepts both).
pub fn decode_binary(text: &[u8]) -> Option<Bytes> {
    let trimmed = text.trim_ascii();
    STANDARD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .ok()
        .map(Bytes::from)
}

/// A `-bin` value to send: base64 without padding, as gRPC implementations send it.
pub fn encode_binary(bytes: &[u8]) -> String {
    STANDARD_NO_PAD.encode(bytes)
}

/// The metadata of `headers`; a `-bin` value that is not base64 is `Err` with the header name.
pub fn from_headers(headers: &HeaderMap) -> Result<Metadata, String> {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let name = name.as_str();
        if is_reserved(name) {
            continue;
        }
        if name.ends_with("-bin") {
            let decoded = decode_binary(value.as_bytes())
                .ok_or_else(|| format!("metadata `{name}` is not base64"))?;
            metadata.push_binary(name, decoded);
        } else {
            let text = value
                .to_str()
                .map_err(|_| format!("metadata `{name}` is not printable ASCII"))?;
            metadata.push_text(name, text);
        }
    }
    Ok(metadata)
}

/// Appends `metadata` to `headers`, skipping reserved names and values HTTP cannot carry, and
/// what no longer fits once the map holds as many names as a header map may (metadata can come
/// from a Kafka record's headers, which nothing bounds).
pub fn to_headers(metadata: &Metadata, headers: &mut HeaderMap) {
    for (name, value) in metadata.iter() {
        if is_reserved(name) {
            continue;
        }
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        let value = match value {
            MetadataValue::Text(text) => HeaderValue::from_str(text),
            MetadataValue::Binary(bytes) => HeaderValue::from_str(&encode_binary(bytes)),
        };
        if let Ok(value) = value
            && headers.try_append(header, value).is_err()
        {
            tracing::debug!("metadata past a header map's size left out");
            return;
        }
    }
}

/// Metadata as text pairs (`-bin` values in base64), as generic bindings carry it.
pub fn to_pairs(metadata: &Metadata) -> Vec<(String, String)> {
    metadata
        .iter()
        .map(|(name, value)| {
            let text = match value {
                MetadataValue::Text(text) => text.clone(),
                MetadataValue::Binary(bytes) => encode_binary(bytes),
            };
            (name.to_owned(), text)
        })
        .collect()
}

/// Metadata from text pairs made by [`to_pairs`]; reserved names and undecodable `-bin` values
/// are left out.
pub fn from_pairs(pairs: &[(String, String)]) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in pairs {
        if is_reserved(name) {
            continue;
        }
        if name.ends_with("-bin") {
            if let Some(bytes) = decode_binary(value.as_bytes()) {
                metadata.push_binary(name.clone(), bytes);
            }
        } else {
            metadata.push_text(name.clone(), value.clone());
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reserved_ones_are_not_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        headers.insert("x-trace", HeaderValue::from_static("abc"));
        headers.insert("x-key-bin", HeaderValue::from_static("AAEC"));
        let metadata = from_headers(&headers).unwrap();
        assert_eq!(metadata.0.len(), 2);
        assert_eq!(
            metadata.get("x-key-bin"),
            Some(&MetadataValue::Binary(Bytes::from_static(&[0, 1, 2])))
        );
        let mut back = HeaderMap::new();
        to_headers(&metadata, &mut back);
        assert_eq!(back["x-trace"], "abc");
        assert_eq!(back["x-key-bin"], "AAEC");
        assert_eq!(from_pairs(&to_pairs(&metadata)), metadata);
    }

    #[test]
    fn metadata_past_what_a_header_map_holds_is_left_out_without_a_panic() {
        let mut metadata = Metadata::new();
        for index in 0..40_000 {
            metadata.push_text(format!("x-{index}"), "v");
        }
        let mut headers = HeaderMap::new();
        to_headers(&metadata, &mut headers);
        assert!(headers.contains_key("x-0"));
        assert!(headers.keys_len() > 20_000, "{}", headers.keys_len());
        assert!(!headers.contains_key("x-39999"));
    }

    #[test]
    fn padded_and_unpadded_binary_values_decode() {
        assert_eq!(decode_binary(b"AQ==").as_deref(), Some(&[1u8][..]));
        assert_eq!(decode_binary(b"AQ").as_deref(), Some(&[1u8][..]));
        assert!(decode_binary(b"!!").is_none());
        let mut headers = HeaderMap::new();
        headers.insert("x-bad-bin", HeaderValue::from_static("!!"));
        assert!(from_headers(&headers).is_err());
    }
}
