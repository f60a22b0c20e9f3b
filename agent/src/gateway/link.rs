//! The blocking work behind the child machine's actions: probing the MCU, staging and checking
//! the image, transferring it, and watching the MCU settle. Each function runs on a blocking
//! thread and returns the event for the machine, or `None` when the agent is shutting down
//! (the action is repeated at the next start).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use swell_firmware::transfer::{Info, Refusal, SendError, Sender};
use swell_firmware::{ImageHeader, Phase, TrustAnchor};
use swell_proto::messages::{ChildRunning, Slot};
use swell_proto::{ReleaseName, SemVer, Sha256Digest, TargetName, Timestamp, TrustRoot};

use super::config::ChildConfig;
use super::machine::{Event, Job, Seen, Sent};
use super::serial::{CANCEL_SLICE, LinkError, SerialPort};
use crate::download::{FetchOptions, FetchRequest, fetch_into_slot};
use crate::signer::now;
use crate::slots::SlotPath;

/// What the tasks share: the trust root (manifests are verified again against it), the
/// anchor derived from it (image headers), and where images are staged.
#[derive(Debug)]
pub struct Shared {
    /// The gateway's trust root.
    pub root: TrustRoot,
    /// The root's release role in the firmware's form, or why it has none.
    pub anchor: Result<TrustAnchor, String>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The gateway's running slot, which a staging download must never write.
    pub active: PathBuf,
    /// Download timeouts, checkpoint spacing and attempts.
    pub download: crate::config::DownloadConfig,
    /// Raised at shutdown.
    pub cancel: Arc<AtomicBool>,
}

impl Shared {
    /// Where the image for `child` is staged.
    pub fn staged(&self, child: &ChildConfig) -> PathBuf {
        self.data_dir.join(format!("child-{}.img", child.id))
    }

