//! Shared test rig: keys, images, a small flash layout, a loopback link running the real
//! device session, and the update scenarios the power-cut tests interrupt.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test rig: a failure here is a failed test"
)]

pub mod link;
pub mod world;

use ed25519_dalek::SigningKey;
use swell_firmware::image::{Manifest, Name, Version};
use swell_firmware::sim::{SimFlash, SimRng};
use swell_firmware::{Layout, Region, TrustAnchor};

/// 4 KiB sectors of 4-byte write units (nRF52-like).
pub type Flash = SimFlash<4, 4096>;
pub const PAGE: u32 = 4096;
pub const HARDWARE: &str = "sensor-v2";

/// Release keys 1 and 2 (threshold 2 in the anchor), and a stranger's key 9.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

pub fn anchor() -> TrustAnchor {
    TrustAnchor::new(
        1,
        2,
        &[
            key(1).verifying_key().to_bytes(),
            key(2).verifying_key().to_bytes(),
        ],
    )
    .unwrap()
}

/// The anchor, for as long as the test process lives (a `Config` borrows it).
pub fn anchor_static() -> &'static TrustAnchor {
    static ANCHOR: std::sync::OnceLock<TrustAnchor> = std::sync::OnceLock::new();
    ANCHOR.get_or_init(anchor)
}

pub fn hardware() -> Name {
    Name::new(HARDWARE).unwrap()
}

/// The sweep's geometry: ACTIVE 5 pages (20 KiB), DFU 6, STATE 2 × 1 page: 13 sectors.
pub fn small() -> (Flash, Layout) {
    let flash = Flash::new(13 * PAGE as usize);
    let layout = Layout::new(
        &flash,
        Region::new(0, 5 * PAGE),
        Region::new(5 * PAGE, 6 * PAGE),
        Region::new(11 * PAGE, 2 * PAGE),
    )
    .unwrap();
    (flash, layout)
}

/// The smoke test's geometry: ACTIVE 64 pages (256 KiB), DFU 65, STATE 2 × 1 page.
pub fn large() -> (Flash, Layout) {
    let flash = Flash::new(131 * PAGE as usize);
    let layout = Layout::new(
        &flash,
        Region::new(0, 64 * PAGE),
        Region::new(64 * PAGE, 65 * PAGE),
        Region::new(129 * PAGE, 2 * PAGE),
    )
    .unwrap();
    (flash, layout)
}

/// Pseudo-random payload bytes with some erased-looking runs, as real images have.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SimRng::new(seed);
    let mut v: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
    for run in v.chunks_mut(1500).step_by(3) {
        let n = run.len().min(300);
        run[..n].fill(0xFF);
    }
    v
}

/// What an image is built from.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub version: (u32, u32, u32),
    pub counter: u64,
    pub hardware: &'static str,
    pub payload_len: usize,
    pub seed: u64,
}

pub const OLD: Spec = Spec {
    version: (1, 0, 0),
    counter: 1,
    hardware: HARDWARE,
    payload_len: 13_000,
    seed: 1,
};

pub const NEW: Spec = Spec {
    version: (1, 1, 0),
    counter: 2,
    hardware: HARDWARE,
    payload_len: 17_500,
    seed: 2,
};

/// An image per `spec`, signed by `keys`.
pub fn image_signed(spec: Spec, keys: &[&SigningKey]) -> Vec<u8> {
    let payload = payload(spec.payload_len, spec.seed);
    let mut out = vec![0u8; 1024 + payload.len()];
    let n = Manifest {
        version: Version {
            major: spec.version.0,
            minor: spec.version.1,
            patch: spec.version.2,
        },
        security_counter: spec.counter,
        hardware: spec.hardware,
        release: "sensor-fw",
        header_len: 1024,
    }
    .build(&payload, keys, &mut out)
    .unwrap();
    out.truncate(n);
    out
}

/// An image per `spec`, signed by both release keys.
pub fn image(spec: Spec) -> Vec<u8> {
    image_signed(spec, &[&key(1), &key(2)])
}

/// Programs `image` into ACTIVE as the factory does (STATE stays erased).
pub fn provision(flash: &mut Flash, layout: &Layout, image: &[u8]) {
    let at = usize::try_from(layout.active().offset).unwrap();
    flash.program(at, image);
}

/// The bytes of `region` in `flash`.
pub fn region(flash: &Flash, r: Region, len: usize) -> &[u8] {
    let at = usize::try_from(r.offset).unwrap();
    &flash.bytes()[at..at + len]
}
