//! `cargo xtask test`: the whole suite as CI runs it. Peers and the build must succeed; then the
//! tests, clippy, rustfmt and the short soak (two replicas under load and faults, checked for
//! loss) all run, and any failure among them fails the command.

use anyhow::{Result, bail};

use crate::shell::{cargo, run};

/// Runs everything; `cargo_test_args` are appended to `cargo test --workspace` (without
/// `--workspace` when they name packages).
pub fn run_all(cargo_test_args: &[String]) -> Result<()> {
    crate::peers::install(&[])?;
    run(cargo().args(["build", "-p", "zilla", "--bin", "zilla"]))?;
    // The end-to-end tests use the binary just built instead of each building it again.
    let binary = zilla_tests::build_zilla(false, false)?;

    let mut failed = Vec::new();
    let mut test = cargo();
    test.arg("test");
    if !names_packages(cargo_test_args) {
        test.arg("--workspace");
    }
    test.arg("--no-fail-fast")
        .args(cargo_test_args)
        .env("ZILLA_BIN", &binary);
    let checks = [
        ("tests", test),
        (
            "clippy",
            cargo_with([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        ("rustfmt", cargo_with(["fmt", "--all", "--", "--check"])),
    ];
    for (name, mut command) in checks {
        if let Err(error) = run(&mut command) {
            eprintln!("{name} failed: {error:#}");
            failed.push(name);
        }
    }
    // After the tests, so its load does not slow them down (about 3 minutes).
    if let Err(error) = crate::bench::soak::run_short(&binary) {
        eprintln!("soak failed: {error:#}");
        failed.push("soak");
    }
    if failed.is_empty() {
        println!("all passed: tests, clippy, rustfmt, soak");
        Ok(())
    } else {
        bail!("failed: {}", failed.join(", "))
    }
}

fn cargo_with<const N: usize>(args: [&str; N]) -> std::process::Command {
    let mut command = cargo();
    command.args(args);
    command
}

/// Whether `cargo test` arguments choose packages (`-p`), which `--workspace` would override.
fn names_packages(cargo_test_args: &[String]) -> bool {
    cargo_test_args
        .iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "-p" || arg == "--package" || arg.starts_with("--package="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_named_before_the_separator_narrow_the_run() {
        let args = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert!(names_packages(&args(&["-p", "zilla-tests"])));
        assert!(names_packages(&args(&[
            "--package=zilla-engine",
            "--",
            "x"
        ])));
        assert!(!names_packages(&args(&["--", "-p"])));
        assert!(!names_packages(&args(&[])));
    }
}
