//! `swell-demo`, the README's main job. The same binary is also `swell-agent` (`run`,
//! `install`, `status`, `board`: the simulated board re-executes it to boot the agent) and
//! `swell-controller` (`serve`, ...: the harness runs the controller as a process it can kill),
//! so one `cargo run` builds everything the demo runs.

fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("run" | "install" | "status" | "board") => swell_agent::cli::main(),
        Some("serve" | "token" | "check-config" | "mosquitto-config") => {
            swell_controller::service_cli::main()
        }
        _ => swell_hil::demo::main(),
    }
}
