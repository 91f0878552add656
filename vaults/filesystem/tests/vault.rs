//! The filesystem vault against stores written by `openssl` and Java `keytool`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};
use tempfile::TempDir;
use x509_parser::prelude::{FromDer, X509Certificate};
use zilla_engine::Registry;
use zilla_engine::properties::Properties;
use zilla_engine::vault::{KeyEntry, PrivateKeyFormat, Vault};
use zilla_engine::{BuildError, Engine};
use zilla_vault_filesystem::{FileSystemOptions, FileSystemVault, Revocation};

const PASSWORD: &str = "generated";

/// Runs a command in `dir`; its stdout and stderr together.
fn run(dir: &Path, program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {program}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(output.status.success(), "{program} {args:?} failed: {text}");
    Ok(text)
}

fn openssl(dir: &Path, args: &[&str]) -> Result<String> {
    run(dir, "openssl", args)
}

fn keytool(dir: &Path, args: &[&str]) -> Result<String> {
    run(dir, "keytool", args)
}

#[derive(Clone, Copy)]
enum Algorithm {
    Rsa,
    Ec,
}

impl Algorithm {
    fn newkey(self) -> &'static [&'static str] {
        match self {
            Algorithm::Rsa => &["-newkey", "rsa:2048"],
            Algorithm::Ec => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        }
    }
}

/// A self-signed CA: `<name>.key` and `<name>.pem`.
fn ca(dir: &Path, name: &str, algorithm: Algorithm) -> Result<()> {
    let (key, cert, subject) = (
        format!("{name}.key"),
        format!("{name}.pem"),
        format!("/CN={name}"),
    );
    let mut args = vec!["req", "-x509"];
    args.extend_from_slice(algorithm.newkey());
    args.extend_from_slice(&[
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &cert,
        "-subj",
        &subject,
        "-days",
        "2",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
    ]);
    openssl(dir, &args)?;
    Ok(())
}

/// A certificate for `name` issued by the CA `issuer`: `<name>.key` (PKCS#8) and `<name>.pem`.
fn leaf(dir: &Path, name: &str, issuer: &str, algorithm: Algorithm) -> Result<()> {
    let (key, csr, cert, subject) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("/CN={name}"),
    );
    let (issuer_cert, issuer_key) = (format!("{issuer}.pem"), format!("{issuer}.key"));
    let mut args = vec!["req", "-new"];
    args.extend_from_slice(algorithm.newkey());
    args.extend_from_slice(&["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subject]);
    openssl(dir, &args)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &issuer_cert,
            "-CAkey",
            &issuer_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
        ],
    )?;
    Ok(())
}

/// The DER of a PEM certificate, as `openssl x509 -outform der` writes it.
fn der(dir: &Path, pem: &str) -> Result<Vec<u8>> {
    let out = format!("{pem}.der");
    openssl(dir, &["x509", "-in", pem, "-outform", "der", "-out", &out])?;
    Ok(std::fs::read(dir.join(out))?)
}

/// Checks that the entry's leaf is `leaf_pem` and that its private key is the leaf's: openssl
/// derives the public key from the DER private key, which must equal the certificate's.
fn assert_key_matches(dir: &Path, entry: &KeyEntry, leaf_pem: &str) -> Result<()> {
    ensure!(
        entry.chain.first() == Some(&der(dir, leaf_pem)?),
        "leaf is not {leaf_pem}"
    );
    let key_file = dir.join(format!("{leaf_pem}.loaded-key.der"));
    std::fs::write(&key_file, &entry.key)?;
    let public_file = dir.join(format!("{leaf_pem}.loaded-key.pub"));
    openssl(
        dir,
        &[
            "pkey",
            "-inform",
            "DER",
            "-in",
            &key_file.display().to_string(),
            "-pubout",
            "-outform",
            "DER",
            "-out",
            &public_file.display().to_string(),
        ],
    )?;
    let public = std::fs::read(public_file)?;
    let (_, certificate) = X509Certificate::from_der(&entry.chain[0])?;
    ensure!(
        certificate.public_key().raw == public.as_slice(),
        "the private key does not belong to {leaf_pem}"
    );
    Ok(())
}

