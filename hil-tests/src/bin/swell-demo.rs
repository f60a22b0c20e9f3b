//! `swell-demo`, the README's main job. The same binary is also `swell-agent`: the simulated
//! board re-executes it to boot the agent, so one `cargo run` builds everything the demo runs.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("run" | "install" | "status" | "board") => swell_agent::cli::main(),
        _ => swell_hil::demo::main(),
    }
}
