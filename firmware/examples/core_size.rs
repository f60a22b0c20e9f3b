//! The update core linked into one host binary, to measure its code size (see the README):
//! the bootloader's `boot`, the application's `Updater` (`begin`, `write`, `finish`,
//! `mark_booted`) and the transfer `Device` serving a byte stream. Compare with
//! `core_size_baseline`, the same shell without the core:
//!
//! ```sh
//! cargo build --release -p swell-firmware --example core_size --example core_size_baseline
//! size target/release/examples/core_size target/release/examples/core_size_baseline
//! ```

#[path = "support/shell.rs"]
mod shell;

use shell::{RamFlash, Stdio};
use swell_firmware::image::Name;
use swell_firmware::transfer::Device;
use swell_firmware::{Bootloader, Config, Layout, Region, TrustAnchor, Updater};

fn main() {
    let mut flash = RamFlash::new(shell::CAPACITY);
    let layout = match Layout::new(
        &flash,
        Region::new(0, 64 * 4096),
        Region::new(64 * 4096, 65 * 4096),
        Region::new(129 * 4096, 2 * 4096),
    ) {
        Ok(l) => l,
        Err(_) => return eprintln!("bad layout"),
    };
    // A bootloader embeds its anchor's bytes; here they come from a file so that the
    // compiler cannot fold the verification away.
    let bytes = std::env::args()
        .nth(1)
        .and_then(|path| std::fs::read(path).ok())
        .unwrap_or_default();
    let Ok(anchor) = TrustAnchor::parse(&bytes) else {
        return eprintln!("usage: core_size ANCHOR-FILE");
    };
    let Some(hardware) = Name::new("sensor-v2") else {
        return;
    };
    let booted = Bootloader::new(&mut flash, layout, &anchor, hardware).boot(shell::blink);
    // Report without `Debug`, whose formatting code would be counted as the core's.
    eprintln!("booted: {}", booted.is_ok());
    let config = Config {
        anchor: &anchor,
        hardware,
        max_attempts: 3,
    };
    let mut updater = Updater::new(&mut flash, layout, config);
    let confirmed = updater.mark_booted().is_ok();
    let mut device = Device::new(updater);
    let served = device.serve(&mut Stdio).is_ok();
    eprintln!("confirmed: {confirmed}, served: {served}");
}
