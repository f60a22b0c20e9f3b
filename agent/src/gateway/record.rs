//! The journal's record of each child (`children` in `journal.json`): the on-disk form of
//! [`Entry`], converted here so the machine's types need no serde.

use serde::{Deserialize, Serialize};
use swell_proto::messages::{ChildRunning, ReleaseRef};
use swell_proto::{DeviceId, HardwareId, Sha256Digest, Timestamp};

use super::machine::{Entry, Job, Sent, State};
use crate::update::Source;

/// One child in the journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChildRecord {
    child: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    update: Option<StateRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    running: Option<ChildRunning>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobRecord {
    hardware: HardwareId,
    command: Option<String>,
    release: ReleaseRef,
    security_version: u64,
    size: u64,
    sha256: Sha256Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    file: Option<std::path::PathBuf>,
    /// The signed manifest, as the JSON text it was verified from.
    manifest: String,
    admitted: Timestamp,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
enum StateRecord {
    Probing {
        job: JobRecord,
    },
    Downloading {
        job: JobRecord,
    },
    Transferring {
        job: JobRecord,
    },
    Installed {
        job: JobRecord,
        image: Sha256Digest,
        deadline: Timestamp,
    },
    Trial {
        job: JobRecord,
        image: Sha256Digest,
        deadline: Timestamp,
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
            hardware: j.hardware.clone(),
            command: j.command.clone(),
            release: j.release.clone(),
            security_version: j.security_version,
            size: j.size,
            sha256: j.sha256,
            url,
            file,
            manifest: String::from_utf8_lossy(&j.manifest).into_owned(),
            admitted: j.admitted,
        }
    }
}

impl JobRecord {
    fn into_job(self, child: &DeviceId) -> Result<Job, String> {
        let source = match (self.url, self.file) {
            (Some(u), None) => Source::Url(u),
            (None, Some(f)) => Source::File(f),
            _ => {
                return Err(format!(
                    "child {child}: a job needs exactly one of url and file"
                ));
            }
        };
        Ok(Job {
            child: child.clone(),
            hardware: self.hardware,
            command: self.command,
            release: self.release,
            security_version: self.security_version,
            size: self.size,
            sha256: self.sha256,
            source,
            manifest: self.manifest.into_bytes(),
            admitted: self.admitted,
        })
    }
}

impl From<&Entry> for ChildRecord {
    fn from(e: &Entry) -> Self {
        let sent = |s: &Sent| (Sha256Digest::from_bytes(s.image), s.deadline);
        let update = e.state.as_ref().map(|s| match s {
            State::Probing(j) => StateRecord::Probing { job: j.into() },
            State::Downloading(j) => StateRecord::Downloading { job: j.into() },
            State::Transferring(j) => StateRecord::Transferring { job: j.into() },
            State::Installed(j, s) => {
                let (image, deadline) = sent(s);
                StateRecord::Installed {
                    job: j.into(),
                    image,
                    deadline,
                }
            }
            State::Trial(j, s) => {
                let (image, deadline) = sent(s);
                StateRecord::Trial {
                    job: j.into(),
                    image,
                    deadline,
                }
            }
            State::Committed(j) => StateRecord::Committed { job: j.into() },
            State::RolledBack(j, r) => StateRecord::RolledBack {
                job: j.into(),
                reason: r.clone(),
            },
            State::Failed(j, r) => StateRecord::Failed {
                job: j.into(),
                reason: r.clone(),
            },
        });
        Self {
            child: e.child.clone(),
            update,
            running: e.running.clone(),
        }
    }
}

impl ChildRecord {
    /// The entry this record describes.
    pub fn into_entry(self) -> Result<Entry, String> {
        let c = &self.child;
        let sent = |image: Sha256Digest, deadline| Sent {
            image: *image.as_bytes(),
            deadline,
        };
        let state = match self.update {
            None => None,
            Some(r) => Some(match r {
                StateRecord::Probing { job } => State::Probing(job.into_job(c)?),
                StateRecord::Downloading { job } => State::Downloading(job.into_job(c)?),
                StateRecord::Transferring { job } => State::Transferring(job.into_job(c)?),
                StateRecord::Installed {
                    job,
                    image,
                    deadline,
                } => State::Installed(job.into_job(c)?, sent(image, deadline)),
                StateRecord::Trial {
                    job,
                    image,
                    deadline,
                } => State::Trial(job.into_job(c)?, sent(image, deadline)),
                StateRecord::Committed { job } => State::Committed(job.into_job(c)?),
                StateRecord::RolledBack { job, reason } => {
                    State::RolledBack(job.into_job(c)?, reason)
                }
                StateRecord::Failed { job, reason } => State::Failed(job.into_job(c)?, reason),
            }),
        };
        Ok(Entry {
            child: self.child,
            state,
            running: self.running,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_proto::{ReleaseName, SemVer};

    /// Every child state survives the record round trip.
    #[test]
    fn round_trips_every_state() {
        let child = DeviceId::new("mcu-1").unwrap();
        let job = Job {
            child: child.clone(),
            hardware: HardwareId::new("sensor-v2").unwrap(),
            command: None,
            release: ReleaseRef {
                name: ReleaseName::new("sensor-fw").unwrap(),
                version: SemVer::new("1.1.0").unwrap(),
            },
            security_version: 2,
            size: 10,
            sha256: Sha256Digest::of(b"x"),
            source: Source::Url("http://127.0.0.1:1/x".into()),
            manifest: br#"{"signed":{}}"#.to_vec(),
            admitted: Timestamp::from_unix(5),
        };
        let sent = Sent {
            image: [3; 32],
            deadline: Timestamp::from_unix(9),
        };
        for state in [
            None,
            Some(State::Probing(job.clone())),
            Some(State::Downloading(job.clone())),
            Some(State::Transferring(job.clone())),
            Some(State::Installed(job.clone(), sent)),
            Some(State::Trial(job.clone(), sent)),
            Some(State::Committed(job.clone())),
            Some(State::RolledBack(job.clone(), "r".into())),
            Some(State::Failed(job.clone(), "f".into())),
        ] {
            let entry = Entry {
                child: child.clone(),
                state,
                running: Some(ChildRunning {
                    release: None,
                    version: None,
                    security_version: 4,
                }),
            };
            let text = serde_json::to_string(&ChildRecord::from(&entry)).unwrap();
            let back: ChildRecord = serde_json::from_str(&text).unwrap();
            assert_eq!(back.into_entry().unwrap(), entry, "{text}");
        }
    }
}