fn options(yaml_as_json: serde_json::Value) -> FileSystemOptions {
    serde_json::from_value(yaml_as_json).expect("valid options")
}

fn load(dir: &Path, options: &FileSystemOptions) -> Result<FileSystemVault, BuildError> {
    FileSystemVault::load(options, |store| dir.join(store))
}

fn export_pkcs12(dir: &Path, name: &str, extra: &[&str]) -> Result<String> {
    let (cert, key, out) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.p12"),
    );
    let pass = format!("pass:{PASSWORD}");
    let mut args = vec![
        "pkcs12", "-export", "-in", &cert, "-inkey", &key, "-name", name, "-passout", &pass,
        "-out", &out,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args)?;
    // What openssl reports about the encryption it used.
    let info = openssl(
        dir,
        &[
            "pkcs12", "-info", "-noout", "-legacy", "-in", &out, "-passin", &pass,
        ],
    )?;
    Ok(info)
}

#[test]
fn pkcs12_key_stores_modern_and_legacy() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "rootca", Algorithm::Rsa)?;

    struct Case {
        name: &'static str,
        algorithm: Algorithm,
        export: &'static [&'static str],
        expect: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "rsa-aes",
            algorithm: Algorithm::Rsa,
            export: &["-certfile", "rootca.pem"],
            expect: &["AES-256-CBC"],
        },
        Case {
            name: "ec-aes",
            algorithm: Algorithm::Ec,
            export: &["-certfile", "rootca.pem"],
            expect: &["AES-256-CBC"],
        },
        Case {
            name: "rsa-legacy",
            algorithm: Algorithm::Rsa,
            export: &["-legacy", "-certfile", "rootca.pem"],
            expect: &[
                "pbeWithSHA1And40BitRC2-CBC",
                "pbeWithSHA1And3-KeyTripleDES-CBC",
            ],
        },
        Case {
            name: "ec-legacy",
            algorithm: Algorithm::Ec,
            export: &["-legacy", "-certfile", "rootca.pem"],
            expect: &[
                "pbeWithSHA1And40BitRC2-CBC",
                "pbeWithSHA1And3-KeyTripleDES-CBC",
            ],
        },
        Case {
            name: "ec-3des",
            algorithm: Algorithm::Ec,
            export: &[
                "-certpbe",
                "PBE-SHA1-3DES",
                "-keypbe",
                "PBE-SHA1-3DES",
                "-macalg",
                "sha1",
                "-certfile",
                "rootca.pem",
            ],
            expect: &["Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC"],
        },
    ];

    let root = der(dir, "rootca.pem")?;
    for case in cases {
        leaf(dir, case.name, "rootca", case.algorithm)?;
        let info = export_pkcs12(dir, case.name, case.export)?;
        for expected in case.expect {
            ensure!(
                info.contains(expected),
                "{}: {expected} not in {info}",
                case.name
            );
        }

        let vault = load(
            dir,
            &options(serde_json::json!({
                "keys": {"store": format!("{}.p12", case.name), "type": "pkcs12", "password": PASSWORD},
            })),
        )
        .map_err(|error| anyhow::anyhow!("{}: {error:?}", case.name))?;
        let entry = vault.key(case.name).context(case.name)?;
        assert_eq!(entry.format, PrivateKeyFormat::Pkcs8, "{}", case.name);
        assert_eq!(entry.chain.len(), 2, "{}: leaf then root", case.name);
        assert_eq!(entry.chain[1], root, "{}", case.name);
        assert_key_matches(dir, &entry, &format!("{}.pem", case.name))?;
        assert_eq!(vault.key_aliases(), vec![case.name.to_owned()]);
    }
    Ok(())
}

#[test]
fn pkcs12_empty_and_absent_password() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "localhost", Algorithm::Ec)?;
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            "localhost.pem",
            "-inkey",
            "localhost.key",
            "-name",
            "localhost",
            "-passout",
            "pass:",
            "-out",
            "empty.p12",
        ],
    )?;
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-in",
            "localhost.pem",
            "-inkey",
            "localhost.key",
            "-name",
            "localhost",
            "-passout",
            "pass:",
            "-nomac",
            "-certpbe",
            "NONE",
            "-keypbe",
            "NONE",
            "-out",
            "plain.p12",
        ],
    )?;
    for store in ["empty.p12", "plain.p12"] {
        let vault = load(dir, &options(serde_json::json!({"keys": {"store": store}})))
            .map_err(|error| anyhow::anyhow!("{store}: {error:?}"))?;
        let entry = vault.key("localhost").context(store)?;
        assert_key_matches(dir, &entry, "localhost.pem")?;
    }
    Ok(())
}

