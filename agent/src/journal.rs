//! The journal: the one place the agent's persisted state lives.
//!
//! Everything that must survive a power cut is one JSON file, `journal.json`, replaced
//! atomically (write a temp file, fsync it, rename it over the old one, fsync the directory).
//! State, slot contents, counters and the outbox of unsent reports are in the same file, so a
//! state change and the report that tells the controller about it are persisted together or
//! not at all.
//!
//! The on-disk record types derive serde; the state machine's types do not, and convert here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use swell_proto::messages::{ReleaseRef, Running, Slot};
use swell_proto::topics::DeviceTopic;
use swell_proto::{Sha256Digest, Timestamp};

use crate::faults;
use crate::update::{BootId, Job, Source, State};

/// The journal file's name in the data directory.
pub const FILE_NAME: &str = "journal.json";

/// The journal format this build writes and reads.
const FORMAT: u32 = 1;

/// Most reports kept while the broker is unreachable. An update produces under ten; a device
/// offline through many commands keeps the newest ones, which carry its current state.
pub const MAX_OUTBOX: usize = 256;

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file exists but is not a journal this build can read.
    #[error("journal {path} is corrupt or from an unknown format: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// What a slot holds, as far as the agent knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotImage {
    /// The release written there.
    pub release: ReleaseRef,
    /// Its anti-rollback counter.
    pub security_version: u64,
    /// The image's digest.
    pub sha256: Sha256Digest,
    /// The image's size.
    pub size: u64,
    /// Whether the image was verified after writing and has not been written since.
    pub verified: bool,
}

/// A message waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Which of the device's topics.
    pub topic: DeviceTopic,
    /// The signed envelope.
    pub payload: Vec<u8>,
}

/// Everything the agent persists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// The update state.
    pub state: State,
    /// What each slot holds (`[a, b]`).
    pub slots: [Option<SlotImage>; 2],
    /// The committed anti-rollback counter; releases below it are refused.
    pub security_version: u64,
    /// The sequence number of the last controller command accepted.
    pub last_command_seq: u64,
    /// Raised once per agent start; the high bits of every sequence number the device sends
    /// (see [`crate::signer`]).
    pub epoch: u64,
    /// Reports not yet acknowledged by the broker, oldest first.
    pub outbox: Vec<Outgoing>,
    /// The child devices behind this gateway that it has updated (see [`crate::gateway`]).
    pub children: Vec<crate::gateway::Entry>,
}

impl Persisted {
    /// The state of a device that has never updated.
    pub fn fresh() -> Self {
        Self {
            state: State::Idle,
            slots: [None, None],
            security_version: 0,
            last_command_seq: 0,
            epoch: 0,
            outbox: Vec::new(),
            children: Vec::new(),
        }
    }

    /// What slot `slot` holds.
    pub fn slot(&self, slot: Slot) -> Option<&SlotImage> {
        self.slots[slot_index(slot)].as_ref()
    }

    /// Records what slot `slot` holds.
    pub fn set_slot(&mut self, slot: Slot, image: Option<SlotImage>) {
        self.slots[slot_index(slot)] = image;
    }

    /// Queues a message, dropping the oldest beyond [`MAX_OUTBOX`].
    pub fn enqueue(&mut self, message: Outgoing) {
        self.outbox.push(message);
        if self.outbox.len() > MAX_OUTBOX {
            let excess = self.outbox.len() - MAX_OUTBOX;
            self.outbox.drain(..excess);
        }
    }
}

fn slot_index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

/// The journal in a data directory.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
}

