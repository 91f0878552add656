//! `revocation: crl` through the real binary: a CA made with `openssl ca` issues two client
//! certificates and revokes one; the gateway's tls server with `mutual: required` refuses the
//! revoked one and serves the other. The peer is `openssl s_client`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use zilla_tests::pki::{self, openssl};
use zilla_tests::{Gateway, Peer};

const CONFIG: &str = "name: test
vaults:
  server:
    type: filesystem
    options:
      keys:
        store: keys
        type: pem
      trust:
        store: trust
        type: pem
      revocation: crl
bindings:
  tcp_server:
    type: tcp
    kind: server
    options:
      host: 127.0.0.1
      port: 0
    exit: tls_server
  tls_server:
    type: tls
    kind: server
    vault: server
    options:
      keys:
        - localhost
      trust:
        - ca
      mutual: required
    exit: echo_server
  echo_server:
    type: echo
    kind: server
";

const CA_CONFIG: &str = "[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
certificate = ca.pem
private_key = ca.key
serial = serial
crlnumber = crlnumber
default_md = sha256
default_days = 2
default_crl_days = 2
policy = any_name
x509_extensions = client
[any_name]
commonName = supplied
[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth
";

const EC: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// A CA, a server key, a client certificate `good`, a revoked client certificate `revoked`,
/// and the CA's revocation list (DER, as `trust/ca.crl`).
fn make_pki(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("ca.cnf"), CA_CONFIG)?;
    std::fs::write(dir.join("index.txt"), "")?;
    std::fs::write(dir.join("serial"), "01\n")?;
    std::fs::write(dir.join("crlnumber"), "01\n")?;
    std::fs::create_dir_all(dir.join("keys"))?;
    std::fs::create_dir_all(dir.join("trust"))?;
    pki::certificate(dir, "ca", "/CN=test-ca", None, &[])?;
    std::fs::copy(dir.join("ca.pem"), dir.join("trust/ca.pem"))?;
    pki::certificate(
        dir,
        "server",
        "/CN=localhost",
        None,
        &["subjectAltName=DNS:localhost"],
    )?;
    let mut pem = std::fs::read(dir.join("server.key"))?;
    pem.extend(std::fs::read(dir.join("server.pem"))?);
    std::fs::write(dir.join("keys/localhost.pem"), pem)?;
    for client in ["good", "revoked"] {
        let mut request = vec!["req"];
        request.extend(EC);
        let (key, csr, subject) = (
            format!("{client}.key"),
            format!("{client}.csr"),
            format!("/CN={client}"),
        );
        request.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subject]);
        openssl(dir, &request)?;
        let certificate = format!("{client}.pem");
        openssl(
            dir,
            &[
                "ca",
                "-batch",
                "-notext",
                "-config",
                "ca.cnf",
                "-in",
                &csr,
                "-out",
                &certificate,
            ],
        )?;
    }
    openssl(dir, &["ca", "-config", "ca.cnf", "-revoke", "revoked.pem"])?;
    openssl(
        dir,
        &["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl.pem"],
    )?;
    openssl(
        dir,
        &[
            "crl",
            "-in",
            "ca.crl.pem",
            "-outform",
            "DER",
            "-out",
            "trust/ca.crl",
        ],
    )?;
    Ok(())
}

/// What `openssl s_client` presenting `client`'s certificate gets back after sending a line.
fn exchange(dir: &Path, address: &str, client: &str) -> Result<(String, String)> {
    let (certificate, key) = (format!("{client}.pem"), format!("{client}.key"));
    let output = Peer::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-no_ign_eof",
            "-connect",
            address,
            "-servername",
            "localhost",
            "-cert",
            &certificate,
            "-key",
            &key,
        ])
        .current_dir(dir)
        .stdin("ping\n")
        .hold_stdin(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .run()?;
    Ok((
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn a_revoked_client_certificate_is_refused_and_a_valid_one_served() -> Result<()> {
    let pki = tempfile::tempdir()?;
    make_pki(pki.path())?;
    let mut builder = Gateway::builder(CONFIG);
    for file in ["keys/localhost.pem", "trust/ca.pem", "trust/ca.crl"] {
        builder = builder.file(file, std::fs::read(pki.path().join(file))?);
    }
    let mut gateway = builder.start()?;
    let address = gateway.address("tcp_server").to_string();

    let (stdout, stderr) = exchange(pki.path(), &address, "good")?;
    ensure!(stdout.contains("ping"), "good: {stdout}\n{stderr}");

    let (stdout, stderr) = exchange(pki.path(), &address, "revoked")?;
    ensure!(!stdout.contains("ping"), "revoked was served: {stdout}");
    ensure!(
        stderr.contains("certificate revoked"),
        "revoked: no revocation alert:\n{stderr}"
    );

    assert!(gateway.terminate()?.success());
    Ok(())
}

#[test]
fn revocation_without_revocation_lists_is_refused_at_start() -> Result<()> {
    let error = match Gateway::start(
        "name: test
vaults:
  server:
    type: filesystem
    options:
      revocation: crl
",
    ) {
        Ok(_) => anyhow::bail!("started with `revocation: crl` and no revocation lists"),
        Err(error) => format!("{error:#}"),
    };
    ensure!(
        error.contains("vaults.server.options.revocation") && error.contains("revocation lists"),
        "{error}"
    );
    Ok(())
}
