//! The filesystem vault: PKCS#12, JKS and PEM key and trust stores.
//!
//! A `filesystem` vault reads up to three stores from disk when the config is built and hands
//! their contents to TLS bindings by alias:
//!
//! - `keys`: private keys with their certificate chains (`tls.options.keys`);
//! - `trust`: trusted certificates (`tls.options.trust`, and all of them when a binding trusts
//!   the whole store);
//! - `signers`: CA certificates (`tls.options.signers`).
//!
//! ```yaml
//! name: example
//! vaults:
//!   server:
//!     type: filesystem
//!     options:
//!       keys:
//!         store: tls/localhost.p12     # relative to this file's directory
//!         type: pkcs12                 # the default
//!         password: ${{env.KEYSTORE_PASSWORD}}
//!       trust:
//!         store: tls/trust.p12
//!         password: generated
//!       signers:
//!         store: tls/ca                # a directory of PEM files
//!         type: pem
//! bindings:
//!   tls_server:
//!     type: tls
//!     kind: server
//!     vault: server
//!     options:
//!       keys: [localhost]
//!     exit: app
//! ```
//!
//! # Options
//!
//! `keys`, `trust` and `signers` each take:
//!
//! | option | meaning |
//! |---|---|
//! | `store` | path of the store, relative to the config file's directory |
//! | `type` | `pkcs12` (default), `jks` or `pem`; `pkcs12` and `jks` each read both formats, as Java's key stores do |
//! | `password` | PKCS#12: the store password (absent means the empty password); JKS: checks the store's integrity and decrypts its keys (absent: no check, certificates only, as in Java); PEM: decrypts `ENCRYPTED PRIVATE KEY` sections |
//! | `entries` | only these aliases are visible; each must be in the store |
//!
//! `revocation: crl` makes TLS bindings using the vault check peer certificates against the
//! certificate revocation lists of the `trust` store: a revoked certificate, or one whose
//! issuer has no list, is refused (as Zilla's PKIX checker without soft-fail refuses a
//! certificate whose status it cannot tell). Zilla's Java trust store cannot hold CRLs; here
//! they go in a `type: pem` trust store, as `X509 CRL` sections or `.crl` files (PEM or DER,
//! e.g. written by `openssl ca -gencrl`). `revocation: crl` without any list is refused at load.
//!
//! ```yaml
//! vaults:
//!   server:
//!     type: filesystem
//!     options:
//!       keys: {store: tls/localhost.p12, password: generated}
//!       trust: {store: tls/trust, type: pem}  # ca.pem and ca.crl
//!       revocation: crl
//! ```
//!
//! # PKCS#12
//!
//! Stores written by `openssl pkcs12 -export` (OpenSSL 3 default: PBES2, PBKDF2, AES-256-CBC),
//! by `openssl pkcs12 -export -legacy` and Java `keytool` (RC2-40-CBC for certificates, 3DES for
//! keys) are read; the decryption is the `p12-keystore` crate's. Aliases are the `friendlyName`s
//! (`-name`, `-caname`, `keytool -alias`): a private key is a key entry whose chain is the
//! certificate sharing its `localKeyId` followed by its issuers in the store; a certificate not
//! tied to a key is a trusted certificate, with or without Java's trusted-usage attribute. As in
//! Java, an alias that matches no entry exactly matches one that differs only in ASCII case.
//!
//! # JKS
//!
//! Java KeyStore files (`keytool -storetype JKS`, the default before Java 9): private key
//! entries (Sun's key protector, decrypted with the store password as Zilla does) and trusted
//! certificate entries. JCEKS stores and secret key entries are refused with their name. The
//! reader is this crate's own (see `jks.rs` for why).
//!
//! # PEM (`type: pem`)
//!
//! `store` is a file or a directory. Each file is one entry named by its file name without the
//! extension: `tls/localhost.pem` is `localhost`. A directory's `.pem`, `.crt`, `.cer` and
//! `.key` files are entries, and files sharing a name form one entry (`localhost.key` plus
//! `localhost.crt`). An entry with a private key (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE
//! KEY`, or `ENCRYPTED PRIVATE KEY` with `password`) is a key entry whose chain is its
//! certificates in file order, leaf first. An entry without a key holds trusted certificates:
//! `certificate(alias)` is its first one, `signer(alias)` all of them, and every one is in
//! `certificates()`, so a CA bundle file works as a trust store.

mod config;
mod error;
mod jks;
mod pem;
mod pkcs12;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

