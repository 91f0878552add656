//! Why a store could not be loaded or an alias not found. Every message names the store file.

use std::path::PathBuf;

/// A problem with one store or one of its entries.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The store file or directory could not be read.
    #[error("cannot read store `{path}`: {source}")]
    Read {
        /// The store path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The store's integrity check failed: the password is wrong or the file was altered.
    #[error("wrong password for {format} store `{path}` (integrity check failed)")]
    WrongPassword {
        /// The store path.
        path: PathBuf,
        /// `PKCS#12` or `JKS`.
        format: &'static str,
    },
    /// Encrypted content did not decrypt.
    #[error(
        "cannot decrypt {what} in store `{path}`: wrong password or unsupported encryption ({reason})"
    )]
    Decrypt {
        /// The store path.
        path: PathBuf,
        /// What was being decrypted.
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// The file is not in the format its `type` says.
    #[error("store `{path}` is not a valid {format} store: {reason}")]
    Format {
        /// The store path.
        path: PathBuf,
        /// `pkcs12`, `jks` or `pem`.
        format: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// One entry of a store is unusable.
    #[error("entry `{alias}` in store `{path}`: {reason}")]
    Entry {
        /// The store path.
        path: PathBuf,
        /// The entry's alias.
        alias: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No entry of the wanted kind under an alias.
    #[error("no {kind} `{alias}` in store `{path}`; {}", available_text(.available))]
    MissingAlias {
        /// The store path.
        path: PathBuf,
        /// `key` or `certificate`.
        kind: &'static str,
        /// The alias asked for.
        alias: String,
        /// The aliases of that kind the store has.
        available: Vec<String>,
    },
    /// The vault has no store for the lookup (`keys`, `trust` or `signers` is not configured).
    #[error("no `options.{option}` store is configured")]
    NoStore {
        /// `keys`, `trust` or `signers`.
        option: &'static str,
    },
}

fn available_text(available: &[String]) -> String {
    if available.is_empty() {
        "it has none".to_owned()
    } else {
        format!("it has: {}", available.join(", "))
    }
}
