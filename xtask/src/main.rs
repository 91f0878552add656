//! Project automation, run as `cargo xtask <command>`:
//!
//! - `peers`: installs the third-party programs the tests and benchmarks talk to;
//! - `test`: installs peers, builds the gateway, runs every test, clippy and rustfmt;
//! - `demo`: starts the gateway on the examples with their peers and says what to try;
//! - `bench <scenario>`: runs one benchmark and records it in `docs/benchmarks.md`;
//! - `soak`: two replicas behind haproxy under load and faults, checked for loss (S10).

// A command-line tool: what it prints is its output.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod cycles;
mod demo;
mod peers;
mod shell;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "zilla-rs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the test peers (apt packages, a Python virtualenv, tansu, websocat), skipping
    /// what is already installed.
    Peers {
        /// Only these groups (repeat or separate with commas).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<peers::Group>,
    },
    /// Install peers, build `zilla`, run `cargo test --workspace`, clippy and rustfmt.
    Test {
        /// Extra arguments for `cargo test`, passed on verbatim (e.g. `-p zilla-tests -- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_test_args: Vec<String>,
    },
    /// Start the gateway on the examples and print what to try; Ctrl-C stops it.
    Demo,
    /// Check that no crate has a module cycle (also a test of this crate).
    Cycles,
    /// Run a benchmark scenario and record its figures in docs/benchmarks.md.
    Bench {
        #[arg(value_enum)]
        scenario: bench::Scenario,
        #[command(flatten)]
        options: bench::Options,
    },
    /// S10: two gateway replicas behind haproxy on one broker, SSE subscribers and producers,
    /// a fault schedule; fails when an acknowledged value or a delivery is lost or repeated.
    Soak {
        #[command(flatten)]
        options: bench::soak::Options,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Peers { only } => peers::install(&only),
        Command::Test { .. } => test::run_all(&passed_through(std::env::args())),
        Command::Demo => demo::run(),
        Command::Cycles => cycles::check(&zilla_tests::workspace_dir()),
        Command::Bench { scenario, options } => bench::run(scenario, &options),
        Command::Soak { options } => bench::soak::run(&options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// What follows `test` on the command line, verbatim: clap would drop the first `--`, which
/// `cargo test` needs to tell its own options from the test harness's.
fn passed_through(argv: impl IntoIterator<Item = String>) -> Vec<String> {
    argv.into_iter()
        .skip_while(|arg| arg != "test")
        .skip(1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        ["target/debug/xtask", "test"]
            .iter()
            .chain(args)
            .map(|arg| arg.to_string())
            .collect()
    }

    #[test]
    fn test_arguments_reach_cargo_test_verbatim() {
        for args in [
            &[][..],
            &["-p", "zilla-tests"],
            &["--", "--nocapture"],
            &["-p", "zilla-tests", "--", "--nocapture", "reload"],
        ] {
            assert!(Cli::try_parse_from(argv(args)).is_ok(), "{args:?}");
            assert_eq!(passed_through(argv(args)), args, "{args:?}");
        }
    }
}
