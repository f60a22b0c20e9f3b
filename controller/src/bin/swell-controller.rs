//! `swell-controller`, the Swell controller service; everything is in
//! `swell_controller::service_cli`.

fn main() -> std::process::ExitCode {
    swell_controller::service_cli::main()
}
