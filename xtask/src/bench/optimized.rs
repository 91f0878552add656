//! Scenarios whose load generator runs inside the xtask need it optimised: an unoptimised
//! build parses events or encodes Kafka batches many times slower and would become the
//! bottleneck. `cargo xtask` builds the xtask without optimisation, so such a scenario builds
//! it again with `--release` and runs the same command line with that binary.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::shell::{cargo, display, run as run_command};

/// In an unoptimised build: builds `target/release/xtask`, runs it with this process's
/// arguments, and returns true once it has succeeded. In an optimised build: false, and the
/// caller goes on.
pub fn rerun_optimized() -> Result<bool> {
    if !cfg!(debug_assertions) {
        return Ok(false);
    }
    run_command(cargo().args(["build", "--release", "-p", "xtask"]))?;
    let optimised = release_executable()?;
    let mut command = std::process::Command::new(&optimised);
    command.args(std::env::args_os().skip(1));
    println!("$ {}", display(&command));
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", optimised.display()))?;
    if !status.success() {
        bail!("the optimised run failed: {status}");
    }
    Ok(true)
}

/// `<target>/release/xtask` next to this `<target>/debug/xtask`.
fn release_executable() -> Result<PathBuf> {
    let current = std::env::current_exe().context("cannot find the running xtask")?;
    let target = current
        .parent()
        .and_then(|profile| profile.parent())
        .with_context(|| format!("{} is not in a target directory", current.display()))?;
    let optimised = target
        .join("release")
        .join(current.file_name().unwrap_or_default());
    if !optimised.is_file() {
        bail!("no optimised xtask at {}", optimised.display());
    }
    Ok(optimised)
}
