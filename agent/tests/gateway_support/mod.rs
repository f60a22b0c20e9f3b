//! What the gateway tests share: a simulated microcontroller on a pty, child images and
//! releases, and a gateway device (the real `swell-agent` on a simulated board) configured
//! with that MCU as a child.
//!
//! **The MCU** is a thread of the test process running the real firmware core
//! (`swell-firmware`) over simulated NOR flash: each power-on runs the bootloader, then the
//! application answers the transfer protocol on the pty's master side with the core's
//! `Device`. The gateway opens the pty's slave side by its path, as it would open
//! `/dev/ttyUSB0`. The test keeps a slave descriptor open too, so the pty survives the agent's
//! death. What the new image does on its trial is written in its payload's first line
//! (`SWELLMCU behaviour=...`):
//!
//! | behaviour | on a trial boot |
//! |---|---|
//! | `healthy` | serves the gateway and confirms itself (`mark_booted`) once it has answered a `HELLO`: its link to the gateway works |
//! | `crash` | resets before it serves anything, every time, until the bootloader reverts it |
//! | `hang` | answers two `HELLO`s without confirming, then its watchdog resets it |
//!
//! Every request the MCU answers is sent to the test as an [`McuEvent`], so a test waits on
//! events, never on time. `pause_at` makes the MCU stop answering when the transfer reaches
//! an offset, until the test says go on: the request it was given is lost, as it would be when
//! the gateway loses power mid-frame.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{self, OptionalActions};
use swell_firmware::image::{Manifest, Name, Version};
use swell_firmware::sim::SimFlash;
use swell_firmware::transfer::device::info;
use swell_firmware::transfer::{Decoder, Device, Frame, Info, Request, Response};
use swell_firmware::update::{Config as McuConfig, Updater};
use swell_firmware::{Bootloader, ImageHeader, Layout, Phase, Region, TrustAnchor};
use swell_proto::envelope::{Header, sign_document};
use swell_proto::messages::{ChildReport, open_device_message};
use swell_proto::topics::DeviceTopic;
use swell_proto::{
    Artifact, DeviceId, HardwareId, ReleaseDocument, ReleaseName, SemVer, Sha256Digest, TargetName,
    TrustRoot,
};

use crate::common::{self, Device as Gateway, Options, Release, key, seed};

/// The child's id and hardware, and the release line its images belong to.
pub const CHILD: &str = "mcu-0001";
pub const CHILD_HARDWARE: &str = "sensor-v2";
pub const CHILD_RELEASE: &str = "sensor-fw";

/// 4 KiB sectors of 4-byte write units (nRF52-like).
pub type Flash = SimFlash<4, 4096>;
pub const PAGE: u32 = 4096;

/// Trial boots the MCU gives a new image.
pub const MAX_ATTEMPTS: u8 = 3;

/// How long a test waits for an MCU event before it fails: a guard against a hang, never a
/// way to wait for something to happen.
pub const EVENT_LIMIT: Duration = Duration::from_secs(60);

/// ACTIVE 16 pages (64 KiB), DFU 17, STATE 2 × 1.
pub fn layout(flash: &Flash) -> Layout {
    Layout::new(
        flash,
        Region::new(0, 16 * PAGE),
        Region::new(16 * PAGE, 17 * PAGE),
        Region::new(33 * PAGE, 2 * PAGE),
    )
    .unwrap()
}

/// The release role of the gateway's trust root, as the MCU's bootloader embeds it.
pub fn anchor() -> &'static TrustAnchor {
    static ANCHOR: OnceLock<TrustAnchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let root = TrustRoot::from_trusted(&common::root_json()).unwrap();
        TrustAnchor::from_root(&root).unwrap()
    })
}

fn mcu_config() -> McuConfig<'static> {
    McuConfig {
        anchor: anchor(),
        hardware: Name::new(CHILD_HARDWARE).unwrap(),
        max_attempts: MAX_ATTEMPTS,
    }
}

/// A firmware image to build.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub version: (u32, u32, u32),
    pub counter: u64,
    pub hardware: &'static str,
    pub behaviour: &'static str,
    pub payload_len: usize,
    pub signers: Vec<u8>,
}

