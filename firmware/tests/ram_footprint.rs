//! The RAM the core needs: the sizes of its state types and of the largest stack buffers on
//! each path, printed for the README (run with `--nocapture`).

mod common;

use core::mem::size_of;

use swell_firmware::image::{ImageHeader, MAX_BLOCK_LEN};
use swell_firmware::transfer::frame::MAX_FRAME;
use swell_firmware::transfer::{Decoder, Device, Info, MAX_WIRE, Response, Sender};
use swell_firmware::{Bootloader, PAGE_BUF, Status, TrustAnchor, Updater};

/// A flash handle the size of a real driver's (a reference).
type Handle<'a> = &'a mut common::Flash;

/// Prints each state type's size and the sum of the buffers live at the deepest point of
/// the boot path and of the transfer path, and checks they stay within budget.
#[test]
fn ram_needed() {
    let types = [
        ("TrustAnchor", size_of::<TrustAnchor>()),
        ("ImageHeader", size_of::<ImageHeader>()),
        ("Status", size_of::<Status>()),
        (
            "Bootloader<&mut F>",
            size_of::<Bootloader<'_, Handle<'_>>>(),
        ),
        ("Updater<&mut F>", size_of::<Updater<'_, Handle<'_>>>()),
        (
            "Device<&mut F> (Updater + frame decoder)",
            size_of::<Device<'_, Handle<'_>>>(),
        ),
        ("Decoder", size_of::<Decoder>()),
        ("Info", size_of::<Info>()),
        ("Response", size_of::<Response>()),
        (
            "Sender<&mut [u8]> (gateway side)",
            size_of::<Sender<&mut [u8]>>(),
        ),
    ];
    for (name, size) in types {
        println!("size_of {name}: {size} bytes");
    }
    let sha256 = size_of::<sha2::Sha256>();
    // Boot path, deepest point: `verify_in_flash` holds the header block, a page buffer and
    // the hasher while the Bootloader and Status live in the caller.
    let boot = size_of::<Bootloader<'_, Handle<'_>>>()
        + size_of::<TrustAnchor>()
        + size_of::<Status>()
        + MAX_BLOCK_LEN
        + PAGE_BUF
        + sha256
        + size_of::<ImageHeader>();
    // Transfer path, deepest point: `serve`'s read buffer and response buffer, the Device,
    // the response being encoded (body and raw frame), and under FINISH the same
    // verification buffers as the boot path.
    let transfer = size_of::<Device<'_, Handle<'_>>>()
        + size_of::<TrustAnchor>()
        + 64
        + MAX_WIRE
        + size_of::<Response>()
        + MAX_FRAME
        + size_of::<Status>()
        + MAX_BLOCK_LEN
        + PAGE_BUF
        + sha256
        + size_of::<ImageHeader>();
    println!(
        "buffers: header block {MAX_BLOCK_LEN}, page {PAGE_BUF}, wire frame {MAX_WIRE}, frame {MAX_FRAME}, SHA-256 state {sha256}"
    );
    println!("boot path: {boot} bytes of the core's own state and buffers");
    println!("transfer path: {transfer} bytes of the core's own state and buffers");
    assert!(boot < 3 * 1024, "boot path grew to {boot} bytes");
    assert!(
        transfer < 5 * 1024,
        "transfer path grew to {transfer} bytes"
    );
}