#[test]
fn pkcs12_trust_store_from_openssl() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "clientca", Algorithm::Rsa)?;
    ca(dir, "otherca", Algorithm::Ec)?;
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "clientca.pem",
            "-certfile",
            "otherca.pem",
            "-caname",
            "clientca",
            "-caname",
            "otherca",
            "-passout",
            "pass:generated",
            "-out",
            "trust.p12",
        ],
    )?;
    let vault = load(
        dir,
        &options(serde_json::json!({"trust": {"store": "trust.p12", "password": PASSWORD}})),
    )?;
    let clientca = der(dir, "clientca.pem")?;
    let otherca = der(dir, "otherca.pem")?;
    assert_eq!(vault.certificate("clientca"), Some(clientca.clone()));
    assert_eq!(vault.certificate("otherca"), Some(otherca.clone()));
    assert_eq!(
        vault.certificate("ClientCA"),
        Some(clientca.clone()),
        "case-insensitive"
    );
    let mut all = vault.certificates();
    all.sort();
    let mut expected = vec![clientca.clone(), otherca];
    expected.sort();
    assert_eq!(all, expected);

    // `entries` hides the rest.
    let vault = load(
        dir,
        &options(serde_json::json!({
            "trust": {"store": "trust.p12", "password": PASSWORD, "entries": ["clientca"]},
        })),
    )?;
    assert_eq!(vault.certificates(), vec![clientca]);
    assert_eq!(vault.certificate("otherca"), None);
    Ok(())
}

#[test]
fn keytool_stores() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "clientca", Algorithm::Rsa)?;
    let common = ["-storetype", "PKCS12", "-storepass", PASSWORD];

    // A trust store as Java writes it: trusted-certificate bags with Java's usage attribute.
    let mut args = vec![
        "-importcert",
        "-noprompt",
        "-alias",
        "clientca",
        "-file",
        "clientca.pem",
        "-keystore",
        "trust.p12",
    ];
    args.extend_from_slice(&common);
    keytool(dir, &args)?;

    // Key stores, the JDK default encryption and the legacy one.
    for (store, legacy) in [("keys.p12", false), ("legacy.p12", true)] {
        let mut args = vec![];
        if legacy {
            args.push("-J-Dkeystore.pkcs12.legacy");
        }
        args.extend_from_slice(&[
            "-genkeypair",
            "-alias",
            "localhost",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=localhost",
            "-validity",
            "2",
            "-keystore",
            store,
        ]);
        args.extend_from_slice(&common);
        keytool(dir, &args)?;
        let mut args = vec![
            "-exportcert",
            "-rfc",
            "-alias",
            "localhost",
            "-keystore",
            store,
        ];
        args.extend_from_slice(&common);
        args.extend_from_slice(&["-file", "localhost.pem"]);
        keytool(dir, &args)?;

        let info = openssl(
            dir,
            &[
                "pkcs12",
                "-info",
                "-noout",
                "-legacy",
                "-in",
                store,
                "-passin",
                "pass:generated",
            ],
        )?;
        let rc2 = info.contains("pbeWithSHA1And40BitRC2-CBC");
        ensure!(rc2 == legacy, "{store}: unexpected encryption: {info}");

        let vault = load(
            dir,
            &options(serde_json::json!({
                "keys": {"store": store, "password": PASSWORD},
                "trust": {"store": "trust.p12", "password": PASSWORD},
            })),
        )
        .map_err(|error| anyhow::anyhow!("{store}: {error:?}"))?;
        let entry = vault.key("localhost").context(store)?;
        assert_eq!(entry.chain.len(), 1);
        assert_key_matches(dir, &entry, "localhost.pem")?;
        assert_eq!(
            vault.certificate("clientca"),
            Some(der(dir, "clientca.pem")?)
        );
    }
    Ok(())
}

