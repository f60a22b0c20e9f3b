//! Agent install throughput: the real install path (`fetch_into_slot` over HTTP into a slot
//! file, then `verify_slot`) against `sha256sum` of the same file, with the installer's peak
//! memory.
//!
//! Run with `cargo bench -p swell-agent --bench install`. The image is 256 MiB of
//! pseudo-random bytes served by the test HTTP server on 127.0.0.1; each install runs in a
//! child process (this binary re-executed with `--child`), which reports its peak RSS
//! (`VmHWM`) when done, so the server's copy of the image does not count. Results are
//! recorded in docs/benchmarks.md.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use swell_agent::download::{FetchOptions, FetchRequest, fetch_into_slot};
use swell_agent::slots::{SlotPath, verify_slot};
use swell_agent::update::Source;
use swell_proto::Sha256Digest;
use swell_proto::messages::Slot;

const MIB: usize = 1024 * 1024;
const SIZE: usize = 256 * MIB;
const RUNS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(&args[2..]);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = support::image(SIZE, 0x5eed);
    let digest = Sha256Digest::of(&image);
    let file = dir.path().join("image.bin");
    std::fs::write(&file, &image).unwrap();
    let server = support::TestServer::start(image, support::Behaviour::Normal);
    // Warm the page cache for the file that sha256sum reads.
    sha256sum(&file);

    let mut hash_times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = sha256sum(&file);
        hash_times.push(start.elapsed());
        assert!(out.starts_with(&digest.to_hex()), "sha256sum printed {out}");
    }

    // The hashing ceiling: OpenSSL's SHA-256 uses SHA-NI like the sha2 crate does, while
    // coreutils' sha256sum (without OpenSSL) does not. Skipped when openssl is absent.
    let mut openssl_times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let Ok(out) = Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(&file)
            .output()
        else {
            break;
        };
        openssl_times.push(start.elapsed());
        assert!(String::from_utf8_lossy(&out.stdout).contains(&digest.to_hex()));
    }

    let mut install_times = Vec::new();
    let mut fetch_times = Vec::new();
    let mut verify_times = Vec::new();
    let mut peaks = Vec::new();
    for run in 0..RUNS {
        let run_dir = dir.path().join(format!("run{run}"));
        std::fs::create_dir(&run_dir).unwrap();
        let start = Instant::now();
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--child",
                &server.url(),
                &SIZE.to_string(),
                &digest.to_hex(),
            ])
            .arg(&run_dir)
            .output()
            .unwrap();
        install_times.push(start.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<u64> = report
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        fetch_times.push(Duration::from_nanos(fields[0]));
        verify_times.push(Duration::from_nanos(fields[1]));
        peaks.push(fields[2]);
        std::fs::remove_dir_all(&run_dir).unwrap();
    }

    let mib = (SIZE / MIB) as f64;
    let rate = |d: Duration| mib / d.as_secs_f64();
    let hash = median(&mut hash_times);
    let install = median(&mut install_times);
    println!(
        "Agent install throughput: {} MiB image, {RUNS} runs each, medians",
        SIZE / MIB
    );
    println!(
        "  sha256sum            {:>8.3} s  {:>7.1} MiB/s",
        hash.as_secs_f64(),
        rate(hash)
    );
    if !openssl_times.is_empty() {
        let t = median(&mut openssl_times);
        println!(
            "  openssl dgst -sha256 {:>8.3} s  {:>7.1} MiB/s",
            t.as_secs_f64(),
            rate(t)
        );
    }
    println!(
        "  install (child)      {:>8.3} s  {:>7.1} MiB/s",
        install.as_secs_f64(),
        rate(install)
    );
    println!(
        "    fetch_into_slot    {:>8.3} s  {:>7.1} MiB/s",
        median(&mut fetch_times).as_secs_f64(),
        rate(median(&mut fetch_times))
    );
    println!(
        "    verify_slot        {:>8.3} s  {:>7.1} MiB/s",
        median(&mut verify_times).as_secs_f64(),
        rate(median(&mut verify_times))
    );
    println!(
        "  ratio install/sha256sum (throughput) {:.2}",
        rate(install) / rate(hash)
    );
    peaks.sort_unstable();
    println!(
        "  installer peak RSS (VmHWM): median {} KiB, max {} KiB",
        peaks[RUNS / 2],
        peaks[RUNS - 1]
    );
}

fn sha256sum(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

/// The child: installs the image into `DIR/b.img` and prints the fetch and verify times in
/// nanoseconds and its peak RSS in KiB.
fn child(args: &[String]) {
    let [url, size, sha256, dir] = args else {
        panic!("usage: --child URL SIZE SHA256 DIR")
    };
    let dir = PathBuf::from(dir);
    let active = dir.join("a.img");
    std::fs::write(&active, b"the running system").unwrap();
    let req = FetchRequest {
        source: Source::Url(url.clone()),
        size: size.parse().unwrap(),
        sha256: Sha256Digest::from_hex(sha256).unwrap(),
        slot: SlotPath::new(Slot::B, dir.join("b.img")),
        active,
        checkpoint: dir.join(swell_agent::download::CHECKPOINT_FILE),
        options: FetchOptions::default(),
    };
    let start = Instant::now();
    fetch_into_slot(&req, &AtomicBool::new(false), &mut |_, _| {}).unwrap();
    let fetched = start.elapsed();
    verify_slot(&req.slot, req.size, &req.sha256).unwrap();
    let verified = start.elapsed() - fetched;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap();
    println!("{} {} {hwm}", fetched.as_nanos(), verified.as_nanos());
}
