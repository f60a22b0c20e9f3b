//! `swell-agent`: see the crate documentation.

fn main() -> std::process::ExitCode {
    swell_agent::cli::main()
}
