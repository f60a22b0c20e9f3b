//! The writer of the store's kill -9 torture test (`tests/store_torture.rs`); not an operator
//! tool.
//!
//! `store-torture ENGINE PATH [COUNT]` opens the store, prints `ready COUNTER` once it is
//! open, then commits batch after batch of `swell_controller::store::torture`, printing
//! `ack SEQ MICROS` (the batch number and how long `commit` took) after each `commit` returns,
//! and flushing stdout each time, until it is killed, or, given COUNT, until it has committed
//! COUNT batches (to measure commit latency without kills).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use swell_controller::store::{Engine, torture};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("store-torture: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (engine, path, count) = match args.as_slice() {
        [engine, path] => (engine, path, u64::MAX),
        [engine, path, count] => (engine, path, count.parse().context("COUNT")?),
        _ => bail!("usage: store-torture redb|sled PATH [COUNT]"),
    };
    let Some(engine) = Engine::from_name(engine) else {
        bail!("unknown engine {engine:?}; expected redb or sled");
    };
    let path = PathBuf::from(path);
    let store = engine.open(&path)?;
    let start = torture::counter(&*store)?
        .map_err(anyhow::Error::msg)
        .context("reading the counter")?;

    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {start}")?;
    out.flush()?;
    for seq in start + 1..=start.saturating_add(count) {
        let batch = torture::batch(seq);
        let t = Instant::now();
        store
            .commit(&batch)
            .with_context(|| format!("committing batch {seq}"))?;
        let micros = t.elapsed().as_micros();
        writeln!(out, "ack {seq} {micros}")?;
        out.flush()?;
    }
    Ok(())
}
