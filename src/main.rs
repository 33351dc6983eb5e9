//! The `slate` binary: parse arguments, call the library, print errors once.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = slate::cli::Cli::parse_from(slate::cli::effective_args());
    report(slate::cli::run(cli))
}

/// Prints an error chain on one line and picks the exit code.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Output piped into `head` and closed early is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
