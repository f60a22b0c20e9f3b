//! Bad images are refused and the running image keeps booting: bad signature, unknown key,
//! too few keys, truncated, corrupted data, wrong hardware, lower security counter, and an
//! image altered in DFU or ACTIVE after it was accepted.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failure is a failed test"
)]

mod common;

use common::world::{Script, World};
use common::{NEW, OLD, Spec, image, image_signed, key};
use swell_firmware::Phase;
use swell_firmware::image::block_len;
use swell_firmware::transfer::{Refusal, SendError};

/// Sends `image`, expects the device to refuse it with `refusal`, then checks that the old
/// image still boots normally.
fn refused(image: &[u8], refusal: Refusal, writes_nothing: bool) {
    let mut w = World::new(Script::Update);
    let ops = w.flash.ops();
    match w.send(image) {
        Err(SendError::Refused { refusal: r, .. }) => assert_eq!(r, refusal),
        other => panic!("expected {refusal:?}, got {other:?}"),
    }
    if writes_nothing {
        assert_eq!(w.flash.ops(), ops, "the device wrote before refusing");
    }
    still_boots_old(&mut w);
}

fn still_boots_old(w: &mut World) {
    let b = w.boot().unwrap();
    assert_eq!(b.header.version.to_string(), "1.0.0");
    assert!(!b.trial);
    // And again: a refused update leaves nothing pending.
    let b = w.boot().unwrap();
    assert_eq!(b.header.version.to_string(), "1.0.0");
    assert!(!b.trial);
}

/// A manifest altered after signing (here its version) fails the release keys' signatures,
/// before anything is written.
#[test]
fn bad_signature() {
    let mut img = image(NEW);
    img[8] ^= 1;
    refused(&img, Refusal::BadSignature, true);
}

/// Signed by a key the anchor does not know (alone, or as the second of two).
#[test]
fn wrong_key() {
    refused(
        &image_signed(NEW, &[&key(9)]),
        Refusal::ThresholdUnmet,
        true,
    );
    refused(
        &image_signed(NEW, &[&key(1), &key(9)]),
        Refusal::ThresholdUnmet,
        true,
    );
    // One valid release key of the two the threshold needs.
    refused(
        &image_signed(NEW, &[&key(1)]),
        Refusal::ThresholdUnmet,
        true,
    );
}

/// Built for other hardware.
#[test]
fn wrong_hardware() {
    let other = Spec {
        hardware: "sensor-v3",
        ..NEW
    };
    refused(&image(other), Refusal::WrongHardware, true);
}

/// A security counter below the running (committed) image's.
#[test]
fn lower_security_counter() {
    let older = Spec {
        counter: OLD.counter - 1,
        version: (2, 0, 0),
        ..NEW
    };
    refused(&image(older), Refusal::Rollback, true);
}

/// After an update commits counter 2, an image with counter 1 (the previous one, validly
/// signed) is refused.
#[test]
fn rollback_after_commit() {
    let mut w = World::new(Script::Update);
    assert_eq!(w.run(), common::world::End::Done);
    let old_again = image(OLD);
    match w.send(&old_again) {
        Err(SendError::Refused { refusal, arg }) => {
            assert_eq!((refusal, arg), (Refusal::Rollback, 2));
        }
        other => panic!("{other:?}"),
    }
    let b = w.boot().unwrap();
    assert_eq!(b.header.version.to_string(), "1.1.0");
}

/// A header block cut short, and an image whose data stops before its declared length.
#[test]
fn truncated() {
    let img = image(NEW);
    let mut w = World::new(Script::Update);
    let mut up = w.updater();
    assert!(up.begin(&img[..block_len(2) - 1]).is_err());
    assert!(up.begin(&img[..100]).is_err());
    // The whole header, then data that stops 1000 bytes short: FINISH is refused.
    assert_eq!(up.begin(&img[..block_len(2)]).unwrap(), 0);
    let short = img.len() - 1000;
    let mut at = 0;
    while at < short {
        let end = (at + 256).min(short);
        if end - at < 256 {
            // The device refuses a short chunk that is not the image's last.
            assert!(up.write(u32::try_from(at).unwrap(), &img[at..end]).is_err());
            break;
        }
        up.write(u32::try_from(at).unwrap(), &img[at..end]).unwrap();
        at = end;
    }
    assert!(up.finish().is_err());
    assert_eq!(up.status().unwrap().phase, Phase::Receiving);
    still_boots_old(&mut w);
}

/// Data corrupted at the source (a valid frame around a wrong byte): the payload digest
/// fails at FINISH, the update is refused, nothing is swapped.
#[test]
fn corrupted_chunk() {
    let mut img = image(NEW);
    let at = img.len() - 3000;
    img[at] ^= 0x80;
    let mut w = World::new(Script::Update);
    match w.send(&img) {
        Err(SendError::Refused { refusal, .. }) => assert_eq!(refusal, Refusal::DigestMismatch),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.updater().status().unwrap().phase, Phase::Refused);
    still_boots_old(&mut w);
    // The good image is accepted afterwards: a refused cycle does not block the next.
    w.send(&image(NEW)).unwrap();
    assert!(w.boot().unwrap().trial);
}

/// DFU altered after the application verified it and requested the swap: the bootloader
/// verifies again, refuses, and boots the running image.
#[test]
fn dfu_altered_before_the_swap() {
    let mut w = World::new(Script::Update);
    w.send(&image(NEW)).unwrap();
    let dfu = usize::try_from(w.layout.dfu().offset).unwrap();
    w.flash.flip(dfu + 5000, 0x04);
    let b = w.boot().unwrap();
    assert_eq!(b.header.version.to_string(), "1.0.0");
    assert_eq!(b.phase, Phase::Refused);
    still_boots_old(&mut w);
}

/// ACTIVE altered while the new image is on trial: the bootloader's check before each boot
/// catches it and reverts at once.
#[test]
fn active_altered_during_trial() {
    let mut w = World::new(Script::Update);
    w.send(&image(NEW)).unwrap();
    assert!(w.boot().unwrap().trial);
    let active = usize::try_from(w.layout.active().offset).unwrap();
    w.flash.flip(active + 9000, 0x10);
    let b = w.boot().unwrap();
    assert_eq!(b.header.version.to_string(), "1.0.0");
    assert_eq!(b.phase, Phase::Reverted);
}

/// A trial not confirmed blocks a new update until it is confirmed or reverted.
#[test]
fn no_new_update_during_a_trial() {
    let mut w = World::new(Script::Update);
    w.send(&image(NEW)).unwrap();
    assert!(w.boot().unwrap().trial);
    let newer = Spec {
        version: (1, 2, 0),
        counter: 3,
        ..NEW
    };
    match w.send(&image(newer)) {
        Err(SendError::Refused { refusal, arg }) => {
            assert_eq!(
                (refusal, arg),
                (Refusal::Busy, u32::from(Phase::Trial.code()))
            );
        }
        other => panic!("{other:?}"),
    }
}
