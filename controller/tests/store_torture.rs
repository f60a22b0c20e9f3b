//! The kill -9 torture test of the store engines (the bar the issue set for choosing one).
//!
//! Scenario, for each engine: a writer process (`store-torture`, see `src/bin`) opens the store
//! and commits the batches of `store::torture` in a loop, printing each batch number once its
//! `commit` has returned. This test kills it with SIGKILL at a random instant (a seeded RNG: 0
//! to 30 ms after the store is open, so kills land mid-commit; one round in ten 0 to 5 ms after
//! the start, so some land while it opens). One round in four then starts a second writer on
//! the crashed store and kills it 0 to 10 ms after its start, inside the engine's crash
//! recovery. Then the test opens the store itself and requires that it opens, that every
//! acknowledged batch is there, that no batch is partly there, and that the counter never goes
//! back. The next writer continues from the counter. A store that will not open is kept under
//! `target/tmp/store-torture-failed-*` and the run goes on with a new one.
//!
//! 40 kills per engine by default (a few seconds); `SWELL_TORTURE_KILLS=200` for the full run
//! behind `docs/adr/0001-embedded-store.md`; `SWELL_TORTURE_SEED=N` to vary the instants. The
//! numbers are printed (run with `--nocapture` to see them).
//!
//! Real sleeps are the point here: the kill must land at an arbitrary instant of a real process
//! doing real I/O, which no paused clock can stand in for.
//!
//! What this does not prove: SIGKILL loses no page-cache data, so a write the engine forgot to
//! fsync survives here and would not survive a power cut. The ADR discusses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use swell_controller::store::{Engine, torture};

const DEFAULT_KILLS: u64 = 40;
const DEFAULT_SEED: u64 = 0x5357_454c_4c00_0001;
/// Longest a writer may take to open a store that was closed cleanly.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// A seeded SplitMix64 stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        torture::mix(self.0)
    }
}

#[derive(Debug, Default)]
struct Stats {
    kills: u64,
    /// Kills before the writer reported the store open.
    kills_while_opening: u64,
    /// Of those, kills of a writer recovering a crashed store.
    kills_while_recovering: u64,
    /// `ack` lines: commits that returned Ok before the kill.
    acknowledged: u64,
    /// Acknowledged batches missing after a reopen (summed over reopens).
    lost: u64,
    /// Batches partly applied (summed over reopens).
    torn: u64,
    /// Reopens that failed.
    open_failures: u64,
    /// Of those, sled's known failure (a half-written `snap.*.generating` left by a kill while
    /// sled wrote a snapshot during its recovery, which sled 0.34.7 then reads as the newest
    /// snapshot and refuses as corrupt; spacejam/sled#1527). Counted and reported; tolerated
    /// unless `SWELL_TORTURE_STRICT=1`, because sled is not the default engine.
    known_sled_snapshot_failures: u64,
    /// Reopens whose counter was below the previous one.
    counter_regressions: u64,
    /// Writers that stopped on their own (an error) instead of being killed.
    writer_errors: u64,
    /// What each failed reopen said, and where the store was kept.
    open_failure_details: Vec<String>,
    recovery: Vec<Duration>,
    commit_micros: Vec<u64>,
    final_counter: u64,
    problems: Vec<String>,
}

fn percentile<T: Copy + Ord>(sorted: &[T], p: usize) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let i = (sorted.len() * p).div_ceil(100).saturating_sub(1);
    Some(sorted[i.min(sorted.len() - 1)])
}

impl Stats {
    fn report(&self, engine: Engine, seed: u64) -> String {
        let mut rec = self.recovery.clone();
        rec.sort();
        let mut lat = self.commit_micros.clone();
        lat.sort();
        let ms =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3));
        let us = |d: Option<u64>| d.map_or("-".into(), |d| format!("{:.2}", d as f64 / 1e3));
        format!(
            "torture {engine}: seed={seed:#x} kills={} (while opening {}, of which recovering {}) \
             acknowledged={} \
             lost={} torn={} open_failures={} (sled#1527: {}) counter_regressions={} \
             writer_errors={} \
             final_counter={} | recovery ms p50={} p99={} max={} | commit ms p50={} p99={} max={} (n={})",
            self.kills,
            self.kills_while_opening,
            self.kills_while_recovering,
            self.acknowledged,
            self.lost,
            self.torn,
            self.open_failures,
            self.known_sled_snapshot_failures,
            self.counter_regressions,
            self.writer_errors,
            self.final_counter,
            ms(percentile(&rec, 50)),
            ms(percentile(&rec, 99)),
            ms(rec.last().copied()),
            us(percentile(&lat, 50)),
            us(percentile(&lat, 99)),
            us(lat.last().copied()),
            lat.len(),
        )
    }

    /// Whether nothing went wrong, apart from sled's known open failure when `tolerate_known`.
    fn is_clean(&self, tolerate_known: bool) -> bool {
        let unexplained_open_failures = if tolerate_known {
            self.open_failures - self.known_sled_snapshot_failures
        } else {
            self.open_failures
        };
        self.lost == 0
            && self.torn == 0
            && unexplained_open_failures == 0
            && self.counter_regressions == 0
            && self.writer_errors == 0
            && self.problems.is_empty()
    }
}

