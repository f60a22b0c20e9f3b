//! Power cuts under the default engine (redb), simulated where kill -9 cannot reach: the disk's
//! write-back cache.
//!
//! SIGKILL (`store_torture.rs`) loses nothing the process handed to the kernel, so it cannot
//! catch an engine that forgets an fsync or relies on write order. Here the store runs on a
//! simulated disk (a redb storage backend) that keeps what was synced apart from what was
//! only written. A power cut just before operation `i` (every write, resize and sync counts)
//! leaves the disk as of the last sync plus an arbitrary selection of the later writes: each
//! dropped, kept, or torn at 512-byte sectors, in any combination, so writes are reordered as a
//! drive's cache may. The store is reopened from that image and must open, hold every batch
//! whose `commit` had returned, hold no batch in part, and accept the next batch. As in
//! MCUboot's simulator, the cut is tried before every operation `i` of the workload.
//!
//! `SWELL_POWER_CUT_ROUNDS=N` repeats the sweep N times with other selections (default 1).
//! sled has no pluggable storage, so it is not tested here; the ADR says what that means.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use swell_controller::store::{RedbStore, Store, torture};

/// Batches per trial: enough for the workload's deletes (after `torture::WINDOW`) to happen.
const BATCHES: u64 = torture::WINDOW + 8;
const SECTOR: usize = 512;

#[derive(Debug)]
struct Disk {
    /// What a power cut cannot take away: the contents as of the last sync.
    durable: Vec<u8>,
    /// What reads see (the page cache): `durable` and every write since.
    cache: Vec<u8>,
    /// Writes since the last sync, in order.
    pending: Vec<(usize, Vec<u8>)>,
    /// Operations so far (writes, resizes, syncs).
    ops: u64,
    /// The power goes out just before operation number `cut_at`.
    cut_at: u64,
    /// The disk as the power cut left it.
    image: Option<Vec<u8>>,
    rng: u64,
}

impl Disk {
    fn new(contents: Vec<u8>, cut_at: u64, seed: u64) -> Self {
        Disk {
            durable: contents.clone(),
            cache: contents,
            pending: Vec::new(),
            ops: 0,
            cut_at,
            image: None,
            rng: seed,
        }
    }

    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(1);
        torture::mix(self.rng)
    }

    /// Counts an operation, cutting the power first if its number has come.
    fn op(&mut self) {
        self.ops += 1;
        if self.ops == self.cut_at && self.image.is_none() {
            self.image = Some(self.after_power_cut());
        }
    }

    /// The last synced contents, the file length as of the sync or as of now, and each later
    /// write dropped, kept, or kept in some of its sectors.
    fn after_power_cut(&mut self) -> Vec<u8> {
        let len = if self.random().is_multiple_of(2) {
            self.durable.len()
        } else {
            self.cache.len()
        };
        let mut image = self.durable.clone();
        resize(&mut image, len);
        let pending = std::mem::take(&mut self.pending);
        for (offset, data) in &pending {
            let keep = self.random() % 3;
            for (i, sector) in data.chunks(SECTOR).enumerate() {
                let written = match keep {
                    0 => false,
                    1 => true,
                    _ => self.random().is_multiple_of(2),
                };
                let at = offset + i * SECTOR;
                if written && at < len {
                    let end = (at + sector.len()).min(len);
                    image[at..end].copy_from_slice(&sector[..end - at]);
                }
            }
        }
        self.pending = pending;
        image
    }
}

/// `v.resize(len, 0)`, but through a zeroed allocation and one copy: this test crate is
/// built without optimization, where `resize` writes the zeros a byte at a time, and redb
/// grows its file by megabytes.
fn resize(v: &mut Vec<u8>, len: usize) {
    if len <= v.len() {
        v.truncate(len);
    } else {
        let mut grown = vec![0; len];
        grown[..v.len()].copy_from_slice(v);
        *v = grown;
    }
}

/// A redb storage backend on a [`Disk`].
#[derive(Debug, Clone)]
struct SimulatedDisk(Arc<Mutex<Disk>>);