#[test]
fn jks_stores_from_keytool() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "clientca", Algorithm::Rsa)?;
    let jks = ["-storetype", "JKS", "-storepass", PASSWORD];

    // A JKS trust store and a JKS key store holding an EC and an RSA key, the second one
    // issued by a CA whose certificate keytool puts in its chain.
    let mut args = vec![
        "-importcert",
        "-noprompt",
        "-alias",
        "clientca",
        "-file",
        "clientca.pem",
        "-keystore",
        "trust.jks",
    ];
    args.extend_from_slice(&jks);
    keytool(dir, &args)?;
    for (alias, algorithm) in [("ec", "EC"), ("rsa", "RSA")] {
        let dname = format!("CN={alias}.localhost");
        let mut args = vec![
            "-genkeypair",
            "-alias",
            alias,
            "-keyalg",
            algorithm,
            "-dname",
            &dname,
            "-validity",
            "2",
            "-keystore",
            "keys.jks",
        ];
        args.extend_from_slice(&jks);
        keytool(dir, &args)?;
    }
    let mut args = vec![
        "-certreq",
        "-alias",
        "rsa",
        "-file",
        "rsa.csr",
        "-keystore",
        "keys.jks",
    ];
    args.extend_from_slice(&jks);
    keytool(dir, &args)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "rsa.csr",
            "-CA",
            "clientca.pem",
            "-CAkey",
            "clientca.key",
            "-CAcreateserial",
            "-out",
            "rsa.pem",
            "-days",
            "2",
        ],
    )?;
    for (alias, file) in [("clientca", "clientca.pem"), ("rsa", "rsa.pem")] {
        let mut args = vec![
            "-importcert",
            "-noprompt",
            "-alias",
            alias,
            "-file",
            file,
            "-keystore",
            "keys.jks",
        ];
        args.extend_from_slice(&jks);
        keytool(dir, &args)?;
    }
    let mut args = vec![
        "-exportcert",
        "-rfc",
        "-alias",
        "ec",
        "-keystore",
        "keys.jks",
        "-file",
        "ec.pem",
    ];
    args.extend_from_slice(&jks);
    keytool(dir, &args)?;
    ensure!(
        keytool(
            dir,
            &["-list", "-keystore", "keys.jks", "-storepass", PASSWORD]
        )?
        .contains("Keystore type: JKS"),
        "keytool did not write a JKS store"
    );

    for store_type in ["jks", "pkcs12"] {
        let vault = load(
            dir,
            &options(serde_json::json!({
                "keys": {"store": "keys.jks", "type": store_type, "password": PASSWORD},
                "trust": {"store": "trust.jks", "type": store_type, "password": PASSWORD},
            })),
        )
        .map_err(|error| anyhow::anyhow!("{store_type}: {error:?}"))?;
        let ec = vault.key("ec").context("ec")?;
        assert_eq!(ec.format, PrivateKeyFormat::Pkcs8);
        assert_key_matches(dir, &ec, "ec.pem")?;
        let rsa = vault.key("RSA").context("aliases ignore case")?;
        assert_key_matches(dir, &rsa, "rsa.pem")?;
        assert_eq!(rsa.chain.len(), 2, "keytool keeps the issuer in the chain");
        assert_eq!(rsa.chain[1], der(dir, "clientca.pem")?);
        assert_eq!(
            vault.certificate("clientca"),
            Some(der(dir, "clientca.pem")?)
        );
    }

    // A PKCS#12 store read with `type: jks`, as Java's compatible key stores do.
    export_pkcs12(dir, "clientca", &[])?;
    let vault = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "clientca.p12", "type": "jks", "password": PASSWORD},
        })),
    )
    .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    assert!(vault.key("clientca").is_some());

    // The store digest catches a wrong password; without a password only certificates load.
    let error = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "keys.jks", "type": "jks", "password": "wrong"},
        })),
    )
    .expect_err("wrong password")
    .to_string();
    assert!(error.contains("wrong password for JKS store"), "{error}");
    let vault = load(
        dir,
        &options(serde_json::json!({"trust": {"store": "trust.jks", "type": "jks"}})),
    )
    .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    assert_eq!(
        vault.certificate("clientca"),
        Some(der(dir, "clientca.pem")?)
    );
    let error = load(
        dir,
        &options(serde_json::json!({"keys": {"store": "keys.jks", "type": "jks"}})),
    )
    .expect_err("keys without a password")
    .to_string();
    assert!(error.contains("needs the store `password`"), "{error}");

    // A flipped byte inside the store is caught by the digest, not read as data.
    let mut bytes = std::fs::read(dir.join("keys.jks"))?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(dir.join("altered.jks"), bytes)?;
    let error = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "altered.jks", "type": "jks", "password": PASSWORD},
        })),
    )
    .expect_err("altered")
    .to_string();
    assert!(error.contains("integrity check failed"), "{error}");
    Ok(())
}

