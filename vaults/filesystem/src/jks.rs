//! Java KeyStore (JKS) stores, as `keytool -storetype JKS` writes them and as Java 8 and older
//! wrote by default.
//!
//! The format is small and has not changed since Java 1.2, so it is read here rather than through
//! a crate: the one published JKS crate indexes the file's bytes without bounds checks and pulls
//! in a second, older ASN.1 stack. The layout:
//!
//! - magic `FEEDFEED`, version (1 or 2), entry count;
//! - per entry: tag (1 private key, 2 trusted certificate), alias (Java modified UTF-8 with a
//!   16-bit length), creation time (64-bit milliseconds), then
//!   - private key: the protected key (a DER `EncryptedPrivateKeyInfo` under Sun's key protector
//!     OID), and its certificate chain, leaf first;
//!   - trusted certificate: one certificate;
//!   - each certificate is preceded, in version 2, by its type (`X.509`);
//! - a SHA-1 over the password (UTF-16BE), the text `Mighty Aphrodite` and every byte before it.
//!
//! Sun's key protector encrypts the PKCS#8 key with a SHA-1 keystream: a 20-byte salt, then
//! `SHA1(password ‖ previous block)` blocks XORed over the key, then `SHA1(password ‖ key)` as
//! the check. As with Java, an absent password skips the store's integrity check, which leaves
//! only certificates usable: a store with private keys then fails to load.

use std::path::Path;

use sha1::{Digest, Sha1};
use x509_parser::asn1_rs::{Any, FromDer, Oid, Tag};
use zilla_engine::vault::{KeyEntry, PrivateKeyFormat};

use crate::error::VaultError;
use crate::store::Store;

/// The first four bytes of every JKS file.
pub(crate) const MAGIC: [u8; 4] = [0xfe, 0xed, 0xfe, 0xed];
/// The first four bytes of a JCEKS file (Sun's JCE key store), which is not read.
const JCEKS_MAGIC: [u8; 4] = [0xce, 0xce, 0xce, 0xce];
/// What the store digest mixes in after the password, as Sun's `JavaKeyStore` does.
const WHITENER: &[u8] = b"Mighty Aphrodite";
/// Sun's proprietary key protector, `1.3.6.1.4.1.42.2.17.1.1`.
const KEY_PROTECTOR_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 42, 2, 17, 1, 1];
const DIGEST_LEN: usize = 20;

/// Whether `data` starts like a JKS or JCEKS file (the latter is refused with its name).
pub(crate) fn is_java_store(data: &[u8]) -> bool {
    data.starts_with(&MAGIC) || data.starts_with(&JCEKS_MAGIC)
}

/// Reads the JKS store at `path` from its bytes `data`.
pub(crate) fn load(path: &Path, data: &[u8], password: Option<&str>) -> Result<Store, VaultError> {
    let format = |reason: String| VaultError::Format {
        path: path.to_owned(),
        format: "jks",
        reason,
    };
    if data.starts_with(&JCEKS_MAGIC) {
        return Err(format(
            "it is a JCEKS store, which is not supported; convert it with `keytool -importkeystore -deststoretype pkcs12`".into(),
        ));
    }
    let password = password.map(utf16_be);
    let Some(body_len) = data.len().checked_sub(DIGEST_LEN) else {
        return Err(format("the file is too short".into()));
    };
    let (body, digest) = data.split_at(body_len);
    if let Some(password) = &password {
        let computed = Sha1::new()
            .chain_update(password)
            .chain_update(WHITENER)
            .chain_update(body)
            .finalize();
        if computed.as_slice() != digest {
            return Err(VaultError::WrongPassword {
                path: path.to_owned(),
                format: "JKS",
            });
        }
    }

    let mut reader = Reader { data: body };
    if reader.bytes(4).map_err(format)? != MAGIC {
        return Err(format("bad magic number".into()));
    }
    let version = reader.u32().map_err(format)?;
    if version != 1 && version != 2 {
        return Err(format(format!("unknown version {version}")));
    }
    let count = reader.u32().map_err(format)?;
    let mut store = Store {
        path: path.to_owned(),
        keys: Vec::new(),
        certificates: Vec::new(),
        crls: Vec::new(),
    };
    for _ in 0..count {
        let tag = reader.u32().map_err(format)?;
        let alias = reader.utf().map_err(format)?;
        let _created_millis = reader.bytes(8).map_err(format)?;
        let entry = |reason: String| VaultError::Entry {
            path: path.to_owned(),
            alias: alias.clone(),
            reason,
        };
        match tag {
            1 => {
                let length = reader.u32().map_err(format)?;
                let protected = reader.bytes(length as usize).map_err(format)?;
                let chain_len = reader.u32().map_err(format)?;
                let mut chain = Vec::new();
                for _ in 0..chain_len {
                    chain.push(reader.certificate(version).map_err(format)?);
                }
                let Some(password) = &password else {
                    return Err(entry(
                        "a private key needs the store `password` to be decrypted".into(),
                    ));
                };
                let key = unprotect(protected, password).map_err(|reason| match reason {
                    Unprotect::WrongPassword => VaultError::Decrypt {
                        path: path.to_owned(),
                        what: format!("key `{alias}`"),
                        reason: "the key check digest does not match".into(),
                    },
                    Unprotect::Format(reason) => entry(reason),
                })?;
                if chain.is_empty() {
                    return Err(entry("the key has no certificate chain".into()));
                }
                store.keys.push((
                    alias,
                    KeyEntry {
                        chain,
                        key,
                        format: PrivateKeyFormat::Pkcs8,
                    },
                ));
            }
            2 => {
                let certificate = reader.certificate(version).map_err(format)?;
                store.certificates.push((alias, certificate));
            }
            3 => return Err(entry("secret key entries are not supported".into())),
            other => return Err(format(format!("unknown entry tag {other}"))),
        }
    }
    if !reader.data.is_empty() {
        return Err(format(format!(
            "{} unexpected bytes after the last entry",
            reader.data.len()
        )));
    }
    Ok(store)
}

