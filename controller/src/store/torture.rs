//! The workload and the checker of the kill -9 torture test (`tests/store_torture.rs`, which
//! drives the `store-torture` binary). Here, not in the test, because both the writer process
//! and the checking process need them. Not part of the store's API.
//!
//! Batch `n` (n = 1, 2, ...) writes, in one [`Batch`]:
//!
//! | Table | Key | Value |
//! |---|---|---|
//! | meta | `counter` | `n`, 8 bytes big-endian |
//! | devices | `slot/0`, `slot/1`, `slot/2` | `n` (overwritten by every batch) |
//! | audit | `{n:016x}/{i}` for `i < items(n)` | [`payload`]`(n, i)`, 16 B to 4 KiB |
//! | rollouts | `{n:016x}/{i}` for `i < items(n)` | the same payload |
//! | rollouts | delete `{n - WINDOW:016x}/{i}` | (the rollouts of batch `n - WINDOW`) |
//!
//! `items(n)` is 1 to 4, so batches are 6 to 16 writes, some of them deletes, across four
//! tables. If the store's counter reads `c`, the only consistent state is the one [`expected`]
//! describes; [`verify`] compares the store with it entry by entry and attributes each
//! difference to a batch: a lost batch (acknowledged, not there) or a torn one (partly there).

use std::collections::{BTreeMap, BTreeSet};

use super::{Batch, Error, Store, Table};

/// The rollouts of batch `n` are deleted by batch `n + WINDOW`.
pub const WINDOW: u64 = 16;
/// How many `devices` keys every batch overwrites.
pub const SLOTS: u64 = 3;
/// The key of the counter in the `meta` table.
pub const COUNTER: &[u8] = b"counter";

/// How many audit (and rollout) entries batch `seq` writes: 1 to 4.
#[must_use]
pub fn items(seq: u64) -> u64 {
    1 + seq % 4
}

/// A deterministic 64-bit mix (SplitMix64's finalizer).
#[must_use]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The value of entry `i` of batch `seq`: its identity, then filler, 16 bytes to 4 KiB long so
/// that some batches span several pages.
#[must_use]
pub fn payload(seq: u64, i: u64) -> Vec<u8> {
    let h = mix(seq.wrapping_mul(31).wrapping_add(i));
    let len = 16 + (h % 4081);
    let mut v = Vec::with_capacity(usize::try_from(len).unwrap_or(16));
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&i.to_be_bytes());
    let mut x = h;
    while (v.len() as u64) < len {
        x = mix(x);
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(usize::try_from(len).unwrap_or(16));
    v
}

/// The key of entry `i` of batch `seq` in `audit` and `rollouts`.
#[must_use]
pub fn entry_key(seq: u64, i: u64) -> Vec<u8> {
    format!("{seq:016x}/{i}").into_bytes()
}

fn slot_key(j: u64) -> Vec<u8> {
    format!("slot/{j}").into_bytes()
}

/// Batch `seq` of the workload.
#[must_use]
pub fn batch(seq: u64) -> Batch {
    let mut b = Batch::new();
    b.put(Table::Meta, COUNTER, seq.to_be_bytes());
    for j in 0..SLOTS {
        b.put(Table::Devices, slot_key(j), seq.to_be_bytes());
    }
    for i in 0..items(seq) {
        b.put(Table::Audit, entry_key(seq, i), payload(seq, i));
        b.put(Table::Rollouts, entry_key(seq, i), payload(seq, i));
    }
    if seq > WINDOW {
        let old = seq - WINDOW;
        for i in 0..items(old) {
            b.delete(Table::Rollouts, entry_key(old, i));
        }
    }
    b
}

/// The counter the store holds: the number of the last batch applied, 0 for none.
pub fn counter(store: &dyn Store) -> Result<Result<u64, String>, Error> {
    Ok(match store.get(Table::Meta, COUNTER)? {
        None => Ok(0),
        Some(v) => match <[u8; 8]>::try_from(v.as_slice()) {
            Ok(b) => Ok(u64::from_be_bytes(b)),
            Err(_) => Err(format!("the counter is {} bytes, not 8", v.len())),
        },
    })
}

/// The exact contents of the four tables after batches `1..=c`.
#[must_use]
pub fn expected(c: u64) -> BTreeMap<(Table, Vec<u8>), Vec<u8>> {
    let mut want = BTreeMap::new();
    if c == 0 {
        return want;
    }
    want.insert((Table::Meta, COUNTER.to_vec()), c.to_be_bytes().to_vec());
    for j in 0..SLOTS {
        want.insert((Table::Devices, slot_key(j)), c.to_be_bytes().to_vec());
    }
    for m in 1..=c {
        for i in 0..items(m) {
            want.insert((Table::Audit, entry_key(m, i)), payload(m, i));
            if m + WINDOW > c {
                want.insert((Table::Rollouts, entry_key(m, i)), payload(m, i));
            }
        }
    }
    want
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The store's counter (0 if it has none or it is unreadable).
    pub counter: u64,
    /// Acknowledged batches that are not (wholly) in the store.
    pub lost: u64,
    /// Batches partly applied: some of their writes present, some absent, or data that
    /// disagrees with the counter.
    pub torn: u64,
    /// Every difference, described (the first few are enough to debug).
    pub problems: Vec<String>,
}

impl Verdict {
    /// Whether the store is exactly as it must be.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.torn == 0 && self.problems.is_empty()
    }
}

/// The batch a workload key belongs to, if it is one.
fn batch_of(table: Table, key: &[u8]) -> Option<u64> {
    match table {
        Table::Audit | Table::Rollouts => {
            let hex = key.get(..16)?;
            u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        }
        _ => None,
    }
}

