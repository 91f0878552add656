//! Vaults supply key and trust material to TLS by alias. The material is DER so that the
//! engine stays independent of any TLS library.

/// The encoding of a private key's DER bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateKeyFormat {
    /// PKCS#8 `PrivateKeyInfo`.
    Pkcs8,
    /// PKCS#1 `RSAPrivateKey`.
    Pkcs1,
    /// SEC1 `ECPrivateKey`.
    Sec1,
}

/// A private key with its certificate chain (leaf first).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// DER private key.
    pub key: Vec<u8>,
    /// How `key` is encoded.
    pub format: PrivateKeyFormat,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("chain", &self.chain.len())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// A source of TLS material, named by `vault:` on a binding.
pub trait Vault: Send + Sync + 'static {
    /// The key (with chain) stored under `alias` in `keys`.
    fn key(&self, alias: &str) -> Option<KeyEntry>;
    /// The trusted certificate stored under `alias` in `trust`.
    fn certificate(&self, alias: &str) -> Option<Vec<u8>>;
    /// Every trusted certificate in `trust` (for `trustcacerts`-style use).
    fn certificates(&self) -> Vec<Vec<u8>>;
    /// The signer (CA) certificates stored under `alias` in `signers`.
    fn signer(&self, alias: &str) -> Option<Vec<Vec<u8>>>;
    /// `Some` when peer certificates verified against this vault's trust must be checked for
    /// revocation: the DER certificate revocation lists to check them against (a certificate
    /// whose issuer has none is refused). `None`: no revocation checking.
    fn revocation_lists(&self) -> Option<Vec<Vec<u8>>> {
        None
    }
}
