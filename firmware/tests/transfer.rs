//! The transfer protocol end to end: the reference gateway `Sender` against the real device
//! session, over a lossy loopback and over a threaded byte pipe.

mod common;

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use common::link::{Faults, LinkError, Loopback};
use common::world::{End, Script, World, config};
use common::{NEW, image};
use embedded_io::{ErrorKind, ErrorType, Read, Write};
use swell_firmware::Phase;
use swell_firmware::image::block_len;
use swell_firmware::transfer::{Device, Refusal, Request, Response, Sender, Served};

/// Lost and damaged frames in both directions are resent; the image arrives intact.
#[test]
fn a_noisy_link_still_delivers_the_image() {
    let mut w = World::new(Script::Update);
    w.faults = Faults {
        drop_requests: vec![0, 5, 6, 40],
        corrupt_requests: vec![1, 12, 13, 70],
        drop_responses: vec![3, 30],
        corrupt_responses: vec![8, 50, 51],
    };
    w.send(&image(NEW)).unwrap();
    let b = w.boot().unwrap();
    assert!(b.trial);
    assert_eq!(b.header.version.to_string(), "1.1.0");
}

/// After a power cut mid-transfer the device resumes at its last confirmed page: at most
/// one page is sent again, and the result is the same image.
#[test]
fn a_reset_resumes_at_the_last_confirmed_page() {
    let img = image(NEW);
    let mut w = World::new(Script::Update);
    // Cut well into the transfer (record, 3 pages of data and markers, part of the 4th).
    w.flash.cut_after(2 + 3 * 17 + 5, 7);
    assert!(w.send(&img).is_err());
    w.flash.power_on();
    let mut up = w.updater();
    let status = up.status().unwrap();
    assert_eq!(status.phase, Phase::Receiving);
    let resume = up.begin(&img[..block_len(2)]).unwrap();
    assert_eq!(
        resume,
        3 * 4096,
        "resumes at the start of the page the cut interrupted"
    );
    let ops = w.flash.ops();
    w.send(&img).unwrap();
    // The rest only: 5 pages' worth of image minus the 3 confirmed.
    let remaining_chunks = (img.len() - 3 * 4096).div_ceil(256) as u64;
    assert!(w.flash.ops() - ops <= remaining_chunks + 3 + 3);
    assert_eq!(w.run(), End::Done);
    w.check_final();
}

/// A chunk sent twice (its acknowledgement was lost) is acknowledged again, not rewritten;
/// a chunk from the future is refused with the offset expected.
#[test]
fn duplicates_and_gaps() {
    let img = image(NEW);
    let mut w = World::new(Script::Update);
    let mut up = w.updater();
    up.begin(&img[..block_len(2)]).unwrap();
    assert_eq!(up.write(0, &img[..256]).unwrap(), 256);
    assert_eq!(up.write(256, &img[256..512]).unwrap(), 512);
    assert_eq!(up.write(0, &img[..256]).unwrap(), 512);
    let err = up.write(1024, &img[1024..1280]).unwrap_err();
    assert_eq!(
        Refusal::of(&err),
        (Refusal::OutOfOrder, 512),
        "a gap names the offset expected"
    );
    assert_eq!(
        Refusal::of(&up.write(512, &img[512..600]).unwrap_err()).0,
        Refusal::BadChunk
    );
}

/// HELLO reports what runs and where the update stands, for the gateway to report upward.
#[test]
fn hello_reports_the_running_image_and_the_phase() {
    let mut w = World::new(Script::Update);
    let img = image(NEW);
    let mut device = Device::new(w.updater());
    let mut sender = Sender::new(Loopback::new(&mut device, Faults::default()));
    let info = sender.hello().unwrap();
    assert_eq!(info.phase, Phase::Idle);
    assert_eq!(info.hardware.as_str(), common::HARDWARE);
    let running = info.running.unwrap();
    assert_eq!(running.version.to_string(), "1.0.0");
    assert_eq!(running.release.as_str(), "sensor-fw");
    assert_eq!((info.committed_counter, info.chunk), (1, 256));
    match sender
        .request(&Request::Begin(&img[..block_len(2)]))
        .unwrap()
    {
        Response::Ready { resume, total, .. } => {
            assert_eq!((resume, usize::try_from(total).unwrap()), (0, img.len()));
        }
        other => panic!("{other:?}"),
    }
    let info = sender.hello().unwrap();
    assert_eq!(info.phase, Phase::Receiving);
    assert_eq!(
        info.pending,
        swell_firmware::ImageHeader::parse(&img)
            .unwrap()
            .manifest_digest
    );
}

/// One end of a byte pipe between threads; a read waits up to 200 ms, then times out.
struct Pipe {
    tx: SyncSender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
}

fn pipe() -> (Pipe, Pipe) {
    let (a_tx, b_rx) = sync_channel(64);
    let (b_tx, a_rx) = sync_channel(64);
    let end = |tx, rx| Pipe {
        tx,
        rx,
        buf: Vec::new(),
    };
    (end(a_tx, a_rx), end(b_tx, b_rx))
}

impl ErrorType for Pipe {
    type Error = LinkError;
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        if self.buf.is_empty() {
            self.buf = match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => return Err(LinkError(ErrorKind::TimedOut)),
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            };
        }
        let n = buf.len().min(self.buf.len());
        buf[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> Result<usize, LinkError> {
        self.tx
            .send(buf.to_vec())
            .map_err(|_| LinkError(ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), LinkError> {
        Ok(())
    }
}

/// `Device::serve` over a byte stream, as the MCU's main loop runs it, until the update is
/// ready; then the bootloader swaps and boots the new image on trial.
#[test]
fn serve_over_a_byte_stream() {
    let mut w = World::new(Script::Update);
    let img = image(NEW);
    let (mut gateway_end, mut device_end) = pipe();
    let served = std::thread::scope(|s| {
        let flash = &mut w.flash;
        let layout = w.layout;
        let device = s.spawn(move || {
            let updater = swell_firmware::Updater::new(flash, layout, config());
            let mut device = Device::new(updater);
            // The device waits for the gateway without a timeout, as a UART would.
            loop {
                match device.serve(&mut device_end) {
                    Err(LinkError(ErrorKind::TimedOut)) => {}
                    other => return other,
                }
            }
        });
        let mut sender = Sender::new(&mut gateway_end);
        sender.send_image(&img).unwrap();
        device.join().unwrap()
    });
    assert_eq!(served, Ok(Served::UpdateReady));
    assert!(w.boot().unwrap().trial);
}