#[test]
fn signers_pick_the_keys_they_issued() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "serverca", Algorithm::Ec)?;
    ca(dir, "otherca", Algorithm::Ec)?;
    leaf(dir, "localhost", "serverca", Algorithm::Ec)?;
    export_pkcs12(dir, "localhost", &["-certfile", "serverca.pem"])?;
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            "serverca.pem",
            "-certfile",
            "otherca.pem",
            "-caname",
            "serverca",
            "-caname",
            "otherca",
            "-passout",
            "pass:generated",
            "-out",
            "signers.p12",
        ],
    )?;
    let vault = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "localhost.p12", "password": PASSWORD},
            "signers": {"store": "signers.p12", "password": PASSWORD},
        })),
    )?;
    assert_eq!(
        vault.signer("serverca"),
        Some(vec![der(dir, "serverca.pem")?])
    );
    assert_eq!(vault.signer("missing"), None);
    let signed = vault.signed_keys("serverca")?;
    assert_eq!(signed.len(), 1);
    assert_key_matches(dir, &signed[0], "localhost.pem")?;
    assert!(vault.signed_keys("otherca")?.is_empty());
    Ok(())
}

#[test]
fn pem_directory_store() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    let pem = dir.join("pem");
    std::fs::create_dir(&pem)?;
    ca(dir, "rootca", Algorithm::Rsa)?;

    // `localhost.key` (PKCS#8) with `localhost.crt` holding leaf and root.
    leaf(dir, "localhost", "rootca", Algorithm::Ec)?;
    std::fs::copy(dir.join("localhost.key"), pem.join("localhost.key"))?;
    let chain = std::fs::read_to_string(dir.join("localhost.pem"))?
        + &std::fs::read_to_string(dir.join("rootca.pem"))?;
    std::fs::write(pem.join("localhost.crt"), chain)?;

    // `rsa.pem`: a PKCS#1 key and its certificate in one file.
    leaf(dir, "rsa", "rootca", Algorithm::Rsa)?;
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            "rsa.key",
            "-traditional",
            "-out",
            "rsa.pkcs1",
        ],
    )?;
    let rsa_pkcs1 = std::fs::read_to_string(dir.join("rsa.pkcs1"))?;
    ensure!(rsa_pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{rsa_pkcs1}");
    std::fs::write(
        pem.join("rsa.pem"),
        rsa_pkcs1 + &std::fs::read_to_string(dir.join("rsa.pem"))?,
    )?;

    // `ec.pem`: a SEC1 key after its certificate.
    leaf(dir, "ec", "rootca", Algorithm::Ec)?;
    openssl(dir, &["ec", "-in", "ec.key", "-out", "ec.sec1"])?;
    let ec_sec1 = std::fs::read_to_string(dir.join("ec.sec1"))?;
    ensure!(ec_sec1.contains("BEGIN EC PRIVATE KEY"), "{ec_sec1}");
    std::fs::write(
        pem.join("ec.pem"),
        std::fs::read_to_string(dir.join("ec.pem"))? + &ec_sec1,
    )?;

    // `rootca.cer`: a certificate without a key is a trusted certificate; `notes.txt` is skipped.
    std::fs::copy(dir.join("rootca.pem"), pem.join("rootca.cer"))?;
    std::fs::write(pem.join("notes.txt"), "not a store file")?;

    let vault = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "pem", "type": "pem"},
            "trust": {"store": "pem", "type": "pem"},
        })),
    )?;
    assert_eq!(vault.key_aliases(), vec!["ec", "localhost", "rsa"]);

    let localhost = vault.key("localhost").context("localhost")?;
    assert_eq!(localhost.format, PrivateKeyFormat::Pkcs8);
    assert_eq!(localhost.chain.len(), 2);
    assert_eq!(localhost.chain[1], der(dir, "rootca.pem")?);
    assert_key_matches(dir, &localhost, "localhost.pem")?;

    let rsa = vault.key("rsa").context("rsa")?;
    assert_eq!(rsa.format, PrivateKeyFormat::Pkcs1);
    assert_key_matches(dir, &rsa, "rsa.pem")?;

    let ec = vault.key("ec").context("ec")?;
    assert_eq!(ec.format, PrivateKeyFormat::Sec1);
    assert_key_matches(dir, &ec, "ec.pem")?;

    assert_eq!(vault.certificate_aliases(), vec!["rootca"]);
    assert_eq!(vault.certificate("rootca"), Some(der(dir, "rootca.pem")?));
    assert_eq!(vault.certificates(), vec![der(dir, "rootca.pem")?]);
    Ok(())
}

