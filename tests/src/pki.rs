//! Certificates for tests, made by `openssl` in a directory: `<name>.pem` and `<name>.key`
//! (EC P-256, valid two days).

use std::path::Path;

use anyhow::{Result, ensure};

use crate::Peer;

/// Runs `openssl` with `args` in `dir`, failing with its complaint.
pub fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Peer::new("openssl").args(args).current_dir(dir).run()?;
    ensure!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// A certificate `<name>.pem` with its key `<name>.key`: issued by `<ca>.pem` when `ca` is
/// given, else self-signed (a CA); `extensions` are `-addext` values.
pub fn certificate(
    dir: &Path,
    name: &str,
    subject: &str,
    ca: Option<&str>,
    extensions: &[&str],
) -> Result<()> {
    let (key, certificate) = (format!("{name}.key"), format!("{name}.pem"));
    let issuer = ca.map(|ca| (format!("{ca}.pem"), format!("{ca}.key")));
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    args.extend([
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &certificate,
        "-days",
        "2",
        "-subj",
        subject,
    ]);
    if let Some((ca_certificate, ca_key)) = &issuer {
        args.extend(["-CA", ca_certificate, "-CAkey", ca_key]);
    }
    for extension in extensions {
        args.extend(["-addext", extension]);
    }
    openssl(dir, &args)
}

/// A server certificate for `host` (a DNS name or an IP address), issued by `ca`.
pub fn server_certificate(dir: &Path, name: &str, ca: &str, host: &str) -> Result<()> {
    let san = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("subjectAltName=IP:{host}")
    } else {
        format!("subjectAltName=DNS:{host}")
    };
    certificate(
        dir,
        name,
        &format!("/CN={host}"),
        Some(ca),
        &[
            &san,
            "basicConstraints=CA:FALSE",
            "extendedKeyUsage=serverAuth",
        ],
    )
}

/// A client certificate issued by `ca`, with one subject alternative name.
pub fn client_certificate(
    dir: &Path,
    name: &str,
    ca: &str,
    subject: &str,
    san: &str,
) -> Result<()> {
    let san = format!("subjectAltName={san}");
    certificate(
        dir,
        name,
        subject,
        Some(ca),
        &[
            &san,
            "basicConstraints=CA:FALSE",
            "extendedKeyUsage=clientAuth",
        ],
    )
}

/// `<name>.pem` and its key `<name>.key` in a PKCS#12 store `<name>.p12` under the alias
/// `name`, protected by `password` (with `legacy`, the RC2/3DES encryption of older Java
/// stores); the store's bytes.
pub fn pkcs12(dir: &Path, name: &str, password: &str, legacy: bool) -> Result<Vec<u8>> {
    let (certificate, key, store) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.p12"),
    );
    let pass = format!("pass:{password}");
    let mut export = vec![
        "pkcs12",
        "-export",
        "-in",
        &certificate,
        "-inkey",
        &key,
        "-name",
        name,
        "-out",
        &store,
        "-passout",
        &pass,
    ];
    if legacy {
        export.push("-legacy");
    }
    openssl(dir, &export)?;
    Ok(std::fs::read(dir.join(&store))?)
}
