//! Telling HTTP/2 prior knowledge from HTTP/1.x by the first bytes of a connection, then
//! handing those bytes back to the protocol that serves it.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use zilla_engine::stream::AsyncIo;

/// The connection preface an HTTP/2 client starts with (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// The HTTP/2 preface.
    H2,
    /// Anything else: HTTP/1.x (or garbage, which HTTP/1.1 answers with 400).
    Other,
    /// The peer closed before sending a byte.
    Closed,
}

/// Reads until the bytes read differ from the HTTP/2 preface or complete it; returns the
/// verdict and the bytes read.
pub async fn sniff(io: &mut Box<dyn AsyncIo>) -> io::Result<(Sniffed, Bytes)> {
    let mut buffer = BytesMut::with_capacity(1024);
    loop {
        if io.read_buf(&mut buffer).await? == 0 {
            let verdict = if buffer.is_empty() {
                Sniffed::Closed
            } else {
                Sniffed::Other
            };
            return Ok((verdict, buffer.freeze()));
        }
        let seen = buffer.len().min(H2_PREFACE.len());
        if buffer[..seen] != H2_PREFACE[..seen] {
            return Ok((Sniffed::Other, buffer.freeze()));
        }
        if seen == H2_PREFACE.len() {
            return Ok((Sniffed::H2, buffer.freeze()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use zilla_engine::stream::Rewind;

    async fn sniffed(chunks: &[&[u8]]) -> (Sniffed, Vec<u8>) {
        let (mut near, far) = tokio::io::duplex(1024);
        for chunk in chunks {
            near.write_all(chunk).await.unwrap();
        }
        drop(near);
        let mut io: Box<dyn AsyncIo> = Box::new(far);
        let (verdict, prefix) = sniff(&mut io).await.unwrap();
        let mut replay = Rewind::new(prefix, io);
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        (verdict, all)
    }

    #[tokio::test]
    async fn tells_h2_from_h1_and_replays_everything() {
        let mut h2 = H2_PREFACE.to_vec();
        h2.extend_from_slice(b"frames");
        assert_eq!(sniffed(&[&h2]).await, (Sniffed::H2, h2.clone()));
        assert_eq!(
            sniffed(&[b"GET / HTTP/1.1\r\n\r\n"]).await.0,
            Sniffed::Other
        );
        assert_eq!(sniffed(&[b"PRI * HTTP/1.1"]).await.0, Sniffed::Other);
        assert_eq!(sniffed(&[b"PR"]).await, (Sniffed::Other, b"PR".to_vec()));
        assert_eq!(sniffed(&[]).await.0, Sniffed::Closed);
    }
}
