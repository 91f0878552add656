//! Finding the `zilla` binary under test: `ZILLA_BIN` when set, otherwise built once per test
//! process with `cargo build -p zilla --bin zilla`, wherever cargo puts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The workspace root (the directory holding the workspace `Cargo.toml`).
pub fn workspace_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The `zilla` binary to test. `ZILLA_BIN` names a prebuilt one (e.g. a release build);
/// otherwise the first call runs `cargo build -p zilla --bin zilla` (honouring
/// `CARGO_TARGET_DIR` and cargo config, since the path comes from cargo's own report) and
/// later calls reuse the result.
pub fn zilla_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A command running the `zilla` binary, e.g. `zilla(["version"])?.output()`.
pub fn zilla<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(zilla_binary()?);
    command.args(args);
    Ok(command)
}

fn locate() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("ZILLA_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("ZILLA_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    build_zilla(false, false)
}

/// Runs `cargo build -p zilla --bin zilla` (with `--release` when asked) and returns the path of
/// the executable, as cargo reports it. With `progress`, cargo's progress and diagnostics go to
/// stderr as usual; otherwise they are captured and shown only when the build fails.
pub fn build_zilla(release: bool, progress: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut command = Command::new(&cargo);
    command.args([
        "build",
        "-p",
        "zilla",
        "--bin",
        "zilla",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        command.arg("--release");
    }
    let output = command
        .current_dir(workspace_dir())
        .stdin(Stdio::null())
        .stderr(if progress {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .output()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        bail!(
            "`cargo build -p zilla --bin zilla` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    executable_from_messages(&String::from_utf8_lossy(&output.stdout))
        .context("cargo built no `zilla` executable")
}

/// The `zilla` executable among cargo's JSON build messages.
fn executable_from_messages(messages: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .filter(|message| message["target"]["name"] == "zilla")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_comes_from_the_zilla_artifact() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"name":"zilla_engine"},"executable":null}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"zilla"},"executable":null}"#,
            r#"{"reason":"compiler-artifact","target":{"name":"zilla"},"executable":"/t/debug/zilla"}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            executable_from_messages(&messages),
            Some(PathBuf::from("/t/debug/zilla"))
        );
        assert_eq!(executable_from_messages("not json\n"), None);
    }

    #[test]
    fn the_workspace_holds_the_engine() {
        assert!(workspace_dir().join("engine").join("Cargo.toml").is_file());
    }
}