use zilla_engine::BuildError;
use zilla_engine::components::{ComponentContext, ComponentFactory};
use zilla_engine::vault::{KeyEntry, Vault};

pub use config::{FileSystemOptions, Revocation, StoreOptions, StoreType};
pub use error::VaultError;

use store::{CertificateNames, Role, Store};

/// Registers the `filesystem` vault type.
pub fn register(registry: &mut zilla_engine::Registry) {
    registry.vault(FileSystemVaultFactory);
}

/// Builds `filesystem` vaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSystemVaultFactory;

impl ComponentFactory<dyn Vault> for FileSystemVaultFactory {
    fn type_name(&self) -> &'static str {
        "filesystem"
    }

    fn options_schema(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::from(schemars::schema_for!(
            FileSystemOptions
        )))
    }

    fn build(&self, context: &ComponentContext<'_>) -> Result<Arc<dyn Vault>, BuildError> {
        let options: FileSystemOptions = context.options()?;
        let vault = FileSystemVault::load(&options, |path| context.resolve_path(path))?;
        Ok(Arc::new(vault))
    }
}

/// The loaded stores of one `filesystem` vault.
#[derive(Debug)]
pub struct FileSystemVault {
    keys: Option<Store>,
    trust: Option<Store>,
    signers: Option<Store>,
    revocation: Option<Revocation>,
}