/// Checks the store against the workload after a crash. `acknowledged` is the highest batch
/// the writer reported committed; the writer may have committed one more (killed between
/// `commit` returning and its report), never more than that.
pub fn verify(store: &dyn Store, acknowledged: u64) -> Result<Verdict, Error> {
    let mut verdict = Verdict::default();
    let c = match counter(store)? {
        Ok(c) => c,
        Err(why) => {
            verdict.problems.push(why);
            0
        }
    };
    verdict.counter = c;
    if c < acknowledged {
        verdict.lost = acknowledged - c;
        verdict.problems.push(format!(
            "counter {c}, but batch {acknowledged} was acknowledged"
        ));
    }
    if c > acknowledged + 1 {
        verdict.problems.push(format!(
            "counter {c}, but only {acknowledged} (+1 in flight) were written"
        ));
    }

    let mut actual = BTreeMap::new();
    for table in [Table::Meta, Table::Devices, Table::Audit, Table::Rollouts] {
        for (k, v) in store.scan(table, b"")? {
            actual.insert((table, k), v);
        }
    }
    for table in [Table::Releases, Table::Tokens] {
        let n = store.scan(table, b"")?.len();
        if n != 0 {
            verdict
                .problems
                .push(format!("{n} entries in {table}, which no batch writes"));
        }
    }
    let want = expected(c);

    // Each difference is blamed on the batch that wrote (or deleted) the entry; the counter
    // and the slots, which every batch rewrites, on the batch whose number they hold.
    let mut torn = BTreeSet::new();
    let mut lost = BTreeSet::new();
    for (key, value) in &want {
        match actual.get(key) {
            Some(v) if v == value => {}
            found => {
                let m = batch_of(key.0, &key.1).unwrap_or(c);
                if key.0 == Table::Audit && m <= acknowledged {
                    lost.insert(m);
                } else {
                    torn.insert(m);
                }
                verdict.problems.push(format!(
                    "{}/{}: expected {} bytes, found {}",
                    key.0,
                    String::from_utf8_lossy(&key.1),
                    value.len(),
                    found.map_or("nothing".to_string(), |v| format!(
                        "{} other bytes",
                        v.len()
                    )),
                ));
            }
        }
    }
    for (key, value) in &actual {
        if !want.contains_key(key) {
            match batch_of(key.0, &key.1) {
                // A rollout entry that should have been deleted: the deleting batch is torn.
                Some(m) if key.0 == Table::Rollouts && m <= c => torn.insert(m + WINDOW),
                Some(m) => torn.insert(m),
                None => torn.insert(c + 1),
            };
            verdict.problems.push(format!(
                "{}/{}: unexpected ({} bytes)",
                key.0,
                String::from_utf8_lossy(&key.1),
                value.len()
            ));
        }
    }
    // Batches wholly missing because the counter is behind were counted above; an older
    // acknowledged batch whose audit entries are gone is lost too, not torn.
    verdict.lost += lost.iter().filter(|m| **m <= c).count() as u64;
    verdict.torn = torn.difference(&lost).count() as u64;
    Ok(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Engine;

    #[test]
    fn batches_vary_in_size_and_delete_old_rollouts() {
        assert_eq!(batch(1).ops().len(), 1 + 3 + 2 * 2);
        assert_eq!(batch(3).ops().len(), 1 + 3 + 2 * 4);
        assert_eq!(batch(WINDOW + 1).ops().len(), 1 + 3 + 2 * 2 + 2);
        let lens: Vec<usize> = (0..50).map(|i| payload(7, i).len()).collect();
        assert!(lens.iter().all(|l| (16..=4096).contains(l)));
        assert!(lens.iter().max() > Some(&2000) && lens.iter().min() < Some(&1000));
    }

    #[test]
    fn verify_accepts_the_workload_and_blames_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = Engine::Redb.open(&dir.path().join("s.redb")).unwrap();
        assert!(verify(&*store, 0).unwrap().is_clean());
        for n in 1..=WINDOW + 10 {
            store.commit(&batch(n)).unwrap();
        }
        let c = WINDOW + 10;
        let v = verify(&*store, c).unwrap();
        assert!(v.is_clean(), "{v:?}");
        assert_eq!(v.counter, c);
        // One more than acknowledged is fine (killed before the report).
        assert!(verify(&*store, c - 1).unwrap().is_clean());

        // Acknowledged but absent: lost.
        let v = verify(&*store, c + 2).unwrap();
        assert_eq!((v.lost, v.torn), (2, 0), "{v:?}");

        // Half a batch: torn.
        store
            .commit(Batch::new().put(Table::Audit, entry_key(c + 1, 0), payload(c + 1, 0)))
            .unwrap();
        let v = verify(&*store, c).unwrap();
        assert_eq!((v.lost, v.torn), (0, 1), "{v:?}");
        store
            .commit(Batch::new().delete(Table::Audit, entry_key(c + 1, 0)))
            .unwrap();

        // A delete that did not happen: the deleting batch is torn.
        store
            .commit(Batch::new().put(Table::Rollouts, entry_key(5, 0), payload(5, 0)))
            .unwrap();
        let v = verify(&*store, c).unwrap();
        assert_eq!((v.lost, v.torn), (0, 1), "{v:?}");
        assert!(v.problems[0].contains("unexpected"), "{v:?}");
        store
            .commit(Batch::new().delete(Table::Rollouts, entry_key(5, 0)))
            .unwrap();

        // An old acknowledged entry gone: lost.
        store
            .commit(Batch::new().delete(Table::Audit, entry_key(3, 1)))
            .unwrap();
        let v = verify(&*store, c).unwrap();
        assert_eq!((v.lost, v.torn), (1, 0), "{v:?}");
    }
}
