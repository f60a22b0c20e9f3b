//! The shell of `core_size` without the update core: what `size` reports here is the host
//! program, the standard library and the flash model; `core_size` minus this is the core.

#[path = "support/shell.rs"]
mod shell;

use embedded_io::{Read as _, Write as _};
use embedded_storage::nor_flash::{NorFlash as _, ReadNorFlash as _};
use shell::{RamFlash, Stdio};

fn main() {
    let mut flash = RamFlash::new(shell::CAPACITY);
    let mut buf = [0u8; 64];
    shell::blink();
    let n = Stdio.read(&mut buf).unwrap_or(0);
    let erased = flash.erase(0, 4096).is_ok();
    let written = flash.write(0, &buf[..n - n % 4]).is_ok();
    let read = flash.read(0, &mut buf).is_ok();
    let _ = Stdio.write_all(&buf[..n]);
    eprintln!("{erased} {written} {read}");
}
