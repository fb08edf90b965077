//! The `quorate` binary: parse the command line, run, map errors to exit codes.

use std::io::Write;

use clap::Parser;
use quorate::cli::{Cli, run_offline};

fn main() {
    let cli = Cli::parse();
    match run_offline(&cli.command, jiff::Timestamp::now()) {
        Ok(out) => {
            // A closed pipe (`quorate crd | head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(out.as_bytes());
        }
        Err(e) => {
            eprintln!("quorate: {e}");
            std::process::exit(1);
        }
    }
}
