//! The end-to-end scenario of `fleet_enroll.rs` with Mosquitto instead of the embedded broker:
//! Mosquitto runs the configuration `swell-controller mosquitto-config` writes (TLS 1.3,
//! client certificates from the controller's CA, `use_identity_as_username`, the per-device
//! ACL); the controller connects with its own certificate, each agent over `mqtts://` with the
//! certificate it got when it enrolled.
//!
//! Gated: runs only with `SWELL_INTEROP=1` (then the `mosquitto` binary is required; `.ci/run`
//! installs it and runs `*interop*` tests so).

mod fleet_support;

#[test]
fn enroll_upload_install_revoke_over_mosquitto() {
    if std::env::var("SWELL_INTEROP").as_deref() != Ok("1") {
        eprintln!("skipped: set SWELL_INTEROP=1 (and install mosquitto) to run");
        return;
    }
    fleet_support::scenario(fleet_support::Broker::Mosquitto);
}