impl FileSystemVault {
    /// Reads every configured store; `resolve` turns a `store` option into a file path. Errors
    /// point at the option at fault (`options.keys.store`, `options.trust.entries[1]`, ...).
    ///
    /// ```no_run
    /// use zilla_vault_filesystem::{FileSystemOptions, FileSystemVault};
    ///
    /// let options: FileSystemOptions = serde_json::from_value(serde_json::json!({
    ///     "keys": {"store": "tls/localhost.p12", "password": "generated"},
    /// }))?;
    /// let config_dir = std::path::Path::new("/etc/zilla");
    /// let vault = FileSystemVault::load(&options, |store| config_dir.join(store))?;
    /// let localhost = vault.find_key("localhost")?;
    /// assert!(!localhost.chain.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(
        options: &FileSystemOptions,
        resolve: impl Fn(&str) -> PathBuf,
    ) -> Result<Self, BuildError> {
        let load = |role: Role, store: &Option<StoreOptions>| {
            store
                .as_ref()
                .map(|store| load_store(role, store, &resolve))
                .transpose()
        };
        let vault = Self {
            keys: load(Role::Keys, &options.keys)?,
            trust: load(Role::Trust, &options.trust)?,
            signers: load(Role::Signers, &options.signers)?,
            revocation: options.revocation,
        };
        if vault.revocation == Some(Revocation::Crl)
            && vault
                .trust
                .as_ref()
                .is_none_or(|trust| trust.crls.is_empty())
        {
            // Checking revocation with no list would refuse every peer (an unknown status is
            // not trusted); loading without checking would ignore the setting. Neither is
            // what the config asks for.
            return Err(BuildError::at(
                "options.revocation",
                "`revocation: crl` needs certificate revocation lists in the `trust` store: \
                 a `type: pem` store holding `X509 CRL` sections or `.crl` files",
            ));
        }
        Ok(vault)
    }

    /// The certificate revocation lists of `trust` (DER), in store order.
    pub fn crls(&self) -> Vec<Vec<u8>> {
        self.trust
            .as_ref()
            .map(|trust| trust.crls.clone())
            .unwrap_or_default()
    }

    /// The key entry `alias` of `keys`, or why there is none.
    pub fn find_key(&self, alias: &str) -> Result<KeyEntry, VaultError> {
        store(&self.keys, Role::Keys)?.key(alias).cloned()
    }

    /// The trusted certificate `alias` of `trust`, or why there is none. For a PEM bundle this
    /// is its first certificate.
    pub fn find_certificate(&self, alias: &str) -> Result<Vec<u8>, VaultError> {
        let certificates = store(&self.trust, Role::Trust)?.certificates_of(alias)?;
        Ok(certificates.into_iter().next().unwrap_or_default())
    }

    /// The certificates under `alias` in `signers`, or why there are none.
    pub fn find_signer(&self, alias: &str) -> Result<Vec<Vec<u8>>, VaultError> {
        store(&self.signers, Role::Signers)?.certificates_of(alias)
    }

    /// The key entries of `keys` whose leaf certificate was issued by a certificate under
    /// `signer_alias` in `signers`: how Zilla picks the keys a `tls.options.signers` alias
    /// stands for.
    pub fn signed_keys(&self, signer_alias: &str) -> Result<Vec<KeyEntry>, VaultError> {
        let signers: Vec<CertificateNames> = self
            .find_signer(signer_alias)?
            .iter()
            .filter_map(|der| CertificateNames::parse(der).ok())
            .collect();
        let keys = store(&self.keys, Role::Keys)?;
        Ok(keys
            .keys
            .iter()
            .filter(|(_, entry)| {
                let issuer = entry
                    .chain
                    .first()
                    .and_then(|leaf| CertificateNames::parse(leaf).ok())
                    .map(|leaf| leaf.issuer);
                issuer.is_some_and(|issuer| signers.iter().any(|signer| signer.subject == issuer))
            })
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    /// The aliases of the key entries in `keys`.
    pub fn key_aliases(&self) -> Vec<String> {
        self.keys
            .as_ref()
            .map(Store::key_aliases)
            .unwrap_or_default()
    }

    /// The aliases of the certificates in `trust`.
    pub fn certificate_aliases(&self) -> Vec<String> {
        self.trust
            .as_ref()
            .map(Store::certificate_aliases)
            .unwrap_or_default()
    }

    /// `revocation`.
    pub fn revocation(&self) -> Option<Revocation> {
        self.revocation
    }
}

impl Vault for FileSystemVault {
    fn key(&self, alias: &str) -> Option<KeyEntry> {
        self.find_key(alias).map_err(missed).ok()
    }

    fn certificate(&self, alias: &str) -> Option<Vec<u8>> {
        // Trust aliases may legitimately be found elsewhere (the system CA store), so a miss
        // here is not worth a warning.
        self.find_certificate(alias)
            .map_err(|error| tracing::debug!(%error, "vault lookup failed"))
            .ok()
    }

    fn certificates(&self) -> Vec<Vec<u8>> {
        self.trust
            .iter()
            .flat_map(|trust| trust.certificates.iter().map(|(_, der)| der.clone()))
            .collect()
    }

    fn signer(&self, alias: &str) -> Option<Vec<Vec<u8>>> {
        self.find_signer(alias).map_err(missed).ok()
    }

    fn revocation_lists(&self) -> Option<Vec<Vec<u8>>> {
        (self.revocation == Some(Revocation::Crl)).then(|| self.crls())
    }
}

/// The trait's lookups answer `None`; the log keeps the store path and the aliases it has.
fn missed(error: VaultError) {
    tracing::warn!(%error, "vault lookup failed");
}

fn store(store: &Option<Store>, role: Role) -> Result<&Store, VaultError> {
    store.as_ref().ok_or(VaultError::NoStore {
        option: role.option(),
    })
}

/// A `pkcs12` or `jks` store. Either type reads either format, told apart by the file's first
/// bytes, as Java's key stores do since Java 9 (`keystore.type.compat`), so a Zilla
/// configuration that names one type for a file of the other keeps working.
fn java_store(path: &std::path::Path, password: Option<&str>) -> Result<Store, VaultError> {
    let data = std::fs::read(path).map_err(|source| VaultError::Read {
        path: path.to_owned(),
        source,
    })?;
    if jks::is_java_store(&data) {
        jks::load(path, &data, password)
    } else {
        pkcs12::load(path, &data, password)
    }
}

fn load_store(
    role: Role,
    options: &StoreOptions,
    resolve: &impl Fn(&str) -> PathBuf,
) -> Result<Store, BuildError> {
    let option = role.option();
    let path = resolve(&options.store);
    let password = options.password.as_deref();
    let mut store = match options.store_type {
        StoreType::Pkcs12 | StoreType::Jks => java_store(&path, password),
        StoreType::Pem => pem::load(&path, password),
    }
    .map_err(|error| BuildError::at(format!("options.{option}.store"), error.to_string()))?;
    if let Some(entries) = &options.entries {
        store.restrict(role, entries).map_err(|(index, error)| {
            BuildError::at(
                format!("options.{option}.entries[{index}]"),
                error.to_string(),
            )
        })?;
    }
    let empty = match role {
        Role::Keys => store.keys.is_empty(),
        Role::Trust | Role::Signers => store.certificates.is_empty(),
    };
    if empty {
        tracing::warn!(
            store = %path.display(),
            "the {option} store has no {}",
            if role == Role::Keys { "private keys" } else { "certificates" }
        );
    }
    tracing::debug!(
        store = %path.display(),
        r#type = options.store_type.as_str(),
        keys = ?store.key_aliases(),
        certificates = ?store.certificate_aliases(),
        "loaded {option} store"
    );
    Ok(store)
}
