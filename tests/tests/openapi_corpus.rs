//! The `openapi` binding on a corpus of public OpenAPI documents: the 3.0 and 3.1 examples
//! (JSON and YAML, 115 documents) of the npm package `@readme/oas-examples` 8.2.2, installed
//! under `.peers/node/corpus/oas-examples` by `cargo xtask peers --only npm`.
//!
//! Every document is read with the binding's own parser (`document::parse`) under
//! `catch_unwind`: a panic fails the test naming the document, and a refusal must be located
//! (`<document>:<line>:<column>: ...`, line from 1). Each document the parser accepts is then
//! loaded by the real binary, `zilla validate` on a config in the shape of
//! `examples/openapi.proxy` (an openapi server in front of an openapi client, the document
//! in a filesystem catalog; a jwt guard with an inline key checks the document's security
//! schemes, if any), which generates both pipelines and builds them without binding a port
//! or calling the network. It must succeed, or refuse with a message located in the config
//! and then in the document (`zilla.yaml:<line>:<column>: ... specs/spec:<line>:<column>:
//! ...`); a panic fails the test. At least a stated number of documents must load. The
//! summary printed (`--nocapture`) groups the refusals by reason, with one message each:
//! what the binding does not support (callbacks, cookie parameters, array parameters,
//! non-JSON bodies with schemas, other schema dialects, ...) or what the document gets wrong.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use zilla_binding_openapi::document::parse;
use zilla_tests::{Peer, peers_dir};

/// Documents of the corpus `zilla validate` must load: 62 of the 115 of
/// `@readme/oas-examples` 8.2.2 did when this was written. A floor, not the count, so
/// supporting more does not fail the test.
const LOADED_AT_LEAST: usize = 62;

/// The corpus's documents (`.json`, `.yaml`, `.yml` at any depth), sorted.
fn documents(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "json" || ext == "yaml" || ext == "yml")
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `message` starts with `<label>:<line>:<column>: ` with a line from 1.
fn located(message: &str, label: &str) -> bool {
    let Some(rest) = message
        .strip_prefix(label)
        .and_then(|rest| rest.strip_prefix(':'))
    else {
        return false;
    };
    let mut parts = rest.splitn(3, ':');
    let line = parts.next().and_then(|line| line.parse::<u32>().ok());
    let column = parts.next().and_then(|column| column.parse::<u32>().ok());
    line.is_some_and(|line| line >= 1) && column.is_some() && parts.next().is_some()
}

/// A refusal without what names one document's parts (backquoted names, the path of keys
/// before the message), so refusals for one reason group together.
fn reason(message: &str) -> String {
    let last = message.rsplit(": ").next().unwrap_or(message);
    let mut reason = String::new();
    for (index, part) in last.split('`').enumerate() {
        reason.push_str(if index % 2 == 1 { "`…`" } else { part });
    }
    reason
}

/// The RSA public key of `guards/jwt/tests/keys/jwks.json`: the guard needs a key to build,
/// and an inline one needs no network.
const JWK_N: &str = "vhJj7rDxK-Yp68a4iD-Im8sxTVkvihOmgfIRrMlQnj9MBM9Et1FKEOKR-NP5i6L8tkDOPGLjseIrU6x6FQ-CdTCio8dF1KhN6p3x6YxwTRtKG9MOo9izEkLF6u-rV2z_A-_nfu7m8xqzavqoIP5lT9zyfSJKrAL2a35LPjDGF_V33iU1u4ZfTCPQO9hfYCkphHAnbOUW1dcQW2Ivf1YXczwLeEPhWa2BMlzkeWrqJ3FXClyTc9pDXDU-XUszOEvGwqXPIc-X7YaU8iI8ij-4fkcb_hXm1geJueg6WzyOcuLkYPapgoccbt1AfPcBhzHwFnwlpZy0LZIQG9SDnMFQSw";

/// The example's config, with the document as subject `spec` of its filesystem catalog.
/// When the document has security schemes, a jwt guard checks them all on the server (the
/// binding refuses operations whose schemes no guard checks), so their generation runs too.
fn config(file: &str, schemes: &[&String]) -> String {
    let (guards, authorization, security) = if schemes.is_empty() {
        (String::new(), String::new(), String::new())
    } else {
        let bound: Vec<String> = schemes
            .iter()
            .map(|scheme| format!("{}: jwt0", serde_json::Value::from(scheme.as_str())))
            .collect();
        (
            format!(
                "guards:\n  jwt0:\n    type: jwt\n    options:\n      issuer: https://auth.example.com\n      \
                 audience: https://api.example.com\n      keys:\n        - {{kty: RSA, kid: rsa1, \
                 alg: RS256, e: AQAB, n: {JWK_N}}}\n"
            ),
            "      http:\n        authorization:\n          jwt0:\n            credentials:\n              \
             headers:\n                authorization: Bearer {credentials}\n"
                .to_owned(),
            format!("          security: {{{}}}\n", bound.join(", ")),
        )
    };
    format!(
        r#"name: corpus
{guards}catalogs:
  specs:
    type: filesystem
    options:
      subjects:
        spec:
          path: {file}
bindings:
  north_openapi_server:
    type: openapi
    kind: server
    options:
{authorization}      specs:
        spec:
          servers:
            - http://localhost:7114
{security}          catalog:
            specs:
              subject: spec
              version: latest
    exit: south_openapi_client
  south_openapi_client:
    type: openapi
    kind: client
    options:
      specs:
        spec:
          servers:
            - http://localhost:4010
          catalog:
            specs:
              subject: spec
              version: latest
"#
    )
}

