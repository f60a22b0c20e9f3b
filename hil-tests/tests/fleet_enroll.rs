//! End to end on one machine, embedded broker: the real controller (in-process, ephemeral
//! ports) and three real agents, each the `swell-agent` binary (`swell-demo` is multi-call) on
//! a simulated board. The agents enroll on first start with tokens (one into the canary
//! cohort), a release is uploaded with swellctl's library, each device is commanded to
//! install it, the inventory shows every device committed on the new version, and once a
//! device is revoked the controller refuses its reports and commands to it.

mod fleet_support;

#[test]
fn enroll_upload_install_revoke() {
    fleet_support::scenario(fleet_support::Broker::Embedded);
}
