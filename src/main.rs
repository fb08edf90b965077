//! The `quorate` binary: parse the command line, run, map errors to exit codes.

use std::io::Write;

use clap::Parser;
use quorate::cli::{Cli, run_offline};

fn main() {
    let cli = Cli::parse();
    if quorate::cli::is_online(&cli.command) {
        let runtime = match tokio::runtime::Runtime::new() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("quorate: cannot start the async runtime: {e}");
                std::process::exit(1);
            }
        };
        match runtime.block_on(quorate::cli::run_online(&cli.command, &cli.cluster)) {
            Ok(out) => {
                let _ = std::io::stdout().write_all(out.as_bytes());
            }
            Err(e) => {
                eprintln!("quorate: {e}");
                std::process::exit(e.code);
            }
        }
        return;
    }
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
