//! Health signals: what the device observed in each interval, batched, signed and queued on
//! disk for the controller's comparison of updated devices with not-yet-updated ones.
//!
//! | Field of a batch | Where it comes from |
//! |---|---|
//! | `counters.reboots` | the boot id changed since the agent last ran, and no update asked for the reboot (the journal was not `Installed` or `Reverting`); counted in the first batch of the boot |
//! | `counters.restarts` | the agent started again within one boot (it crashed or was restarted) |
//! | `counters.crashes` | `[[signals.service]]`: the growth of each watched service's cumulative crash count (its `crashes` command's output, e.g. systemd's `NRestarts`), read once per interval; 0 without watched services |
//! | `counters.health_check_failures` | failed rounds of the `[health]` checks, one round run per interval |
//! | `gauges.memory_kib` | `/proc/meminfo`: `MemTotal - MemAvailable` at the end of the interval |
//! | `gauges.cpu_permille` | `/proc/stat`: busy share of all CPU time between the interval's ends |
//! | `gauges.boot_time_s` | `/proc/uptime` when the agent started (absent on the simulated board, whose kernel is the host's) |
//! | `metrics` | `[signals] metrics_file`: `name value` lines an application rewrites, read at the end of the interval |
//! | `signatures` | lines of the `[[signals.log]]` files containing one of their patterns, templated ([`swell_proto::signals`]) and counted |
//!
//! The pieces: [`logs`] follows files, [`system`] parses `/proc`, [`queue`] keeps signed
//! batches on disk; [`Collector`] folds observations into the next batch. The driver polls
//! the collector every tick, and at the end of each interval signs the batch, queues it and
//! hands the session a few queued batches at a time.

pub mod logs;
pub mod queue;
pub mod system;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use swell_proto::limits::{MAX_BATCH_METRICS, MAX_BATCH_SIGNATURES};
use swell_proto::messages::{Counters, Gauges, Running, Signals, SignatureCount, is_metric_name};
use swell_proto::signals::{Signature, SignatureId};
use swell_proto::{DeviceId, Timestamp};

use crate::config::SignalsConfig;
use crate::journal::{JournalError, write_atomic};
use logs::LogTail;

/// Distinct signatures tracked within one interval. Only the [`MAX_BATCH_SIGNATURES`] most
/// frequent are sent; the bound keeps a flood of distinct lines from growing memory.
const MAX_TRACKED_SIGNATURES: usize = 1024;

/// The file in the queue directory that holds the boot id the agent last ran in.
const BOOT_FILE: &str = "boot";

/// What the start of this agent says about reboots and restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StartFacts {
    /// The device rebooted since the agent last ran, and no update asked for it.
    pub reboot: bool,
    /// The agent ran before in this same boot.
    pub restart: bool,
}

