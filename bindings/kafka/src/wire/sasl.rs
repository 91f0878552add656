//! SASL authentication of a broker connection: PLAIN and SCRAM-SHA-256/512 (RFC 5802, 7677)
//! over SaslHandshake v1 and SaslAuthenticate.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use super::error::{ErrorCode, KafkaError};
use super::types::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};

/// Where a SASL exchange runs: a broker connection that has negotiated versions. A trait, so
/// the exchange does not depend on the connection that drives it.
pub(crate) trait SaslChannel {
    /// Sends SaslHandshake.
    async fn handshake(
        &self,
        request: &SaslHandshakeRequest,
    ) -> Result<SaslHandshakeResponse, KafkaError>;
    /// Sends SaslAuthenticate.
    async fn authenticate(
        &self,
        request: &SaslAuthenticateRequest,
    ) -> Result<SaslAuthenticateResponse, KafkaError>;
}

/// Kafka brokers refuse SCRAM credentials with more iterations than this; a server asking for
/// more is not a Kafka broker and would only burn CPU.
const MAX_ITERATIONS: u32 = 16_384;

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN`: the password in clear (use with TLS).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism name sent in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Credentials for SASL.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslConfig {
    /// Mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for SaslConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Runs the SASL exchange on a connection that has negotiated versions.
pub(crate) async fn authenticate(
    connection: &impl SaslChannel,
    config: &SaslConfig,
) -> Result<(), KafkaError> {
    let mechanism = config.mechanism.name();
    let handshake = connection
        .handshake(&SaslHandshakeRequest {
            mechanism: mechanism.to_owned(),
        })
        .await?;
    if handshake.error == ErrorCode::UNSUPPORTED_SASL_MECHANISM {
        return Err(KafkaError::Authentication(format!(
            "the broker does not enable {mechanism} (it enables {})",
            handshake.mechanisms.join(", ")
        )));
    }
    handshake.error.check("SaslHandshake")?;

    match config.mechanism {
        SaslMechanism::Plain => {
            let token = format!("\0{}\0{}", config.username, config.password);
            exchange(connection, Bytes::from(token)).await?;
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let mut nonce = [0u8; 24];
            getrandom::fill(&mut nonce)
                .map_err(|e| KafkaError::Authentication(format!("no randomness for nonce: {e}")))?;
            let scram = Scram::new(
                config.mechanism,
                &config.username,
                &config.password,
                BASE64.encode(nonce),
            );
            let server_first = exchange(connection, Bytes::from(scram.client_first())).await?;
            let (client_final, verifier) = scram.client_final(&server_first)?;
            let server_final = exchange(connection, Bytes::from(client_final)).await?;
            verifier.verify(&server_final)?;
        }
    }
    tracing::debug!(mechanism, user = %config.username, "authenticated");
    Ok(())
}

async fn exchange(connection: &impl SaslChannel, auth_bytes: Bytes) -> Result<Bytes, KafkaError> {
    let response = connection
        .authenticate(&SaslAuthenticateRequest { auth_bytes })
        .await?;
    if !response.error.is_ok() {
        return Err(KafkaError::Authentication(
            response
                .message
                .unwrap_or_else(|| response.error.to_string()),
        ));
    }
    Ok(response.auth_bytes)
}

/// The client side of a SCRAM exchange.
pub(crate) struct Scram {
    mechanism: SaslMechanism,
    password: String,
    client_first_bare: String,
    client_nonce: String,
}

/// Checks the server's final message against the signature expected from it.
pub(crate) struct ServerVerifier {
    expected: Vec<u8>,
}

impl Scram {
    pub(crate) fn new(
        mechanism: SaslMechanism,
        username: &str,
        password: &str,
        client_nonce: String,
    ) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        Self {
            mechanism,
            password: password.to_owned(),
            client_first_bare: format!("n={name},r={client_nonce}"),
            client_nonce,
        }
    }

    pub(crate) fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    pub(crate) fn client_final(
        &self,
        server_first: &[u8],
    ) -> Result<(String, ServerVerifier), KafkaError> {
        let fail = |why: &str| KafkaError::Authentication(format!("SCRAM server-first: {why}"));
        let server_first = std::str::from_utf8(server_first).map_err(|_| fail("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_once('=') {
                Some(("r", value)) => nonce = Some(value),
                Some(("s", value)) => salt = Some(value),
                Some(("i", value)) => iterations = Some(value),
                Some(("e", value)) => return Err(fail(value)),
                Some(("m", _)) => return Err(fail("mandatory extension not supported")),
                _ => {}
            }
        }
        let nonce = nonce.ok_or_else(|| fail("no nonce"))?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() == self.client_nonce.len() {
            return Err(fail("the nonce does not extend ours"));
        }
        let salt = BASE64
            .decode(salt.ok_or_else(|| fail("no salt"))?)
            .map_err(|_| fail("salt is not base64"))?;
        let iterations: u32 = iterations
            .ok_or_else(|| fail("no iteration count"))?
            .parse()
            .map_err(|_| fail("bad iteration count"))?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(fail("iteration count out of range"));
        }

        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let (proof, server_signature) = match self.mechanism {
            SaslMechanism::ScramSha256 => {
                proofs::<Sha256>(self.password.as_bytes(), &salt, iterations, &auth_message)
            }
            SaslMechanism::ScramSha512 | SaslMechanism::Plain => {
                proofs::<Sha512>(self.password.as_bytes(), &salt, iterations, &auth_message)
            }
        }?;
        Ok((
            format!("{without_proof},p={}", BASE64.encode(proof)),
            ServerVerifier {
                expected: server_signature,
            },
        ))
    }
}

impl ServerVerifier {
    pub(crate) fn verify(&self, server_final: &[u8]) -> Result<(), KafkaError> {
        let fail = |why: &str| KafkaError::Authentication(format!("SCRAM server-final: {why}"));
        let server_final = std::str::from_utf8(server_final).map_err(|_| fail("not UTF-8"))?;
        if let Some(error) = server_final.strip_prefix("e=") {
            return Err(fail(error));
        }
        let signature = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| fail("no verifier"))?;
        let signature = BASE64
            .decode(signature)
            .map_err(|_| fail("verifier is not base64"))?;
        let differs = signature.len() != self.expected.len()
            || signature
                .iter()
                .zip(&self.expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0;
        if differs {
            return Err(fail(
                "the server signature does not match: not the real server",
            ));
        }
        Ok(())
    }
}

fn hmac<D: EagerHash>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, KafkaError> {
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key)
        .map_err(|e| KafkaError::Authentication(e.to_string()))?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The client proof and the server signature the client expects (RFC 5802 section 3).
fn proofs<D: EagerHash>(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    auth_message: &str,
) -> Result<(Vec<u8>, Vec<u8>), KafkaError> {
    let mut salted = vec![0u8; <D as Digest>::output_size()];
    pbkdf2::pbkdf2_hmac::<D>(password, salt, iterations, &mut salted);
    let client_key = hmac::<D>(&salted, b"Client Key")?;
    let stored_key = <D as Digest>::digest(&client_key).to_vec();
    let client_signature = hmac::<D>(&stored_key, auth_message.as_bytes())?;
    let proof = client_key
        .iter()
        .zip(&client_signature)
        .map(|(k, s)| k ^ s)
        .collect();
    let server_key = hmac::<D>(&salted, b"Server Key")?;
    let server_signature = hmac::<D>(&server_key, auth_message.as_bytes())?;
    Ok((proof, server_signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_scram_sha256_exchange() {
        let scram = Scram::new(
            SaslMechanism::ScramSha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (client_final, verifier) = scram.client_final(server_first).unwrap();
        assert_eq!(
            client_final,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        verifier
            .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(
            verifier
                .verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(verifier.verify(b"e=invalid-proof").is_err());
    }

    #[test]
    fn server_nonce_must_extend_the_client_nonce() {
        let scram = Scram::new(SaslMechanism::ScramSha512, "u", "p", "abc".into());
        assert!(scram.client_final(b"r=xyz,s=AAAA,i=4096").is_err());
        assert!(scram.client_final(b"r=abc,s=AAAA,i=4096").is_err());
        assert!(scram.client_final(b"r=abcd,s=AAAA,i=999999999").is_err());
        assert!(scram.client_final(b"r=abcd,s=AAAA,i=4096").is_ok());
    }

    #[test]
    fn user_names_are_escaped() {
        let scram = Scram::new(SaslMechanism::ScramSha256, "a=b,c", "p", "n".into());
        assert_eq!(scram.client_first(), "n,,n=a=3Db=2Cc,r=n");
    }
}