/// A password as Java hands it to the key store: each UTF-16 code unit, big-endian.
fn utf16_be(password: &str) -> Vec<u8> {
    password.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

enum Unprotect {
    WrongPassword,
    Format(String),
}

/// Recovers the PKCS#8 key from Sun's key protector.
fn unprotect(protected: &[u8], password: &[u8]) -> Result<Vec<u8>, Unprotect> {
    let bad = |reason: &str| Unprotect::Format(format!("protected key: {reason}"));
    let (_, info) = Any::from_der(protected).map_err(|_| bad("not DER"))?;
    if info.tag() != Tag::Sequence {
        return Err(bad("not a SEQUENCE"));
    }
    let (rest, algorithm) = Any::from_der(info.data).map_err(|_| bad("no algorithm"))?;
    let (_, oid) = Oid::from_der(algorithm.data).map_err(|_| bad("no algorithm OID"))?;
    let expected = Oid::from(KEY_PROTECTOR_OID).map_err(|_| bad("protector OID"))?;
    if oid != expected {
        return Err(Unprotect::Format(format!(
            "the key is protected with {oid}, not Sun's JKS key protector; only JKS key entries are supported"
        )));
    }
    let (_, encrypted) = Any::from_der(rest).map_err(|_| bad("no encrypted data"))?;
    if encrypted.tag() != Tag::OctetString {
        return Err(bad("encrypted data is not an OCTET STRING"));
    }
    let encrypted = encrypted.data;
    if encrypted.len() < 2 * DIGEST_LEN {
        return Err(bad("too short"));
    }
    let (salt, rest) = encrypted.split_at(DIGEST_LEN);
    let (ciphertext, check) = rest.split_at(rest.len() - DIGEST_LEN);
    let mut key = Vec::with_capacity(ciphertext.len());
    let mut block: Vec<u8> = salt.to_vec();
    for chunk in ciphertext.chunks(DIGEST_LEN) {
        block = Sha1::new()
            .chain_update(password)
            .chain_update(&block)
            .finalize()
            .to_vec();
        key.extend(chunk.iter().zip(&block).map(|(byte, mask)| byte ^ mask));
    }
    let computed = Sha1::new()
        .chain_update(password)
        .chain_update(&key)
        .finalize();
    if computed.as_slice() != check {
        return Err(Unprotect::WrongPassword);
    }
    Ok(key)
}

/// Reads big-endian fields from the store body; every read is checked against what is left.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, length: usize) -> Result<&'a [u8], String> {
        if length > self.data.len() {
            return Err(format!(
                "a field of {length} bytes runs past the end of the file ({} left)",
                self.data.len()
            ));
        }
        let (taken, rest) = self.data.split_at(length);
        self.data = rest;
        Ok(taken)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let bytes = self.bytes(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    /// Java's `writeUTF`: a 16-bit length and modified UTF-8, which equals UTF-8 for every
    /// alias without NUL or characters outside the basic plane.
    fn utf(&mut self) -> Result<String, String> {
        let length = self.bytes(2)?;
        let length = u16::from_be_bytes([length[0], length[1]]) as usize;
        Ok(String::from_utf8_lossy(self.bytes(length)?).into_owned())
    }

    fn certificate(&mut self, version: u32) -> Result<Vec<u8>, String> {
        if version == 2 {
            let kind = self.utf()?;
            if kind != "X.509" {
                return Err(format!("certificate type `{kind}` is not X.509"));
            }
        }
        let length = self.u32()? as usize;
        Ok(self.bytes(length)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_utf16_big_endian() {
        assert_eq!(utf16_be("ab"), vec![0, b'a', 0, b'b']);
        assert_eq!(utf16_be("é"), vec![0, 0xe9]);
    }

    #[test]
    fn truncated_and_foreign_files_are_format_errors() {
        let path = Path::new("store.jks");
        for data in [&b""[..], &MAGIC[..], &[0u8; 40][..]] {
            let error = load(path, data, Some("secret")).err();
            assert!(
                matches!(
                    error,
                    Some(VaultError::Format { .. } | VaultError::WrongPassword { .. })
                ),
                "{error:?}"
            );
        }
        let mut jceks = JCEKS_MAGIC.to_vec();
        jceks.extend([0u8; 40]);
        let error = load(path, &jceks, None)
            .err()
            .map(|error| error.to_string());
        assert!(error.is_some_and(|error| error.contains("JCEKS")));
    }

    /// Builds a store the way Sun's `JavaKeyStore` writes one, so the reader's length checks can
    /// be driven by arbitrary bytes in the fields.
    fn store_bytes(entries: &[u8], count: u32, password: &str) -> Vec<u8> {
        let mut body = MAGIC.to_vec();
        body.extend(2u32.to_be_bytes());
        body.extend(count.to_be_bytes());
        body.extend(entries);
        let digest = Sha1::new()
            .chain_update(utf16_be(password))
            .chain_update(WHITENER)
            .chain_update(&body)
            .finalize();
        body.extend(digest);
        body
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_entries_never_panic(entries in proptest::collection::vec(proptest::num::u8::ANY, 0..256), count in 0u32..4) {
            let data = store_bytes(&entries, count, "secret");
            let _ = load(Path::new("store.jks"), &data, Some("secret"));
            let _ = load(Path::new("store.jks"), &data, None);
        }

        #[test]
        fn arbitrary_protected_keys_never_panic(protected in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = unprotect(&protected, &utf16_be("secret"));
        }
    }
}