/// Compares `boot_id` with the one recorded in `dir` by the previous start, and records it.
/// `update_reboot`: the journal says an update asked for this boot. On a device's first start
/// nothing is counted.
pub fn start_facts(
    dir: &Path,
    boot_id: &str,
    update_reboot: bool,
) -> Result<StartFacts, JournalError> {
    std::fs::create_dir_all(dir).map_err(|source| JournalError::Io {
        op: "creating",
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(BOOT_FILE);
    let previous = std::fs::read_to_string(&path).ok();
    let facts = match previous.as_deref().map(str::trim) {
        None => StartFacts::default(),
        Some(p) if p == boot_id => StartFacts {
            reboot: false,
            restart: true,
        },
        Some(_) => StartFacts {
            reboot: !update_reboot,
            restart: false,
        },
    };
    if previous.as_deref().map(str::trim) != Some(boot_id) {
        write_atomic(dir, &path, boot_id.as_bytes())?;
    }
    Ok(facts)
}

/// One log file and the patterns that make a line count.
#[derive(Debug)]
struct Source {
    tail: LogTail,
    patterns: Vec<String>,
}

/// Folds observations into the next batch.
#[derive(Debug)]
pub struct Collector {
    sources: Vec<Source>,
    metrics_file: Option<PathBuf>,
    signatures: BTreeMap<SignatureId, (u64, String)>,
    pending: Counters,
    health_failures: Arc<AtomicU64>,
    crashes: Arc<AtomicU64>,
    cpu: Option<(u64, u64)>,
    boot_time_s: Option<u64>,
    boot: String,
    start: Timestamp,
}

impl Collector {
    /// Starts collecting at `now`: log files are followed from their current ends, and the
    /// first batch carries `facts`.
    pub fn new(
        config: &SignalsConfig,
        boot: &str,
        facts: StartFacts,
        boot_time_s: Option<u64>,
        now: Timestamp,
    ) -> Collector {
        Collector {
            sources: config
                .logs
                .iter()
                .map(|l| Source {
                    tail: LogTail::from_end(&l.path),
                    patterns: l.patterns.clone(),
                })
                .collect(),
            metrics_file: config.metrics_file.clone(),
            signatures: BTreeMap::new(),
            pending: Counters {
                reboots: u64::from(facts.reboot),
                restarts: u64::from(facts.restart),
                ..Counters::default()
            },
            health_failures: Arc::default(),
            crashes: Arc::default(),
            cpu: system::read("/proc/stat").and_then(|s| system::cpu_times(&s)),
            boot_time_s,
            boot: boot.to_string(),
            start: now,
        }
    }

    /// The counter a round of health checks adds its failure to.
    pub fn health_failures(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.health_failures)
    }

    /// The counter the watched services' crash polls add to.
    pub fn crashes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.crashes)
    }

    /// Reads what the log files got since the last poll.
    pub fn poll_logs(&mut self) {
        let signatures = &mut self.signatures;
        for source in &mut self.sources {
            let patterns = &source.patterns;
            source.tail.poll(&mut |line| {
                if patterns.iter().any(|p| line.contains(p.as_str())) {
                    count_line(signatures, line);
                }
            });
        }
    }

    /// Counts one log line that matched a pattern (the log sources call this).
    pub fn count_line(&mut self, line: &str) {
        count_line(&mut self.signatures, line);
    }

    /// Ends the interval at `now` and starts the next: the batch of what was observed.
    /// `dropped` is how many older batches the queue dropped to make room.
    pub fn finish(
        &mut self,
        device: &DeviceId,
        running: Running,
        dropped: u64,
        now: Timestamp,
    ) -> Signals {
        self.poll_logs();
        let cpu = system::read("/proc/stat").and_then(|s| system::cpu_times(&s));
        let cpu_permille = match (self.cpu, cpu) {
            (Some(before), Some(after)) => system::cpu_permille(before, after),
            _ => None,
        };
        self.cpu = cpu;
        let mut counters = std::mem::take(&mut self.pending);
        counters.health_check_failures = self.health_failures.swap(0, Ordering::SeqCst);
        counters.crashes = self.crashes.swap(0, Ordering::SeqCst);
        let start = std::mem::replace(&mut self.start, now);
        Signals {
            device: device.clone(),
            issued: now,
            boot: self.boot.clone(),
            running,
            start: start.min(now),
            end: now,
            counters,
            gauges: Gauges {
                memory_kib: system::read("/proc/meminfo")
                    .and_then(|m| system::memory_in_use_kib(&m)),
                cpu_permille,
                boot_time_s: self.boot_time_s,
            },
            metrics: self
                .metrics_file
                .as_deref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .map(|text| parse_metrics(&text))
                .unwrap_or_default(),
            signatures: take_top(&mut self.signatures),
            dropped,
        }
    }
}

fn count_line(signatures: &mut BTreeMap<SignatureId, (u64, String)>, line: &str) {
    let sig = Signature::of_line(line);
    if let Some((count, _)) = signatures.get_mut(&sig.id) {
        *count += 1;
    } else if signatures.len() < MAX_TRACKED_SIGNATURES {
        signatures.insert(sig.id, (1, sig.example));
    }
}

/// The [`MAX_BATCH_SIGNATURES`] most frequent signatures (ties by id), emptying `signatures`.
fn take_top(signatures: &mut BTreeMap<SignatureId, (u64, String)>) -> Vec<SignatureCount> {
    let mut all: Vec<SignatureCount> = std::mem::take(signatures)
        .into_iter()
        .map(|(id, (count, example))| SignatureCount { id, count, example })
        .collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    all.truncate(MAX_BATCH_SIGNATURES);
    all.sort_by_key(|s| s.id);
    all
}