impl ImageSpec {
    /// A healthy image of `version` with `counter`, signed by both release keys.
    pub fn new(version: (u32, u32, u32), counter: u64) -> Self {
        Self {
            version,
            counter,
            hardware: CHILD_HARDWARE,
            behaviour: "healthy",
            payload_len: 40_000,
            signers: vec![seed::RELEASE_1, seed::RELEASE_2],
        }
    }

    pub fn version_text(&self) -> String {
        let (a, b, c) = self.version;
        format!("{a}.{b}.{c}")
    }

    /// The signed image file.
    pub fn build(&self) -> Vec<u8> {
        let mut payload = format!("SWELLMCU behaviour={}\n", self.behaviour).into_bytes();
        let mut x = self.counter * 7919 + u64::from(self.version.1) + 1;
        while payload.len() < self.payload_len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            payload.extend_from_slice(&x.to_le_bytes());
        }
        payload.truncate(self.payload_len);
        let keys: Vec<_> = self.signers.iter().map(|s| key(*s)).collect();
        let refs: Vec<_> = keys.iter().collect();
        let mut out = vec![0u8; 1024 + payload.len()];
        let (major, minor, patch) = self.version;
        let n = Manifest {
            version: Version {
                major,
                minor,
                patch,
            },
            security_counter: self.counter,
            hardware: self.hardware,
            release: CHILD_RELEASE,
            header_len: 1024,
        }
        .build(&payload, &refs, &mut out)
        .unwrap();
        out.truncate(n);
        out
    }
}

/// A release whose one artifact is `image` for the child, as `swellctl release create` makes
/// it: `hardware` listed, signed by `signers`.
pub fn child_release(
    version: &str,
    security_version: u64,
    hardware: &[&str],
    image: Vec<u8>,
    signers: &[u8],
) -> Release {
    let sha256 = Sha256Digest::of(&image);
    let doc = ReleaseDocument {
        name: ReleaseName::new(CHILD_RELEASE).unwrap(),
        release_version: SemVer::new(version).unwrap(),
        security_version,
        hardware: hardware
            .iter()
            .map(|h| HardwareId::new(h).unwrap())
            .collect(),
        artifacts: vec![Artifact {
            target: TargetName::new(CHILD).unwrap(),
            size: image.len() as u64,
            sha256,
        }],
    };
    let header = Header {
        version: 1,
        expires: common::valid_until(),
    };
    let keys: Vec<_> = signers.iter().map(|s| key(*s)).collect();
    let refs: Vec<_> = keys.iter().collect();
    Release {
        version: version.to_string(),
        manifest: sign_document(header, &doc, &refs).unwrap(),
        image,
        sha256,
    }
}

/// The release for `spec`'s image, honest about it.
pub fn release_for(spec: &ImageSpec) -> Release {
    child_release(
        &spec.version_text(),
        spec.counter,
        &[CHILD_HARDWARE],
        spec.build(),
        &[seed::RELEASE_1, seed::RELEASE_2],
    )
}

/// A request the MCU answered, and its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    Hello,
    Begin,
    Data { offset: u32, len: usize },
    Finish,
    Damaged,
}

/// What the MCU tells the test.
#[allow(
    clippy::large_enum_variant,
    reason = "a few events per test; `Response::Info` is the firmware's own stack type"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McuEvent {
    /// It powered on and its bootloader started this image.
    Booted {
        version: String,
        trial: bool,
        phase: Phase,
    },
    /// It answered a request.
    Answered {
        request: Req,
        answer: Option<Response>,
    },
    /// It stopped at `pause_at` with `received` bytes of the image confirmed in flash, and
    /// waits for [`Mcu::go_on`].
    Paused { received: u32 },
}

/// A simulated MCU on a pty.
pub struct Mcu {
    /// The pty's slave path: the child's `port` in the gateway's configuration.
    pub port: PathBuf,
    pub events: mpsc::Receiver<McuEvent>,
    stop: Arc<AtomicBool>,
    go: mpsc::Sender<()>,
    thread: Option<JoinHandle<Flash>>,
    _slave: OwnedFd,
}

/// How the MCU starts.
pub struct McuSetup {
    /// The factory image in ACTIVE.
    pub factory: Vec<u8>,
    /// Stop before answering the first `DATA` at or beyond this offset.
    pub pause_at: Option<u32>,
}