impl Journal {
    /// The journal in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        fs::create_dir_all(dir).map_err(|source| JournalError::Io {
            op: "creating data directory",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            path: dir.join(FILE_NAME),
        })
    }

    /// Reads the journal; `None` on a device's first start.
    pub fn load(&self) -> Result<Option<Persisted>, JournalError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(JournalError::Io {
                    op: "reading",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let corrupt = |detail: String| JournalError::Corrupt {
            path: self.path.clone(),
            detail,
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if record.format != FORMAT {
            return Err(corrupt(format!(
                "format {} (this build reads {FORMAT})",
                record.format
            )));
        }
        record.into_persisted().map(Some).map_err(corrupt)
    }

    /// Replaces the journal atomically with `p`.
    pub fn store(&self, p: &Persisted) -> Result<(), JournalError> {
        let bytes = serde_json::to_vec(&Record::from(p)).map_err(|e| JournalError::Corrupt {
            path: self.path.clone(),
            detail: format!("cannot encode: {e}"),
        })?;
        write_atomic(&self.dir, &self.path, &bytes)
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Replaces `path` (in directory `dir`) with `bytes`: temp file, fsync, rename, fsync of the
/// directory. A power cut at any instant leaves either the old or the new content.
pub fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| JournalError::Io { op, path, source }
    };
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    faults::durable_write("journal temp file");
    file.write_all(bytes).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io("renaming into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))?;
    faults::durable_write("journal rename");
    Ok(())
}

// ---- On-disk records ---------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: u32,
    state: StateRecord,
    slot_a: Option<SlotImage>,
    slot_b: Option<SlotImage>,
    security_version: u64,
    last_command_seq: u64,
    epoch: u64,
    outbox: Vec<OutgoingRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    children: Vec<crate::gateway::ChildRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutgoingRecord {
    topic: String,
    payload: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRecord {
    command: Option<String>,
    release: ReleaseRef,
    security_version: u64,
    size: u64,
    sha256: Sha256Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
    slot: Slot,
    previous: Running,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
enum StateRecord {
    Idle,
    Downloading {
        job: JobRecord,
    },
    Verifying {
        job: JobRecord,
    },
    Installed {
        job: JobRecord,
        /// Absent while the trial is being armed (see `State::Installed`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        armed_boot: Option<String>,
    },
    Trial {
        job: JobRecord,
        deadline: Timestamp,
    },
    Reverting {
        job: JobRecord,
        armed_boot: String,
        reason: String,
    },
    Committed {
        job: JobRecord,
    },
    RolledBack {
        job: JobRecord,
        reason: String,
    },
    Failed {
        job: JobRecord,
        reason: String,
    },
}

impl From<&Job> for JobRecord {
    fn from(j: &Job) -> Self {
        let (url, file) = match &j.source {
            Source::Url(u) => (Some(u.clone()), None),
            Source::File(f) => (None, Some(f.clone())),
        };
        Self {
            command: j.command.clone(),
            release: j.release.clone(),
            security_version: j.security_version,
            size: j.size,
            sha256: j.sha256,
            url,
            file,
            slot: j.slot,
            previous: j.previous.clone(),
        }
    }
}

impl JobRecord {
    fn into_job(self) -> Result<Job, String> {
        let source = match (self.url, self.file) {
            (Some(u), None) => Source::Url(u),
            (None, Some(f)) => Source::File(f),
            _ => return Err(String::from("a job needs exactly one of url and file")),
        };
        Ok(Job {
            command: self.command,
            release: self.release,
            security_version: self.security_version,
            size: self.size,
            sha256: self.sha256,
            source,
            slot: self.slot,
            previous: self.previous,
        })
    }
}

impl From<&State> for StateRecord {
    fn from(s: &State) -> Self {
        match s {
            State::Idle => Self::Idle,
            State::Downloading(j) => Self::Downloading { job: j.into() },
            State::Verifying(j) => Self::Verifying { job: j.into() },
            State::Installed(j, b) => Self::Installed {
                job: j.into(),
                armed_boot: b.as_ref().map(|b| b.0.clone()),
            },
            State::Trial(j, d) => Self::Trial {
                job: j.into(),
                deadline: *d,
            },
            State::Reverting(j, b, r) => Self::Reverting {
                job: j.into(),
                armed_boot: b.0.clone(),
                reason: r.clone(),
            },
            State::Committed(j) => Self::Committed { job: j.into() },
            State::RolledBack(j, r) => Self::RolledBack {
                job: j.into(),
                reason: r.clone(),
            },
            State::Failed(j, r) => Self::Failed {
                job: j.into(),
                reason: r.clone(),
            },
        }
    }
}

impl StateRecord {
    fn into_state(self) -> Result<State, String> {
        Ok(match self {
            Self::Idle => State::Idle,
            Self::Downloading { job } => State::Downloading(job.into_job()?),
            Self::Verifying { job } => State::Verifying(job.into_job()?),
            Self::Installed { job, armed_boot } => {
                State::Installed(job.into_job()?, armed_boot.map(BootId))
            }
            Self::Trial { job, deadline } => State::Trial(job.into_job()?, deadline),
            Self::Reverting {
                job,
                armed_boot,
                reason,
            } => State::Reverting(job.into_job()?, BootId(armed_boot), reason),
            Self::Committed { job } => State::Committed(job.into_job()?),
            Self::RolledBack { job, reason } => State::RolledBack(job.into_job()?, reason),
            Self::Failed { job, reason } => State::Failed(job.into_job()?, reason),
        })
    }
}

impl From<&Persisted> for Record {
    fn from(p: &Persisted) -> Self {
        Self {
            format: FORMAT,
            state: (&p.state).into(),
            slot_a: p.slots[0].clone(),
            slot_b: p.slots[1].clone(),
            security_version: p.security_version,
            last_command_seq: p.last_command_seq,
            epoch: p.epoch,
            outbox: p
                .outbox
                .iter()
                .map(|o| OutgoingRecord {
                    topic: o.topic.suffix().to_string(),
                    payload: String::from_utf8_lossy(&o.payload).into_owned(),
                })
                .collect(),
            children: p.children.iter().map(Into::into).collect(),
        }
    }
}

impl Record {
    fn into_persisted(self) -> Result<Persisted, String> {
        let outbox = self
            .outbox
            .into_iter()
            .map(|o| {
                let topic = DeviceTopic::ALL
                    .into_iter()
                    .find(|t| t.suffix() == o.topic)
                    .ok_or_else(|| format!("unknown outbox topic {:?}", o.topic))?;
                Ok(Outgoing {
                    topic,
                    payload: o.payload.into_bytes(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Persisted {
            state: self.state.into_state()?,
            slots: [self.slot_a, self.slot_b],
            security_version: self.security_version,
            last_command_seq: self.last_command_seq,
            epoch: self.epoch,
            outbox,
            children: self
                .children
                .into_iter()
                .map(crate::gateway::ChildRecord::into_entry)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_proto::{ReleaseName, SemVer};

    fn job() -> Job {
        Job {
            command: None,
            release: ReleaseRef {
                name: ReleaseName::new("os").unwrap(),
                version: SemVer::new("1.2.3").unwrap(),
            },
            security_version: 2,
            size: 10,
            sha256: Sha256Digest::of(b"x"),
            source: Source::File("/tmp/image".into()),
            slot: Slot::B,
            previous: Running {
                release: None,
                version: None,
                slot: Slot::A,
                security_version: 1,
            },
        }
    }

    /// Every state survives a store/load round trip unchanged, with slots, counters and
    /// outbox.
    #[test]
    fn round_trips_every_state() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        assert_eq!(journal.load().unwrap(), None);
        let j = job();
        let b = BootId("boot-1".into());
        for state in [
            State::Idle,
            State::Downloading(j.clone()),
            State::Verifying(j.clone()),
            State::Installed(j.clone(), None),
            State::Installed(j.clone(), Some(b.clone())),
            State::Trial(j.clone(), Timestamp::from_unix(99)),
            State::Reverting(j.clone(), b.clone(), "probe failed".into()),
            State::Committed(j.clone()),
            State::RolledBack(j.clone(), "r".into()),
            State::Failed(j.clone(), "f".into()),
        ] {
            let mut p = Persisted::fresh();
            p.state = state;
            p.set_slot(
                Slot::B,
                Some(SlotImage {
                    release: j.release.clone(),
                    security_version: 2,
                    sha256: j.sha256,
                    size: 10,
                    verified: true,
                }),
            );
            p.epoch = 7;
            p.enqueue(Outgoing {
                topic: DeviceTopic::Report,
                payload: b"{\"a\":1}".to_vec(),
            });
            journal.store(&p).unwrap();
            assert_eq!(journal.load().unwrap(), Some(p));
        }
        assert!(!journal.path().with_extension("tmp").exists());
    }

    /// A journal that is not valid JSON is reported as corrupt with its path, never silently
    /// replaced by a fresh state.
    #[test]
    fn corrupt_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        fs::write(journal.path(), b"{\"format\":1,").unwrap();
        let e = journal.load().unwrap_err().to_string();
        assert!(e.contains("journal.json") && e.contains("corrupt"), "{e}");
    }

    /// The outbox keeps the newest messages when it overflows.
    #[test]
    fn outbox_is_bounded() {
        let mut p = Persisted::fresh();
        for i in 0..(MAX_OUTBOX + 5) {
            p.enqueue(Outgoing {
                topic: DeviceTopic::Report,
                payload: i.to_string().into_bytes(),
            });
        }
        assert_eq!(p.outbox.len(), MAX_OUTBOX);
        assert_eq!(p.outbox[0].payload, b"5");
    }
}