#[test]
fn public_openapi_documents_load_or_are_refused_at_their_line() -> Result<()> {
    let corpus = peers_dir().join("node/corpus/oas-examples");
    ensure!(
        corpus.exists(),
        "{} is missing: run `cargo xtask peers --only npm`",
        corpus.display()
    );
    let documents = documents(&corpus)?;
    for version in ["3.0/", "3.1/"] {
        for format in ["json", "yaml"] {
            ensure!(
                documents.iter().any(|path| path
                    .strip_prefix(&corpus)
                    .is_ok_and(|relative| relative.starts_with(format!("{version}{format}")))),
                "no {version}{format} documents in {}",
                corpus.display()
            );
        }
    }
    let binary = zilla_tests::zilla_binary()?;
    let dir = tempfile::tempdir()?;
    let mut parsed = 0;
    let mut loaded = Vec::new();
    // Reason → the documents refused for it, with their messages.
    let mut refused: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for path in &documents {
        let label = path.strip_prefix(&corpus)?.to_string_lossy().into_owned();
        let text = std::fs::read_to_string(path)?;
        let outcome = catch_unwind(AssertUnwindSafe(|| parse(&label, &text)));
        let Ok(outcome) = outcome else {
            bail!("{label}: the parser panicked");
        };
        let document = match outcome {
            Ok(document) => document,
            Err(message) => {
                ensure!(
                    located(&message, &label),
                    "{label}: unlocated refusal {message}"
                );
                refused
                    .entry(format!("parse: {}", reason(&message)))
                    .or_default()
                    .push((label, message));
                continue;
            }
        };
        parsed += 1;
        let schemes: Vec<&String> = document.security_schemes.keys().collect();

        let extension = path.extension().context("extension")?.to_string_lossy();
        let file = format!("spec.{extension}");
        std::fs::write(dir.path().join(&file), &text)?;
        std::fs::write(dir.path().join("zilla.yaml"), config(&file, &schemes))?;
        let output = Peer::new(&binary)
            .args(["validate", "-c", "zilla.yaml"])
            .current_dir(dir.path())
            .run()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            !stderr.contains("panicked"),
            "{label}: zilla validate panicked: {stderr}"
        );
        if output.status.success() {
            loaded.push(label);
            continue;
        }
        let message = stderr
            .lines()
            .find(|line| line.starts_with("zilla.yaml:"))
            .with_context(|| format!("{label}: zilla validate failed, unlocated: {stderr}"))?;
        // The config is fixed and valid, so a refusal is the document's: it must say where
        // in the config and, after it, where in the document.
        let in_document = message
            .find("specs/spec:")
            .is_some_and(|at| located(&message[at..], "specs/spec"));
        ensure!(
            located(message, "zilla.yaml") && in_document,
            "{label}: unlocated refusal {message}"
        );
        refused
            .entry(format!("load: {}", reason(message)))
            .or_default()
            .push((label, message.to_owned()));
    }

    println!(
        "{} documents: {parsed} parsed, {} loaded, {} refused",
        documents.len(),
        loaded.len(),
        documents.len() - loaded.len()
    );
    for (reason, refusals) in &refused {
        let labels: Vec<&str> = refusals.iter().map(|(label, _)| label.as_str()).collect();
        println!("  {} {reason}: {}", refusals.len(), labels.join(", "));
        if let Some((_, message)) = refusals.first() {
            println!("    e.g. {message}");
        }
    }
    ensure!(
        loaded.len() >= LOADED_AT_LEAST,
        "only {} of {} documents load, expected at least {LOADED_AT_LEAST}",
        loaded.len(),
        documents.len()
    );
    Ok(())
}

#[test]
fn a_located_message_names_the_document_line_and_column() {
    assert!(located("a/b.yaml:3:7: paths: bad", "a/b.yaml"));
    assert!(!located("a/b.yaml:0:7: paths: bad", "a/b.yaml"));
    assert!(!located("a/b.yaml: paths: bad", "a/b.yaml"));
    assert!(!located("c.yaml:3:7: paths: bad", "a/b.yaml"));
    assert_eq!(
        reason("x:1:2: paths./a.get: parameters in `cookie` are not supported yet"),
        "parameters in `…` are not supported yet"
    );
}