#[test]
fn pem_file_stores() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "rootca", Algorithm::Ec)?;
    ca(dir, "otherca", Algorithm::Ec)?;
    leaf(dir, "localhost", "rootca", Algorithm::Ec)?;

    // An encrypted PKCS#8 key (OpenSSL 3: PBES2, PBKDF2, AES-256-CBC) with its certificate.
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "localhost.key",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:generated",
            "-out",
            "localhost.enc",
        ],
    )?;
    std::fs::write(
        dir.join("server.pem"),
        std::fs::read_to_string(dir.join("localhost.pem"))?
            + &std::fs::read_to_string(dir.join("localhost.enc"))?,
    )?;
    // A CA bundle as one file.
    std::fs::write(
        dir.join("bundle.pem"),
        std::fs::read_to_string(dir.join("rootca.pem"))?
            + &std::fs::read_to_string(dir.join("otherca.pem"))?,
    )?;

    let vault = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "server.pem", "type": "pem", "password": PASSWORD},
            "trust": {"store": "bundle.pem", "type": "pem"},
            "signers": {"store": "bundle.pem", "type": "pem"},
        })),
    )?;
    let entry = vault.key("server").context("server")?;
    assert_eq!(entry.format, PrivateKeyFormat::Pkcs8);
    assert_key_matches(dir, &entry, "localhost.pem")?;

    let (rootca, otherca) = (der(dir, "rootca.pem")?, der(dir, "otherca.pem")?);
    assert_eq!(vault.certificate("bundle"), Some(rootca.clone()));
    assert_eq!(vault.certificates(), vec![rootca.clone(), otherca.clone()]);
    assert_eq!(vault.signer("bundle"), Some(vec![rootca, otherca]));
    assert_eq!(vault.signed_keys("bundle")?.len(), 1);

    // Without the password the encrypted key is refused, with a wrong one it does not decrypt.
    let error = load(
        dir,
        &options(serde_json::json!({"keys": {"store": "server.pem", "type": "pem"}})),
    )
    .expect_err("no password");
    assert_eq!(error.path, "options.keys.store");
    assert!(error.message.contains("no `password`"), "{}", error.message);
    let error = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "server.pem", "type": "pem", "password": "wrong"},
        })),
    )
    .expect_err("wrong password");
    assert!(
        error
            .message
            .contains("cannot decrypt the private key of `server`")
            && error.message.contains("server.pem"),
        "{}",
        error.message
    );
    Ok(())
}