    /// The staging download's checkpoint for `child`.
    pub fn checkpoint(&self, child: &ChildConfig) -> PathBuf {
        self.data_dir
            .join(format!("child-{}.checkpoint.json", child.id))
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

/// What the machine needs from an `INFO`.
pub fn seen(info: &Info) -> Seen {
    let running = info.running.as_ref();
    Seen {
        phase: info.phase,
        attempts: info.attempts,
        pending: info.pending,
        hardware: info.hardware.as_str().to_string(),
        running: ChildRunning {
            release: running.and_then(|r| ReleaseName::new(r.release.as_str()).ok()),
            version: running.and_then(|r| SemVer::new(&r.version.to_string()).ok()),
            security_version: info.committed_counter,
        },
    }
}

fn open(shared: &Shared, child: &ChildConfig) -> Result<Sender<SerialPort>, LinkError> {
    let port = SerialPort::open(
        &child.port,
        child.baud_rate,
        Duration::from_millis(child.answer_timeout_ms),
        Arc::clone(&shared.cancel),
    )?;
    Ok(Sender::new(port))
}

fn describe(e: &SendError<LinkError>) -> String {
    match e {
        SendError::Io(e) => e.to_string(),
        SendError::Refused { refusal, arg } => refusal_text(*refusal, *arg),
        SendError::NoAnswer => format!(
            "no valid answer after {} tries",
            swell_firmware::transfer::sender::MAX_TRIES
        ),
        SendError::Protocol(what) => format!("protocol error: {what}"),
    }
}

/// A refusal in words.
pub fn refusal_text(refusal: Refusal, arg: u32) -> String {
    let what = match refusal {
        Refusal::BadRequest => format!("a request it does not understand (kind {arg:#04x})"),
        Refusal::BadHeader => "a malformed image header".to_string(),
        Refusal::BadSignature => format!("a bad signature by its release key {arg}"),
        Refusal::ThresholdUnmet => format!("too few release signatures ({arg} valid)"),
        Refusal::WrongHardware => "an image built for other hardware".to_string(),
        Refusal::Rollback => {
            format!("a security counter below its committed {arg} (anti-rollback)")
        }
        Refusal::TooLarge => format!("an image larger than its ACTIVE partition ({arg} bytes)"),
        Refusal::DigestMismatch => "an image whose data does not match its digest".to_string(),
        Refusal::Busy => {
            let phase = u8::try_from(arg).ok().and_then(Phase::from_code);
            match phase {
                Some(p) => format!("a request while its update is {p}"),
                None => format!("a request in phase {arg}"),
            }
        }
        Refusal::OutOfOrder => format!("data out of order (expected offset {arg})"),
        Refusal::BadChunk => format!("a chunk of the wrong size (chunk {arg})"),
        Refusal::Flash => "a request because its flash failed".to_string(),
    };
    format!("the MCU refused {what}")
}

/// `HELLO`: what the MCU runs.
pub fn probe(shared: &Shared, child: &ChildConfig) -> Option<Event> {
    let answer = open(shared, child)
        .map_err(SendError::Io)
        .and_then(|mut s| s.hello());
    match answer {
        Ok(info) => Some(Event::Probed(seen(&info))),
        Err(SendError::Io(LinkError::Cancelled)) => None,
        Err(e) => Some(Event::StepFailed(format!(
            "asking child {} on {} what it runs: {}",
            child.id,
            child.port.display(),
            describe(&e)
        ))),
    }
}

/// Stages the image in the data directory (resumable, hashed while written), retrying
/// transient failures as the gateway's own download does.
pub fn fetch(shared: &Shared, child: &ChildConfig, job: &Job) -> Option<Event> {
    let d = &shared.download;
    let request = FetchRequest {
        source: job.source.clone(),
        size: job.size,
        sha256: job.sha256,
        // `SlotPath` only names the file in messages: the staging file is no A/B slot.
        slot: SlotPath::new(Slot::A, shared.staged(child)),
        active: shared.active.clone(),
        checkpoint: shared.checkpoint(child),
        options: FetchOptions {
            connect_timeout: Duration::from_secs(d.connect_timeout_secs),
            stall_timeout: Duration::from_secs(d.stall_timeout_secs),
            checkpoint_every: d.checkpoint_bytes,
            ..FetchOptions::default()
        },
    };
    let mut attempt = 1;
    loop {
        match fetch_into_slot(&request, &shared.cancel, &mut |_, _| {}) {
            Ok(()) => return Some(Event::Fetched),
            Err(_) if shared.cancelled() => return None,
            Err(e) if e.is_transient() && attempt < d.attempts => {
                // 1 s, 2 s, 4 s ... at most 30 s, watching for a shutdown.
                let until = Instant::now() + Duration::from_secs((1 << (attempt - 1)).min(30));
                while Instant::now() < until {
                    if shared.cancelled() {
                        return None;
                    }
                    std::thread::sleep(CANCEL_SLICE);
                }
                attempt += 1;
            }
            Err(e) => {
                return Some(Event::StepFailed(format!(
                    "staging the image for child {}: {e}",
                    child.id
                )));
            }
        }
    }
}

/// Reads the staged image and checks it against everything the gateway knows before a byte
/// goes to the MCU: the manifest's size and digest, the header against the release manifest
/// (name, version, security version, hardware, size), the header's hardware against the
/// child's, and the header's signatures against the trust root's release role.
fn checked_image(
    shared: &Shared,
    child: &ChildConfig,
    job: &Job,
) -> Result<(Vec<u8>, ImageHeader), String> {
    let path = shared.staged(child);
    let image = std::fs::read(&path)
        .map_err(|e| format!("reading staged image {}: {e}", path.display()))?;
    if image.len() as u64 != job.size || Sha256Digest::of(&image) != job.sha256 {
        return Err(format!(
            "the staged image {} is no longer the one downloaded",
            path.display()
        ));
    }
    let header = ImageHeader::parse(&image)
        .map_err(|e| format!("the artifact is not a Swell firmware image: {e}"))?;
    // Verified when admitted: judged again as of that instant, so only the header is new.
    let release = shared
        .root
        .verify_release(&job.manifest, job.admitted)
        .map_err(|e| format!("the release manifest no longer verifies: {e}"))?;
    let target = TargetName::new(child.id.as_str()).map_err(|e| e.to_string())?;
    header
        .check_release(&release, &target, job.size)
        .map_err(|e| format!("the image header does not match the release manifest: {e}"))?;
    if header.hardware.as_str() != child.hardware.as_str() {
        return Err(format!(
            "the image is built for hardware {}, not child {}'s {}",
            header.hardware.as_str(),
            child.id,
            child.hardware
        ));
    }
    let anchor = shared.anchor.as_ref().map_err(Clone::clone)?;
    let block = image
        .get(..header.block_len())
        .ok_or("the image is shorter than its header")?;
    ImageHeader::verify_block(block, anchor).map_err(|e| {
        format!("the image's signatures do not satisfy the trust root's release role: {e}")
    })?;
    Ok((image, header))
}

/// Checks the staged image, then sends it, resuming from the MCU's confirmed offset.
pub fn transfer(shared: &Shared, child: &ChildConfig, job: &Job) -> Option<Event> {
    let (image, header) = match checked_image(shared, child, job) {
        Ok(checked) => checked,
        Err(reason) => {
            return Some(Event::StepFailed(format!(
                "refused the image for child {} before sending it: {reason}",
                child.id
            )));
        }
    };
    let digest = header.manifest_digest;
    let failed = |what: String| {
        Some(Event::StepFailed(format!(
            "sending the image to child {} on {}: {what}",
            child.id,
            child.port.display()
        )))
    };
    let mut last = String::new();
    for _ in 0..child.attempts {
        let mut sender = match open(shared, child) {
            Ok(s) => s,
            Err(LinkError::Cancelled) => return None,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        // An earlier run may have got as far as DONE without recording it: then the MCU
        // has moved on with this very image, and sending it again would start it over.
        match sender.hello() {
            Ok(info) if info.pending == digest && past_transfer(info.phase) => {
                return Some(Event::Transferred(digest));
            }
            Ok(_) => {}
            Err(SendError::Io(LinkError::Cancelled)) => return None,
            Err(e) => {
                last = describe(&e);
                continue;
            }
        }
        match sender.send_image(&image) {
            Ok(()) => return Some(Event::Transferred(digest)),
            Err(SendError::Io(LinkError::Cancelled)) => return None,
            // The MCU reset (it lost the transfer's place), the link dropped frames, or the
            // data arrived corrupted in flash: the next BEGIN resumes or starts over.
            Err(
                e @ (SendError::NoAnswer
                | SendError::Io(_)
                | SendError::Protocol(_)
                | SendError::Refused {
                    refusal: Refusal::Busy | Refusal::OutOfOrder | Refusal::DigestMismatch,
                    ..
                }),
            ) => last = describe(&e),
            Err(e) => return failed(describe(&e)),
        }
    }
    failed(format!(
        "{} attempts failed; the last: {last}",
        child.attempts
    ))
}

fn past_transfer(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Swapping | Phase::Trial | Phase::Committed | Phase::Reverting | Phase::Reverted
    )
}

/// Polls the MCU until its phase is none of `wait_while` (while it resets, swaps or runs
/// its trial it may not answer at all), or the deadline passes.
pub fn watch(
    shared: &Shared,
    child: &ChildConfig,
    sent: Sent,
    wait_while: &[Phase],
) -> Option<Event> {
    let mut sender = None;
    let mut last = String::from("no answer yet");
    loop {
        if shared.cancelled() {
            return None;
        }
        if now() >= sent.deadline {
            return Some(Event::StepFailed(format!(
                "child {} did not commit or revert the update by {} (last: {last})",
                child.id, sent.deadline
            )));
        }
        if sender.is_none() {
            match open(shared, child) {
                Ok(s) => sender = Some(s),
                Err(LinkError::Cancelled) => return None,
                Err(e) => last = e.to_string(),
            }
        }
        if let Some(s) = sender.as_mut() {
            match s.hello() {
                Ok(info) if !wait_while.contains(&info.phase) => {
                    return Some(Event::Observed(seen(&info)));
                }
                Ok(info) => last = format!("{}", info.phase),
                Err(SendError::Io(LinkError::Cancelled)) => return None,
                Err(e @ SendError::Io(_)) => {
                    // The line itself failed (a USB adapter re-enumerating): open it again.
                    last = describe(&e);
                    sender = None;
                }
                Err(e) => last = describe(&e),
            }
        }
        pause(
            shared,
            Duration::from_millis(child.poll_interval_ms),
            sent.deadline,
        );
    }
}

/// Sleeps `wait` (not past `deadline`), watching for a shutdown.
fn pause(shared: &Shared, wait: Duration, deadline: Timestamp) {
    let until = Instant::now() + wait;
    while Instant::now() < until && !shared.cancelled() && now() < deadline {
        std::thread::sleep(CANCEL_SLICE.min(wait));
    }
}
