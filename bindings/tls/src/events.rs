//! The tls binding's events, named as Zilla names them, and how a failed handshake maps to one.

use std::io;

use zilla_engine::events::Events;

/// A TLS error with no more specific event.
pub const TLS_FAILED: &str = "BINDING_TLS_TLS_FAILED";
/// The peer broke the TLS protocol (malformed or unexpected messages).
pub const PROTOCOL_REJECTED: &str = "BINDING_TLS_PROTOCOL_REJECTED";
/// A key could not be used.
pub const KEY_REJECTED: &str = "BINDING_TLS_KEY_REJECTED";
/// The peer's certificate was missing or not trusted.
pub const PEER_NOT_VERIFIED: &str = "BINDING_TLS_PEER_NOT_VERIFIED";
/// The peers could not agree on protocol parameters, or one side gave up.
pub const HANDSHAKE_FAILED: &str = "BINDING_TLS_HANDSHAKE_FAILED";
/// The handshake did not finish in time.
pub const HANDSHAKE_TIMEOUT: &str = "BINDING_TLS_HANDSHAKE_TIMEOUT";

/// The event for a handshake that failed with `error`, `None` when the transport just closed
/// or failed (not a TLS matter: no event, as for any connection that drops).
pub fn classify(error: &io::Error) -> Option<&'static str> {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())?;
    Some(classify_tls(tls))
}

/// The event for a rustls error.
pub fn classify_tls(error: &rustls::Error) -> &'static str {
    use rustls::Error;
    match error {
        Error::InvalidCertificate(_)
        | Error::NoCertificatesPresented
        | Error::InvalidCertRevocationList(_) => PEER_NOT_VERIFIED,
        Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::InvalidMessage(_)
        | Error::InvalidEncryptedClientHello(_)
        | Error::PeerMisbehaved(_)
        | Error::PeerSentOversizedRecord
        | Error::DecryptError => PROTOCOL_REJECTED,
        Error::PeerIncompatible(_)
        | Error::NoApplicationProtocol
        | Error::AlertReceived(_)
        | Error::HandshakeNotComplete
        | Error::UnsupportedNameType => HANDSHAKE_FAILED,
        Error::InconsistentKeys(_) => KEY_REJECTED,
        _ => TLS_FAILED,
    }
}

/// Raises the event for a failed handshake, if it is a TLS failure; logs it either way.
pub fn handshake_failed(events: &Events, error: &io::Error) {
    match classify(error) {
        Some(name) => events.emit(name, 0, format!("TLS handshake failed: {error}")),
        None => tracing::debug!(%error, "connection ended during the TLS handshake"),
    }
}

/// Raises the handshake timeout event.
pub fn handshake_timed_out(events: &Events, seconds: u64) {
    events.emit(
        HANDSHAKE_TIMEOUT,
        0,
        format!("TLS handshake did not complete within {seconds} s"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustls_errors_map_to_zilla_events() {
        let wrapped = |error: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, error);
        assert_eq!(
            classify(&wrapped(rustls::Error::NoCertificatesPresented)),
            Some(PEER_NOT_VERIFIED)
        );
        assert_eq!(
            classify(&wrapped(rustls::Error::NoApplicationProtocol)),
            Some(HANDSHAKE_FAILED)
        );
        assert_eq!(
            classify(&wrapped(rustls::Error::DecryptError)),
            Some(PROTOCOL_REJECTED)
        );
        assert_eq!(
            classify(&wrapped(rustls::Error::General("x".into()))),
            Some(TLS_FAILED)
        );
        assert_eq!(
            classify(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            None
        );
    }
}
