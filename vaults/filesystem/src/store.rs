//! The loaded contents of one store, whatever its format: key entries and trusted certificates
//! by alias.

use std::fmt;
use std::path::PathBuf;

use x509_parser::prelude::{FromDer, X509Certificate};
use zilla_engine::vault::KeyEntry;

use crate::error::VaultError;

/// What a store is used for, which decides which of its entries count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `keys`: private keys with their chains.
    Keys,
    /// `trust`: trusted certificates.
    Trust,
    /// `signers`: CA certificates that signed keys in `keys`.
    Signers,
}

impl Role {
    /// The option naming the store.
    pub(crate) fn option(self) -> &'static str {
        match self {
            Role::Keys => "keys",
            Role::Trust => "trust",
            Role::Signers => "signers",
        }
    }
}

/// Key entries and certificate entries, in store order. Certificate aliases may repeat: a PEM
/// bundle holds many certificates under its one name.
pub(crate) struct Store {
    pub(crate) path: PathBuf,
    pub(crate) keys: Vec<(String, KeyEntry)>,
    pub(crate) certificates: Vec<(String, Vec<u8>)>,
    /// DER certificate revocation lists (PEM stores only: `X509 CRL` sections and `.crl`
    /// files). They belong to no alias.
    pub(crate) crls: Vec<Vec<u8>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("keys", &self.key_aliases())
            .field("certificates", &self.certificate_aliases())
            .finish()
    }
}

impl Store {
    /// The key entry under `alias`. An exact match wins; otherwise aliases compare ignoring ASCII
    /// case, as Java's PKCS#12 key store (and so Zilla) does.
    pub(crate) fn key(&self, alias: &str) -> Result<&KeyEntry, VaultError> {
        let found = self
            .keys
            .iter()
            .find(|(name, _)| name == alias)
            .or_else(|| {
                self.keys
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(alias))
            });
        found
            .map(|(_, entry)| entry)
            .ok_or_else(|| VaultError::MissingAlias {
                path: self.path.clone(),
                kind: "key",
                alias: alias.to_owned(),
                available: self.key_aliases(),
            })
    }

    /// Every certificate under `alias` (matched as in [`Store::key`]), in store order.
    pub(crate) fn certificates_of(&self, alias: &str) -> Result<Vec<Vec<u8>>, VaultError> {
        let name = self
            .certificates
            .iter()
            .map(|(name, _)| name)
            .find(|name| *name == alias)
            .or_else(|| {
                self.certificates
                    .iter()
                    .map(|(name, _)| name)
                    .find(|name| name.eq_ignore_ascii_case(alias))
            })
            .ok_or_else(|| VaultError::MissingAlias {
                path: self.path.clone(),
                kind: "certificate",
                alias: alias.to_owned(),
                available: self.certificate_aliases(),
            })?;
        Ok(self
            .certificates
            .iter()
            .filter(|(other, _)| other == name)
            .map(|(_, der)| der.clone())
            .collect())
    }

    pub(crate) fn key_aliases(&self) -> Vec<String> {
        self.keys.iter().map(|(alias, _)| alias.clone()).collect()
    }

    pub(crate) fn certificate_aliases(&self) -> Vec<String> {
        let mut aliases: Vec<String> = Vec::new();
        for (alias, _) in &self.certificates {
            if !aliases.contains(alias) {
                aliases.push(alias.clone());
            }
        }
        aliases
    }

    /// Keeps only the entries listed in `entries` (the `entries` option). Fails at the index of
    /// the first listed alias the store lacks.
    pub(crate) fn restrict(
        &mut self,
        role: Role,
        entries: &[String],
    ) -> Result<(), (usize, VaultError)> {
        let mut kept_keys = Vec::new();
        let mut kept_certificates = Vec::new();
        for (index, alias) in entries.iter().enumerate() {
            match role {
                Role::Keys => {
                    let entry = self.key(alias).map_err(|error| (index, error))?.clone();
                    kept_keys.push((alias.clone(), entry));
                }
                Role::Trust | Role::Signers => {
                    let certificates = self
                        .certificates_of(alias)
                        .map_err(|error| (index, error))?;
                    kept_certificates
                        .extend(certificates.into_iter().map(|der| (alias.clone(), der)));
                }
            }
        }
        self.keys = kept_keys;
        self.certificates = kept_certificates;
        Ok(())
    }
}

/// The parts of a certificate the vault compares: the DER names, as raw bytes.
#[derive(Clone)]
pub(crate) struct CertificateNames {
    pub(crate) subject: Vec<u8>,
    pub(crate) issuer: Vec<u8>,
    /// The subject as text (`CN=...`), for aliases of unnamed certificates.
    pub(crate) subject_text: String,
}

impl CertificateNames {
    /// Parses `der` as an X.509 certificate.
    pub(crate) fn parse(der: &[u8]) -> Result<Self, String> {
        let (_, certificate) = X509Certificate::from_der(der).map_err(|error| error.to_string())?;
        Ok(Self {
            subject: certificate.subject().as_raw().to_vec(),
            issuer: certificate.issuer().as_raw().to_vec(),
            subject_text: certificate.subject().to_string(),
        })
    }

    pub(crate) fn self_signed(&self) -> bool {
        self.subject == self.issuer
    }
}
