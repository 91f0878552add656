//! The correlation id of a produced request: `<idempotency key>-<md5 hex>`, as Zilla makes
//! it, so the same request always gets the same id, here and on a Zilla node, and a retried
//! request finds the reply to its first attempt. What the MD5 covers depends on the mapping:
//! `http-kafka` hashes the record key, each copied header's name and value, the reply-to
//! header, each override, then the body; `grpc-kafka` hashes the service, method and reply-to
//! headers (names and values), then each override's value.

use md5::{Digest, Md5};

/// Accumulates what the correlation id covers.
#[derive(Clone, Default)]
pub struct CorrelationHash {
    md5: Md5,
}

impl std::fmt::Debug for CorrelationHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CorrelationHash").finish_non_exhaustive()
    }
}

impl CorrelationHash {
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
    }

    /// Adds a header's name and value.
    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        self.update(name);
        self.update(value);
    }

    /// The correlation id for `idempotency_key`.
    pub fn finish(self, idempotency_key: &str) -> String {
        let digest = self.md5.finalize();
        let mut id = String::with_capacity(idempotency_key.len() + 1 + 2 * digest.len());
        id.push_str(idempotency_key);
        id.push('-');
        for byte in digest.iter() {
            id.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            id.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn correlation_id(
        key: &str,
        headers: &[(&str, &str)],
        overrides: &[(&str, &str)],
        body: &[&str],
        idempotency_key: &str,
    ) -> String {
        let mut hash = CorrelationHash::default();
        hash.update(key.as_bytes());
        for (name, value) in headers {
            hash.header(name.as_bytes(), value.as_bytes());
        }
        hash.header(b"zilla:reply-to", b"items-replies");
        for (name, value) in overrides {
            hash.header(name.as_bytes(), value.as_bytes());
        }
        for chunk in body {
            hash.update(chunk.as_bytes());
        }
        hash.finish(idempotency_key)
    }

    /// The ids Zilla's conformance scripts expect for the same requests.
    #[test]
    fn matches_zilla() {
        let id = "92d0bf92-63e0-4cfc-ae73-71dee92d1544";
        assert_eq!(
            correlation_id(
                id,
                &[
                    (":method", "POST"),
                    (":scheme", "https"),
                    (":authority", "example.com:9090"),
                    (":path", "/items"),
                    ("content-type", "application/json"),
                    ("idempotency-key", id),
                ],
                &[("zilla:identity", "test")],
                &["{ \"name\"", " : ", "\"widget\" }"],
                id,
            ),
            format!("{id}-dc8d14b922019435ad8d783d8272b34d")
        );
        let key = "3f96592e-c8f1-4167-8c46-85f2aabb70a5";
        assert_eq!(
            correlation_id(
                id,
                &[
                    (":method", "PUT"),
                    (":scheme", "https"),
                    (":authority", "example.com:9090"),
                    (":path", "/items/92d0bf92-63e0-4cfc-ae73-71dee92d1544"),
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                &[("zilla:identity", "test")],
                &["{ \"name\": \"widget\" }"],
                key,
            ),
            format!("{key}-ee284177921a96f23e9b3166f12ca058")
        );
    }
}