/// Starts a writer and a thread that forwards its stdout lines.
fn spawn_writer(engine: Engine, path: &Path) -> (Child, mpsc::Receiver<String>) {
    // SWELL_TORTURE_WRITER: a copy of the writer, for long runs while the crate is rebuilt.
    let writer = std::env::var_os("SWELL_TORTURE_WRITER")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_store-torture").into());
    let mut child = Command::new(writer)
        .arg(engine.name())
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn store-torture");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// When a writer is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAt {
    /// 0 to 30 ms after it reports the store open: mid-commit.
    Committing,
    /// 0 to 5 ms after it starts: while it opens the store.
    Opening,
    /// 0 to 10 ms after it starts on a store that crashed and was not reopened since: during
    /// the engine's crash recovery or the first commits after it.
    Recovering,
}

/// What a killed writer said before it died.
struct Killed {
    /// `(batch, commit microseconds)` of each acknowledged commit.
    acks: Vec<(u64, u64)>,
    /// The counter it found when it reported the store open, if it got that far.
    ready: Option<u64>,
    /// Its error, if it stopped by itself instead of being killed.
    error: Option<String>,
}

/// Runs a writer on `path` and SIGKILLs it at the instant `at` and `rng` choose.
fn run_and_kill(engine: Engine, path: &Path, at: KillAt, rng: &mut Rng) -> Killed {
    let (mut child, lines) = spawn_writer(engine, path);
    let mut early = Vec::new();
    match at {
        KillAt::Opening => thread::sleep(Duration::from_micros(rng.next() % 5_001)),
        KillAt::Recovering => thread::sleep(Duration::from_micros(rng.next() % 10_001)),
        KillAt::Committing => {
            let deadline = Instant::now() + READY_TIMEOUT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match lines.recv_timeout(left) {
                    Ok(line) => {
                        let ready = line.starts_with("ready ");
                        early.push(line);
                        if ready {
                            break;
                        }
                    }
                    Err(_) => break, // exited or timed out; reported below
                }
            }
            thread::sleep(Duration::from_micros(rng.next() % 30_001));
        }
    }
    // SIGKILL (std's Child::kill sends SIGKILL on Unix).
    let _ = child.kill();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let mut killed = Killed {
        acks: Vec::new(),
        ready: None,
        error: status
            .code()
            .map(|_| format!("writer exited with {status}: {}", stderr.trim())),
    };
    // The reader thread ends at EOF, which the kill guarantees.
    for line in early.into_iter().chain(lines.iter()) {
        let mut parts = line.split(' ');
        match parts.next() {
            Some("ready") => killed.ready = parts.next().and_then(|s| s.parse().ok()),
            Some("ack") => {
                let seq = parts.next().and_then(|s| s.parse().ok()).unwrap();
                let micros = parts.next().and_then(|s| s.parse().ok()).unwrap();
                killed.acks.push((seq, micros));
            }
            _ => panic!("unexpected line from the writer: {line:?}"),
        }
    }
    killed
}