impl redb::StorageBackend for SimulatedDisk {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.0.lock().unwrap().cache.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let disk = self.0.lock().unwrap();
        let start = usize::try_from(offset).unwrap();
        let src = disk
            .cache
            .get(start..start + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut disk = self.0.lock().unwrap();
        disk.op();
        resize(&mut disk.cache, usize::try_from(len).unwrap());
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut disk = self.0.lock().unwrap();
        disk.op();
        // durable = cache, by replaying the pending writes (cheaper than copying the file).
        let disk = &mut *disk;
        resize(&mut disk.durable, disk.cache.len());
        for (offset, data) in disk.pending.drain(..) {
            let end = (offset + data.len()).min(disk.durable.len());
            if offset < end {
                disk.durable[offset..end].copy_from_slice(&data[..end - offset]);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut disk = self.0.lock().unwrap();
        disk.op();
        let start = usize::try_from(offset).unwrap();
        if disk.cache.len() < start + data.len() {
            resize(&mut disk.cache, start + data.len());
        }
        disk.cache[start..start + data.len()].copy_from_slice(data);
        disk.pending.push((start, data.to_vec()));
        Ok(())
    }
}

/// What a run of the workload left.
struct Run {
    /// The disk after the power cut (`None` if the workload finished first).
    image: Option<Vec<u8>>,
    /// The last batch acknowledged before the cut.
    acknowledged: u64,
    /// Operations performed by the time the store was created and open.
    ops_at_open: u64,
    /// Operations performed in all.
    ops: u64,
}

/// Runs the workload on a fresh simulated disk that loses power before operation `cut_at`.
fn run_until_cut(cut_at: u64, seed: u64) -> Run {
    let disk = SimulatedDisk(Arc::new(Mutex::new(Disk::new(Vec::new(), cut_at, seed))));
    let store = RedbStore::open_backend(disk.clone(), Path::new("simulated")).unwrap();
    let ops_at_open = disk.0.lock().unwrap().ops;
    let mut acknowledged = 0;
    for seq in 1..=BATCHES {
        store.commit(&torture::batch(seq)).unwrap();
        if disk.0.lock().unwrap().image.is_some() {
            break;
        }
        acknowledged = seq;
    }
    drop(store);
    let mut d = disk.0.lock().unwrap();
    Run {
        image: d.image.take(),
        acknowledged,
        ops_at_open,
        ops: d.ops,
    }
}

/// redb keeps every acknowledged batch, whole, through a power cut before any operation.
#[test]
fn redb_survives_power_cut_at_every_operation() {
    let rounds: u64 = std::env::var("SWELL_POWER_CUT_ROUNDS")
        .map(|v| v.parse().expect("SWELL_POWER_CUT_ROUNDS is a number"))
        .unwrap_or(1);
    // The cuts to try: every operation after the store was created, through the last batch.
    // Cuts during creation are left out: on a file, `RedbStore::open` creates the store under
    // a temporary name and renames it into place, so a half-created store never sits at the
    // store's path (the simulated disk has no rename to model that with).
    let dry = run_until_cut(u64::MAX, 0);
    let (first, total) = (dry.ops_at_open + 1, dry.ops);
    let mut trials = 0;
    let mut acknowledged_total = 0;
    let mut failures = Vec::new();
    for round in 0..rounds {
        for cut_at in first..=total {
            let seed = round << 32 | cut_at;
            let run = run_until_cut(cut_at, seed);
            let acknowledged = run.acknowledged;
            let image = run.image.expect("the cut happens within the workload");
            trials += 1;
            acknowledged_total += acknowledged;
            let disk = SimulatedDisk(Arc::new(Mutex::new(Disk::new(image, u64::MAX, 0))));
            let store = match RedbStore::open_backend(disk, Path::new("after the cut")) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("cut before op {cut_at} (seed {seed}): open: {e:?}"));
                    continue;
                }
            };
            let verdict = torture::verify(&store, acknowledged).unwrap();
            if !verdict.is_clean() {
                failures.push(format!(
                    "cut before op {cut_at} (seed {seed}), {acknowledged} acknowledged: {verdict:?}"
                ));
                continue;
            }
            // The recovered store takes the next batch.
            let next = verdict.counter + 1;
            store.commit(&torture::batch(next)).unwrap();
            let after = torture::verify(&store, next).unwrap();
            if !after.is_clean() {
                failures.push(format!("cut before op {cut_at}: next batch: {after:?}"));
            }
        }
    }
    eprintln!(
        "power cut redb: {trials} cuts (operations {first}..={total} x {rounds} rounds), \
         {acknowledged_total} acknowledged batches in all, {} failures",
        failures.len()
    );
    for f in failures.iter().take(10) {
        eprintln!("  {f}");
    }
    assert!(
        failures.is_empty(),
        "{} power cuts broke the store",
        failures.len()
    );
}