#[test]
fn errors_name_the_store_and_alias() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca(dir, "localhost", Algorithm::Ec)?;
    export_pkcs12(dir, "localhost", &[])?;
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-legacy",
            "-in",
            "localhost.pem",
            "-inkey",
            "localhost.key",
            "-name",
            "localhost",
            "-passout",
            "pass:generated",
            "-out",
            "legacy.p12",
        ],
    )?;
    let store_path = |name: &str| dir.join(name).display().to_string();

    // Wrong password, modern and legacy.
    for store in ["localhost.p12", "legacy.p12"] {
        let error = load(
            dir,
            &options(serde_json::json!({"keys": {"store": store, "password": "wrong"}})),
        )
        .expect_err("wrong password");
        assert_eq!(error.path, "options.keys.store");
        assert_eq!(
            error.message,
            format!(
                "wrong password for PKCS#12 store `{}` (integrity check failed)",
                store_path(store)
            )
        );
    }

    // A missing file.
    let error = load(
        dir,
        &options(serde_json::json!({"trust": {"store": "missing.p12", "password": PASSWORD}})),
    )
    .expect_err("missing file");
    assert_eq!(error.path, "options.trust.store");
    assert!(
        error.message.starts_with(&format!(
            "cannot read store `{}`: ",
            store_path("missing.p12")
        )),
        "{}",
        error.message
    );

    // Not a PKCS#12 file.
    let error = load(
        dir,
        &options(serde_json::json!({"keys": {"store": "localhost.pem"}})),
    )
    .expect_err("PEM read as PKCS#12");
    assert!(
        error.message.starts_with(&format!(
            "store `{}` is not a valid pkcs12 store",
            store_path("localhost.pem")
        )),
        "{}",
        error.message
    );

    // A missing alias in `entries`.
    let error = load(
        dir,
        &options(serde_json::json!({
            "keys": {"store": "localhost.p12", "password": PASSWORD, "entries": ["localhost", "server"]},
        })),
    )
    .expect_err("missing entry");
    assert_eq!(error.path, "options.keys.entries[1]");
    assert_eq!(
        error.message,
        format!(
            "no key `server` in store `{}`; it has: localhost",
            store_path("localhost.p12")
        )
    );

    // A missing alias on lookup.
    let vault = load(
        dir,
        &options(serde_json::json!({"keys": {"store": "localhost.p12", "password": PASSWORD}})),
    )?;
    assert!(vault.key("server").is_none());
    assert_eq!(
        vault.find_key("server").expect_err("missing").to_string(),
        format!(
            "no key `server` in store `{}`; it has: localhost",
            store_path("localhost.p12")
        )
    );
    assert_eq!(
        vault
            .find_certificate("localhost")
            .expect_err("no trust")
            .to_string(),
        "no `options.trust` store is configured"
    );
    Ok(())
}

fn registry() -> Registry {
    let mut registry = Registry::new();
    zilla_vault_filesystem::register(&mut registry);
    registry
}

#[test]
fn engine_builds_the_vault_from_zilla_yaml() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    let stores = dir.join("stores");
    std::fs::create_dir(&stores)?;
    ca(&stores, "localhost", Algorithm::Ec)?;
    export_pkcs12(&stores, "localhost", &[])?;

    let config = |password: &str| {
        format!(
            "name: test\n\
             vaults:\n  \
               server:\n    \
                 type: filesystem\n    \
                 options:\n      \
                   keys:\n        \
                     store: stores/localhost.p12\n        \
                     type: pkcs12\n        \
                     password: {password}\n        \
                     entries:\n          \
                       - localhost\n"
        )
    };
    let file: PathBuf = dir.join("zilla.yaml");
    let engine = Engine::new(registry(), Properties::default());
    let loaded = engine
        .load(&file, &config(PASSWORD))
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;
    engine
        .apply(loaded)
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;

    let loaded = engine
        .load(&file, &config("wrong"))
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;
    let errors = engine
        .apply(loaded)
        .expect_err("wrong password")
        .to_string();
    assert!(
        errors.contains("vaults.server.options.keys.store: wrong password for PKCS#12 store")
            && errors.contains(&stores.join("localhost.p12").display().to_string()),
        "{errors}"
    );

    // Zilla's option names only; a type the vault cannot read is named in the error.
    let unknown = config(PASSWORD).replace("type: pkcs12", "type: jceks");
    let errors = engine
        .load(&file, &unknown)
        .and_then(|loaded| engine.apply(loaded))
        .expect_err("jceks")
        .to_string();
    assert!(errors.contains("jceks"), "{errors}");
    let unknown = format!("{}      secrets: {{}}\n", config(PASSWORD));
    let errors = engine
        .load(&file, &unknown)
        .and_then(|loaded| engine.apply(loaded))
        .expect_err("secrets")
        .to_string();
    assert!(errors.contains("secrets"), "{errors}");
    Ok(())
}