fn torture(engine: Engine, kills: u64, seed: u64) -> Stats {
    // Under target/, on the same disk as the build, not a tmpfs: fsync must mean something.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // A store that fails to open is kept for inspection and the run goes on with a new one
    // (`generation` counts them), so one failure does not end the measurement.
    let mut generation = 0;
    let store_path = |generation: u32| {
        dir.path()
            .join(format!("store-{generation}.{}", engine.name()))
    };
    let mut path = store_path(generation);
    let mut rng = Rng(seed ^ ((engine as u64) << 32));
    let mut stats = Stats::default();
    // The highest batch any writer acknowledged: it must be there at every later reopen.
    let mut acknowledged_high = 0u64;
    let mut last_counter = 0u64;

    let mut round = 0;
    while stats.kills < kills {
        round += 1;
        // Most rounds kill one writer mid-commit; one in ten while it opens the store. One in
        // four then kills a second writer on the crashed store before this test reopens it, so
        // some kills land in the middle of crash recovery.
        let first = if rng.next().is_multiple_of(10) {
            KillAt::Opening
        } else {
            KillAt::Committing
        };
        let mut plan = vec![first];
        if rng.next().is_multiple_of(4) && stats.kills + 1 < kills {
            plan.push(KillAt::Recovering);
        }
        let mut how = Vec::new();
        for at in plan {
            let killed = run_and_kill(engine, &path, at, &mut rng);
            stats.kills += 1;
            how.push(format!(
                "{at:?} ({})",
                if killed.ready.is_some() {
                    "after open"
                } else {
                    "before open"
                }
            ));
            // What a writer read after a crash must stay, as an acknowledged batch must (and
            // it may include the unacknowledged last batch of the writer killed before it).
            if let Some(c) = killed.ready {
                acknowledged_high = acknowledged_high.max(c);
            } else {
                stats.kills_while_opening += 1;
                if at == KillAt::Recovering {
                    stats.kills_while_recovering += 1;
                }
            }
            if let Some(e) = killed.error {
                stats.writer_errors += 1;
                stats.problems.push(format!("round {round}: {e}"));
            }
            for (seq, micros) in killed.acks {
                stats.acknowledged += 1;
                stats.commit_micros.push(micros);
                acknowledged_high = acknowledged_high.max(seq);
            }
        }

        let t = Instant::now();
        let store = match engine.open(&path) {
            Ok(s) => s,
            Err(e) => {
                stats.open_failures += 1;
                let half_written_snapshot = engine == Engine::Sled
                    && std::fs::read_dir(&path).is_ok_and(|entries| {
                        entries.flatten().any(|f| {
                            let name = f.file_name();
                            let name = name.to_string_lossy();
                            name.starts_with("snap.") && name.ends_with(".generating")
                        })
                    });
                if half_written_snapshot {
                    stats.known_sled_snapshot_failures += 1;
                }
                let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                    "store-torture-failed-{}-seed{seed:x}-round{round}",
                    engine.name()
                ));
                let _ = std::fs::remove_dir_all(&kept);
                let _ = std::fs::create_dir_all(&kept);
                let _ = std::fs::rename(&path, kept.join(path.file_name().unwrap()));
                let mut msg = format!(
                    "round {round}, after kills {}: reopen failed: {e}",
                    how.join(", ")
                );
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(&format!(": {s}"));
                    src = s.source();
                }
                msg.push_str(&format!(" (store kept in {})", kept.display()));
                stats.open_failure_details.push(msg);
                generation += 1;
                path = store_path(generation);
                acknowledged_high = 0;
                last_counter = 0;
                continue;
            }
        };
        stats.recovery.push(t.elapsed());
        let verdict = torture::verify(&*store, acknowledged_high).unwrap();
        stats.lost += verdict.lost;
        stats.torn += verdict.torn;
        if verdict.counter < last_counter {
            stats.counter_regressions += 1;
        }
        for p in verdict.problems.iter().take(5) {
            stats.problems.push(format!("round {round}: {p}"));
        }
        last_counter = verdict.counter;
        // From here on the store's counter is the floor: a batch seen after a reopen must stay,
        // acknowledged or not, and a lost one is counted once (later writers write it again).
        acknowledged_high = verdict.counter;
        stats.final_counter = verdict.counter;
    }
    stats
}

fn run(engine: Engine) {
    let kills = env_u64("SWELL_TORTURE_KILLS", DEFAULT_KILLS);
    let seed = env_u64("SWELL_TORTURE_SEED", DEFAULT_SEED);
    let stats = torture(engine, kills, seed);
    let report = stats.report(engine, seed);
    eprintln!("{report}");
    for p in stats
        .open_failure_details
        .iter()
        .chain(&stats.problems)
        .take(20)
    {
        eprintln!("  {p}");
    }
    assert!(
        stats.acknowledged > 0,
        "no commit was acknowledged: {report}"
    );
    let strict = std::env::var_os("SWELL_TORTURE_STRICT").is_some_and(|v| v == "1");
    assert!(stats.is_clean(!strict), "{report}");
}

/// redb keeps every acknowledged batch, whole, and opens after every kill.
#[test]
fn redb_survives_kill_9() {
    run(Engine::Redb);
}

/// The same for sled, which has one known way to fail to open after a kill (see
/// `Stats::known_sled_snapshot_failures`); it is reported, and fails the test only with
/// `SWELL_TORTURE_STRICT=1`. Any other failure fails it.
#[test]
fn sled_survives_kill_9() {
    run(Engine::Sled);
}
