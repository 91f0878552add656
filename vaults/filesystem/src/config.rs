//! The typed `options` of a `filesystem` vault, spelled as in Zilla's `zilla.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;

/// `vaults.<name>.options` of a `filesystem` vault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "filesystem vault options")]
pub struct FileSystemOptions {
    /// The store holding private keys with their certificate chains, named by
    /// `tls.options.keys`.
    #[serde(default)]
    #[schemars(with = "StoreOptions")]
    pub keys: Option<StoreOptions>,
    /// The store holding trusted certificates, named by `tls.options.trust`.
    #[serde(default)]
    #[schemars(with = "StoreOptions")]
    pub trust: Option<StoreOptions>,
    /// The store holding signer (CA) certificates, named by `tls.options.signers`.
    #[serde(default)]
    #[schemars(with = "StoreOptions")]
    pub signers: Option<StoreOptions>,
    /// How peer certificates are checked for revocation.
    #[serde(default)]
    #[schemars(with = "Revocation")]
    pub revocation: Option<Revocation>,
}

/// One key or certificate store on disk.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreOptions {
    /// Path of the store, relative to the directory of the config file. For `pem`, a file or a
    /// directory of `.pem`, `.crt`, `.cer` and `.key` files.
    pub store: String,
    /// The store format.
    #[serde(default, rename = "type")]
    pub store_type: StoreType,
    /// The store password. For `pkcs12` it checks integrity and decrypts the contents (an absent
    /// password is the empty one); for `jks` it checks integrity and decrypts keys (absent: no
    /// check and no keys, as in Java); for `pem` it decrypts `ENCRYPTED PRIVATE KEY` sections.
    #[serde(default)]
    #[schemars(with = "String")]
    pub password: Option<String>,
    /// The aliases to expose; every other entry of the store is hidden. Each listed alias must
    /// be in the store.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub entries: Option<Vec<String>>,
}

/// The format of a store file: `pkcs12` (PKCS#12 as written by `openssl pkcs12 -export` or
/// `keytool`, modern or legacy encryption), `jks` (Java KeyStore, `keytool -storetype JKS`;
/// either of the two reads both formats, as Java's do) or `pem` (PEM files, each file one entry named by its
/// file name without the extension).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreType {
    #[default]
    Pkcs12,
    Jks,
    Pem,
}

impl StoreType {
    /// The name used in `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreType::Pkcs12 => "pkcs12",
            StoreType::Jks => "jks",
            StoreType::Pem => "pem",
        }
    }
}

/// How peer certificates are checked for revocation: `crl` (certificate revocation lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Revocation {
    Crl,
}
