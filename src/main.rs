//! The `slate` binary: parse arguments, call the library, print errors once.

fn main() -> std::process::ExitCode {
    slate::cli::main()
}