/// `ca.cnf` for `openssl ca`: issues certificates signed by `<dir>/ca.pem` and writes CRLs.
const CA_CONFIG: &str = "[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = index.txt\n\
    new_certs_dir = .\ncertificate = ca.pem\nprivate_key = ca.key\nserial = serial\n\
    crlnumber = crlnumber\ndefault_md = sha256\ndefault_days = 2\ndefault_crl_days = 2\n\
    policy = any_name\n[any_name]\ncommonName = supplied\n";

/// A CA `ca` and its (empty) revocation list `ca.crl.pem`, made with `openssl ca -gencrl`.
fn ca_with_crl(dir: &Path) -> Result<()> {
    ca(dir, "ca", Algorithm::Ec)?;
    std::fs::write(dir.join("ca.cnf"), CA_CONFIG)?;
    std::fs::write(dir.join("index.txt"), "")?;
    std::fs::write(dir.join("serial"), "01\n")?;
    std::fs::write(dir.join("crlnumber"), "01\n")?;
    openssl(
        dir,
        &["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl.pem"],
    )?;
    Ok(())
}

#[test]
fn revocation_lists_come_from_the_pem_trust_store() -> Result<()> {
    let dir = TempDir::new()?;
    let dir = dir.path();
    ca_with_crl(dir)?;
    let trust = dir.join("trust");
    std::fs::create_dir(&trust)?;
    std::fs::copy(dir.join("ca.pem"), trust.join("ca.pem"))?;
    // One list as a PEM `.crl` file, the same as DER, and one as a section of a PEM bundle.
    std::fs::copy(dir.join("ca.crl.pem"), trust.join("pem.crl"))?;
    openssl(
        dir,
        &[
            "crl",
            "-in",
            "ca.crl.pem",
            "-outform",
            "DER",
            "-out",
            "trust/der.crl",
        ],
    )?;
    let mut bundle = std::fs::read(dir.join("ca.pem"))?;
    bundle.extend(std::fs::read(dir.join("ca.crl.pem"))?);
    std::fs::write(trust.join("bundle.pem"), bundle)?;

    let checked = load(
        dir,
        &options(serde_json::json!({
            "trust": {"store": "trust", "type": "pem"},
            "revocation": "crl",
        })),
    )?;
    assert_eq!(checked.revocation(), Some(Revocation::Crl));
    let lists = Vault::revocation_lists(&checked).expect("revocation is checked");
    assert_eq!(lists.len(), 3);
    assert!(
        lists.iter().all(|list| list == &lists[0]),
        "the same list three ways"
    );
    // The lists are not trusted certificates, and a bundle keeps its certificate.
    assert_eq!(checked.certificate_aliases(), vec!["bundle", "ca"]);

    // The same store without `revocation`: nothing is checked.
    let unchecked = load(
        dir,
        &options(serde_json::json!({"trust": {"store": "trust", "type": "pem"}})),
    )?;
    assert!(Vault::revocation_lists(&unchecked).is_none());

    // `revocation: crl` with no list to check against is refused, not ignored.
    std::fs::create_dir(dir.join("bare"))?;
    std::fs::copy(dir.join("ca.pem"), dir.join("bare/ca.pem"))?;
    for trust in [
        serde_json::json!({"revocation": "crl"}),
        serde_json::json!({"trust": {"store": "bare", "type": "pem"}, "revocation": "crl"}),
    ] {
        let error = load(dir, &options(trust)).expect_err("no revocation lists");
        assert_eq!(error.path, "options.revocation");
        assert!(error.message.contains("revocation lists"), "{error}");
    }

    // A `.crl` file that is not a revocation list names the file.
    std::fs::write(trust.join("broken.crl"), b"not a list")?;
    let error = load(
        dir,
        &options(serde_json::json!({"trust": {"store": "trust", "type": "pem"}})),
    )
    .expect_err("broken list");
    assert!(error.message.contains("broken.crl"), "{error}");
    Ok(())
}