/// How long a watched service's `crashes` command may take.
const SERVICE_COMMAND_SECS: u64 = 5;

/// A watched service and its last cumulative crash count.
#[derive(Debug, Clone)]
pub struct Service {
    watch: crate::config::ServiceWatch,
    last: Arc<std::sync::Mutex<Option<u64>>>,
}

impl Service {
    /// Watches `watch`; its first reading is only a starting point.
    pub fn new(watch: crate::config::ServiceWatch) -> Service {
        Service {
            watch,
            last: Arc::default(),
        }
    }

    /// Runs the service's `crashes` command and adds the growth of its count since the last
    /// reading to `crashes`. A count that went down (the service manager restarted) starts
    /// again from the new value; a command that fails or prints no number adds nothing and is
    /// reported on standard error.
    pub async fn poll(&self, crashes: &AtomicU64) {
        let Some((program, args)) = self.watch.crashes.split_first() else {
            return;
        };
        let output = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let timeout = std::time::Duration::from_secs(SERVICE_COMMAND_SECS);
        let count = match tokio::time::timeout(timeout, output).await {
            Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<u64>()
                .ok(),
            _ => None,
        };
        let Some(count) = count else {
            eprintln!(
                "swell-agent: service {}: `{}` gave no crash count",
                self.watch.name,
                self.watch.crashes.join(" ")
            );
            return;
        };
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(before) = *last {
            crashes.fetch_add(count.saturating_sub(before), Ordering::SeqCst);
        }
        *last = Some(count);
    }
}

/// `name value` lines; lines that are not a valid name and an integer are skipped, and at
/// most [`MAX_BATCH_METRICS`] are kept.
pub fn parse_metrics(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.trim().split_once(char::is_whitespace)?;
            let value: i64 = value.trim().parse().ok()?;
            is_metric_name(name).then(|| (name.to_string(), value))
        })
        .take(MAX_BATCH_METRICS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reboot and restart facts from the recorded boot id.
    #[test]
    fn start_facts_follow_the_boot_id() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(start_facts(d, "b1", false).unwrap(), StartFacts::default());
        assert!(start_facts(d, "b1", false).unwrap().restart);
        assert!(start_facts(d, "b2", false).unwrap().reboot);
        assert_eq!(start_facts(d, "b3", true).unwrap(), StartFacts::default());
    }

    /// A watched service's crashes are the growth of its cumulative count; a reset starts
    /// again from the new value.
    #[tokio::test]
    async fn service_crashes_are_increments() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n");
        let service = Service::new(crate::config::ServiceWatch {
            name: "app".into(),
            crashes: vec!["cat".into(), file.display().to_string()],
        });
        let crashes = AtomicU64::new(0);
        for (count, total) in [("3", 0), ("5\n", 2), ("1", 2), ("2", 3), ("x", 3), ("4", 5)] {
            std::fs::write(&file, count).unwrap();
            service.poll(&crashes).await;
            assert_eq!(crashes.load(Ordering::SeqCst), total, "after {count:?}");
        }
    }

    #[test]
    fn metrics_file_lines() {
        let m = parse_metrics("queue_depth 17\nBad 1\nx notanumber\n  temp_c  -3 \n");
        assert_eq!(m.len(), 2);
        assert_eq!((m["queue_depth"], m["temp_c"]), (17, -3));
    }

    /// More distinct signatures than a batch holds: the most frequent are kept.
    #[test]
    fn keeps_the_most_frequent_signatures() {
        let mut map = BTreeMap::new();
        for n in 0..100usize {
            for _ in 0..=n {
                count_line(&mut map, &format!("ERROR case{} failed", "x".repeat(n)));
            }
        }
        let top = take_top(&mut map);
        assert_eq!(top.len(), MAX_BATCH_SIGNATURES);
        assert!(
            top.iter()
                .all(|s| s.count > 100 - MAX_BATCH_SIGNATURES as u64)
        );
        assert!(map.is_empty());
    }
}