impl Mcu {
    /// Opens a pty pair and starts the MCU on its master side with `setup.factory` in ACTIVE.
    pub fn start(setup: McuSetup) -> Self {
        let master =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .unwrap();
        rustix::pty::grantpt(&master).unwrap();
        rustix::pty::unlockpt(&master).unwrap();
        let name = rustix::pty::ptsname(&master, Vec::new()).unwrap();
        let port = PathBuf::from(name.to_str().unwrap());
        let slave = rustix::fs::open(
            &port,
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        // Raw from the start: nothing the MCU sends is echoed back to it before the gateway
        // configures the line.
        let mut t = termios::tcgetattr(&slave).unwrap();
        t.make_raw();
        termios::tcsetattr(&slave, OptionalActions::Now, &t).unwrap();

        let mut flash = Flash::new(35 * PAGE as usize);
        let l = layout(&flash);
        flash.program(0, &setup.factory);
        let (tx, events) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let run = Run {
            link: File::from(master),
            layout: l,
            events: tx,
            go: go_rx,
            stop: Arc::clone(&stop),
            pause_at: setup.pause_at,
        };
        let thread = std::thread::spawn(move || run.power_cycles(flash));
        Self {
            port,
            events,
            stop,
            go,
            thread: Some(thread),
            _slave: slave,
        }
    }

    /// The next event; fails the test after [`EVENT_LIMIT`] without one.
    pub fn next(&self) -> McuEvent {
        self.events
            .recv_timeout(EVENT_LIMIT)
            .expect("the MCU said nothing for a minute")
    }

    /// Every event so far, without waiting.
    pub fn drain(&self) -> Vec<McuEvent> {
        self.events.try_iter().collect()
    }

    /// Lets a paused MCU go on.
    pub fn go_on(&self) {
        self.go.send(()).unwrap();
    }

    /// Powers the MCU off and returns its flash.
    pub fn stop(mut self) -> Flash {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Mcu {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the MCU says about itself (its own `INFO`, read from its flash).
pub fn mcu_info(flash: &mut Flash) -> Info {
    let l = layout(flash);
    let mut up = Updater::new(flash, l, mcu_config());
    info(&mut up).unwrap()
}

/// The behaviour written in an image's payload.
fn behaviour(flash: &Flash, header: &ImageHeader) -> String {
    let at = header.header_len as usize;
    let head = &flash.bytes()[at..at + 64];
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .strip_prefix("SWELLMCU behaviour=")
        .unwrap_or("healthy")
        .to_string()
}

struct Run {
    link: File,
    layout: Layout,
    events: mpsc::Sender<McuEvent>,
    go: mpsc::Receiver<()>,
    stop: Arc<AtomicBool>,
    pause_at: Option<u32>,
}

/// How a power-on ended.
enum Reset {
    /// Reset (after DONE, a crash or the watchdog): boot again.
    Again,
    /// The test is over.
    Off,
}

impl Run {
    fn power_cycles(mut self, mut flash: Flash) -> Flash {
        while let Reset::Again = self.power_on(&mut flash) {}
        flash
    }

    fn power_on(&mut self, flash: &mut Flash) -> Reset {
        let booted = Bootloader::new(&mut *flash, self.layout, anchor(), mcu_config().hardware)
            .boot(|| {})
            .expect("the MCU has nothing to boot");
        let _ = self.events.send(McuEvent::Booted {
            version: booted.header.version.to_string(),
            trial: booted.trial,
            phase: booted.phase,
        });
        let behaviour = if booted.trial {
            behaviour(flash, &booted.header)
        } else {
            "healthy".to_string()
        };
        if behaviour == "crash" {
            return Reset::Again;
        }
        let mut device = Device::new(Updater::new(&mut *flash, self.layout, mcu_config()));
        let mut decoder = Decoder::new();
        let mut hellos = 0;
        let mut buf = [0u8; 256];
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Reset::Off;
            }
            let slice = Timespec {
                tv_sec: 0,
                tv_nsec: 50_000_000,
            };
            let ready = poll(&mut [PollFd::new(&self.link, PollFlags::IN)], Some(&slice)).unwrap();
            if ready == 0 {
                continue;
            }
            let n = self.link.read(&mut buf).unwrap();
            for &b in &buf[..n] {
                let Some(frame) = decoder.push(b) else {
                    continue;
                };
                let raw: Result<Vec<u8>, _> = frame.map(|len| decoder.frame(len).to_vec());
                let request = classify(raw.as_deref().ok());
                if let (Some(at), Req::Data { offset, .. }) = (self.pause_at, &request)
                    && *offset >= at
                {
                    self.pause_at = None;
                    let received = info(device.updater()).unwrap().received;
                    let _ = self.events.send(McuEvent::Paused { received });
                    // The gateway is cut off while this request is on the line: it is lost.
                    // (Waiting in slices, so a test that fails meanwhile can still stop it.)
                    loop {
                        match self.go.recv_timeout(Duration::from_millis(50)) {
                            Ok(()) => break,
                            Err(mpsc::RecvTimeoutError::Timeout)
                                if !self.stop.load(Ordering::SeqCst) => {}
                            Err(_) => return Reset::Off,
                        }
                    }
                    continue;
                }
                let mut out = [0u8; swell_firmware::transfer::MAX_WIRE];
                let (len, done) = device.handle(raw.as_deref().map_err(|e| *e), &mut out);
                self.link.write_all(&out[..len]).unwrap();
                let answer = decode(&out[..len]);
                let _ = self.events.send(McuEvent::Answered {
                    request: request.clone(),
                    answer,
                });
                if done {
                    return Reset::Again;
                }
                if booted.trial && request == Req::Hello {
                    hellos += 1;
                    match behaviour.as_str() {
                        "hang" if hellos >= 2 => return Reset::Again,
                        "hang" => {}
                        _ => device.updater().mark_booted().unwrap(),
                    }
                }
            }
        }
    }
}

fn classify(raw: Option<&[u8]>) -> Req {
    let Some(frame) = raw.and_then(|r| Frame::parse(r).ok()) else {
        return Req::Damaged;
    };
    match Request::decode(&frame) {
        Some(Request::Hello) => Req::Hello,
        Some(Request::Begin(_)) => Req::Begin,
        Some(Request::Data { offset, data }) => Req::Data {
            offset,
            len: data.len(),
        },
        Some(Request::Finish) => Req::Finish,
        None => Req::Damaged,
    }
}

fn decode(wire: &[u8]) -> Option<Response> {
    let mut d = Decoder::new();
    let mut found = None;
    for &b in wire {
        if let Some(Ok(len)) = d.push(b) {
            found = Frame::parse(d.frame(len))
                .ok()
                .and_then(|f| Response::decode(&f));
        }
    }
    found
}

/// The `[[child]]` table for the MCU on `port`.
pub fn child_table(port: &std::path::Path) -> String {
    format!(
        "[[child]]\nid = \"{CHILD}\"\nhardware = \"{CHILD_HARDWARE}\"\nport = {}\n\
         answer_timeout_ms = 500\npoll_interval_ms = 10\nsettle_timeout_secs = 60\n",
        serde_json::to_string(&port.display().to_string()).unwrap()
    )
}

/// A gateway (simulated board running the real agent) with `mcu` as its child.
pub fn gateway(mcu: &Mcu) -> Gateway {
    Gateway::new(Options {
        extra: child_table(&mcu.port),
        ..Options::default()
    })
}

/// The gateway's outbox: every child report, verified with the gateway's key, oldest first,
/// with its sequence number.
pub fn child_reports(gw: &Gateway) -> Vec<(u64, ChildReport)> {
    gw.journal()
        .outbox
        .iter()
        .filter(|o| {
            assert_eq!(o.topic, DeviceTopic::Report);
            let v: serde_json::Value = serde_json::from_slice(&o.payload).unwrap();
            v["signed"]["_type"] == "child_report"
        })
        .map(|o| {
            let opened = open_device_message::<ChildReport>(
                &o.payload,
                &common::device_id(),
                &common::public(seed::DEVICE),
                common::now(),
            )
            .unwrap_or_else(|e| panic!("a child report does not verify with the gateway key: {e}"));
            (opened.seq, opened.message)
        })
        .collect()
}

/// The child's id.
pub fn child_id() -> DeviceId {
    DeviceId::new(CHILD).unwrap()
}

/// The version in an `INFO`'s running image.
pub fn running_version(info: &Info) -> String {
    info.running.unwrap().version.to_string()
}
