//! The contract of [`Store`] as checks that run against any engine: `tests/store_conformance.rs`
//! runs each one on redb and on sled, and a PostgreSQL backend will run the same ones.
//!
//! Each check gets an `open` function that opens the same, initially empty, store each time
//! it is called, and returns a [`Failure`] saying what differed instead of panicking, so these
//! can live in library code without `unwrap`. Crash atomicity and durability are not checked
//! here but by killing a writer (`tests/store_torture.rs`).

use std::fmt;

use super::{Batch, Entry, Error, Store, Table};

/// Opens the store under test (the same one on every call).
pub type Open<'a> = &'a dyn Fn() -> Result<Box<dyn Store>, Error>;

/// A conformance check.
pub type Check = fn(Open<'_>) -> Result<(), Failure>;

/// What a conformance check found wrong.
#[derive(Debug)]
pub struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let mut msg = format!("unexpected store error: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        Failure(msg)
    }
}

/// Fails with `what` unless `actual == expected`.
fn same<T: PartialEq + fmt::Debug>(actual: T, expected: T, what: &str) -> Result<(), Failure> {
    if actual == expected {
        Ok(())
    } else {
        Err(Failure(format!(
            "{what}: expected {expected:?}, got {actual:?}"
        )))
    }
}

fn entries(items: &[(&[u8], &[u8])]) -> Vec<Entry> {
    items
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// Every check, by name. Each needs a store of its own.
pub const CHECKS: [(&str, Check); 8] = [
    ("new_store_is_empty", new_store_is_empty),
    ("put_get_delete", put_get_delete),
    ("batch_applies_in_order", batch_applies_in_order),
    ("batch_is_all_or_nothing", batch_is_all_or_nothing),
    ("scan_is_ordered_and_prefixed", scan_is_ordered_and_prefixed),
    ("preconditions", preconditions),
    ("token_is_single_use", token_is_single_use),
    ("reopen_keeps_everything", reopen_keeps_everything),
];

/// A new store has every table, and nothing in any.
pub fn new_store_is_empty(open: Open<'_>) -> Result<(), Failure> {
    let store = open()?;
    for table in Table::ALL {
        same(store.get(table, b"k")?, None, "get from an empty table")?;
        same(store.scan(table, b"")?, vec![], "scan of an empty table")?;
    }
    Ok(())
}

/// Single puts and deletes; tables are separate key spaces; an empty value is a value.
pub fn put_get_delete(open: Open<'_>) -> Result<(), Failure> {
    let store = open()?;
    store.commit(Batch::new().put(Table::Devices, "d1", "one"))?;
    same(
        store.get(Table::Devices, b"d1")?,
        Some(b"one".to_vec()),
        "after a put",
    )?;
    same(
        store.get(Table::Releases, b"d1")?,
        None,
        "same key, other table",
    )?;

    store.commit(Batch::new().put(Table::Devices, "d1", "uno"))?;
    same(
        store.get(Table::Devices, b"d1")?,
        Some(b"uno".to_vec()),
        "after a replace",
    )?;

    store.commit(Batch::new().put(Table::Devices, "empty", Vec::new()))?;
    same(
        store.get(Table::Devices, b"empty")?,
        Some(Vec::new()),
        "an empty value",
    )?;

    store.commit(Batch::new().delete(Table::Devices, "d1"))?;
    same(store.get(Table::Devices, b"d1")?, None, "after a delete")?;
    store.commit(Batch::new().delete(Table::Devices, "never-there"))?;

    let big = vec![0xa5; 1 << 20];
    store.commit(Batch::new().put(Table::Releases, "big", big.clone()))?;
    same(
        store.get(Table::Releases, b"big")?,
        Some(big),
        "a 1 MiB value",
    )?;

    // An empty batch is a no-op, not an error.
    store.commit(&Batch::new())?;
    Ok(())
}

/// Operations of one batch apply in order: a later put or delete of the same key wins.
pub fn batch_applies_in_order(open: Open<'_>) -> Result<(), Failure> {
    let store = open()?;
    store.commit(
        Batch::new()
            .put(Table::Rollouts, "r", "first")
            .put(Table::Rollouts, "r", "second")
            .put(Table::Rollouts, "gone", "x")
            .delete(Table::Rollouts, "gone")
            .delete(Table::Rollouts, "back")
            .put(Table::Rollouts, "back", "again"),
    )?;
    same(
        store.scan(Table::Rollouts, b"")?,
        entries(&[(b"back", b"again"), (b"r", b"second")]),
        "later operations win",
    )
}

/// A batch across tables becomes visible whole; a refused batch leaves nothing behind, even
/// the writes listed before the precondition that failed.
pub fn batch_is_all_or_nothing(open: Open<'_>) -> Result<(), Failure> {
    let store = open()?;
    let mut batch = Batch::new();
    for table in Table::ALL {
        batch.put(table, "a", table.name()).put(table, "b", "2");
    }
    store.commit(&batch)?;
    for table in Table::ALL {
        same(
            store.scan(table, b"")?,
            entries(&[(b"a", table.name().as_bytes()), (b"b", b"2")]),
            "a committed batch, in each table",
        )?;
    }

    let mut refused = Batch::new();
    for table in Table::ALL {
        refused
            .put(table, "a", "changed")
            .delete(table, "b")
            .put(table, "c", "new");
    }
    refused.require(Table::Meta, "lock", Some(b"held".to_vec()));
    match store.commit(&refused) {
        Err(e) if e.is_conflict() => {}
        other => return Err(Failure(format!("a failed precondition: got {other:?}"))),
    }
    for table in Table::ALL {
        same(
            store.scan(table, b"")?,
            entries(&[(b"a", table.name().as_bytes()), (b"b", b"2")]),
            "after a refused batch, in each table",
        )?;
    }
    Ok(())
}

/// Scans return exactly the keys with the prefix, in byte order, including at the edges: the
/// empty prefix, `0x00` and `0xff` bytes, and a prefix that is itself a key.
pub fn scan_is_ordered_and_prefixed(open: Open<'_>) -> Result<(), Failure> {
    let store = open()?;
    let keys: [&[u8]; 11] = [
        b"b",
        b"a\xff",
        b"a",
        b"ab",
        b"a\x00",
        b"\xff",
        b"\xff\xff",
        b"\xff\x00",
        b"aa",
        b"",
        b"\x00",
    ];
    let mut batch = Batch::new();
    for k in keys {
        batch.put(Table::Audit, k, [b"v:".as_slice(), k].concat());
    }
    // Another table with the same keys must not leak into the scan.
    batch.put(Table::Meta, "a", "other table");
    store.commit(&batch)?;

    let scanned = |prefix: &[u8]| -> Result<Vec<Vec<u8>>, Failure> {
        let found = store.scan(Table::Audit, prefix)?;
        for (k, v) in &found {
            same(v.clone(), [b"v:".as_slice(), k].concat(), "a scanned value")?;
        }
        Ok(found.into_iter().map(|(k, _)| k).collect())
    };
    let mut all: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
    all.sort();
    same(scanned(b"")?, all, "scan with the empty prefix")?;
    let want = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    same(
        scanned(b"a")?,
        want(&[b"a", b"a\x00", b"aa", b"ab", b"a\xff"]),
        "scan of prefix a",
    )?;
    same(scanned(b"aa")?, want(&[b"aa"]), "scan of prefix aa")?;
    same(
        scanned(b"\xff")?,
        want(&[b"\xff", b"\xff\x00", b"\xff\xff"]),
        "scan of prefix 0xff",
    )?;
    same(scanned(b"c")?, want(&[]), "scan of an absent prefix")?;
    Ok(())
}

/// Preconditions: "absent" and "has this value", checked against the state before the batch;
/// a failed one names itself and writes nothing.
pub fn preconditions(open: Open<'_>) -> Result<(), Failure> {
    let store = open()?;
    // Create-if-absent succeeds once.
    let create = || {
        let mut b = Batch::new();
        b.require(Table::Devices, "d1", None)
            .put(Table::Devices, "d1", "v1");
        b
    };
    store.commit(&create())?;
    match store.commit(&create()) {
        Err(Error::Conflict { table, key }) => {
            same(
                (table, key),
                (Table::Devices, b"d1".to_vec()),
                "the conflict names its key",
            )?;
        }
        other => return Err(Failure(format!("create of an existing key: got {other:?}"))),
    }

    // Compare-and-swap: the right old value wins, a stale one loses.
    store.commit(
        Batch::new()
            .require(Table::Devices, "d1", Some(b"v1".to_vec()))
            .put(Table::Devices, "d1", "v2"),
    )?;
    let stale = store.commit(
        Batch::new()
            .require(Table::Devices, "d1", Some(b"v1".to_vec()))
            .put(Table::Devices, "d1", "v3"),
    );
    same(
        stale.map_err(|e| e.is_conflict()),
        Err(true),
        "a swap with a stale value",
    )?;
    same(
        store.get(Table::Devices, b"d1")?,
        Some(b"v2".to_vec()),
        "after a stale swap",
    )?;

    // An empty value is not absence, for preconditions too.
    store.commit(Batch::new().put(Table::Meta, "e", Vec::new()))?;
    let absent = store.commit(Batch::new().require(Table::Meta, "e", None));
    same(
        absent.map_err(|e| e.is_conflict()),
        Err(true),
        "empty value vs absent",
    )?;
    store.commit(Batch::new().require(Table::Meta, "e", Some(Vec::new())))?;

    // Several preconditions: all must hold; the one that fails is reported.
    let result = store.commit(
        Batch::new()
            .require(Table::Devices, "d1", Some(b"v2".to_vec()))
            .require(Table::Releases, "r9", Some(b"x".to_vec()))
            .put(Table::Releases, "r1", "written?"),
    );
    match result {
        Err(Error::Conflict { table, key }) => {
            same(
                (table, key),
                (Table::Releases, b"r9".to_vec()),
                "the failing precondition",
            )?;
        }
        other => {
            return Err(Failure(format!(
                "a second failing precondition: got {other:?}"
            )));
        }
    }
    same(
        store.get(Table::Releases, b"r1")?,
        None,
        "a write of a refused batch",
    )?;

    // A precondition on a key the same batch writes sees the state before the batch.
    store.commit(Batch::new().put(Table::Devices, "d2", "new").require(
        Table::Devices,
        "d2",
        None,
    ))?;
    same(
        store.get(Table::Devices, b"d2")?,
        Some(b"new".to_vec()),
        "self-referencing batch",
    )?;
    Ok(())
}

/// An enrollment token is used by deleting it under the precondition that it is still there:
/// of two uses of one token, exactly one succeeds, also when they race from several threads.
pub fn token_is_single_use(open: Open<'_>) -> Result<(), Failure> {
    let store = open()?;
    let tokens = 20;
    let mut batch = Batch::new();
    for t in 0..tokens {
        batch.put(Table::Tokens, format!("tok-{t:02}"), "cohort=canary");
    }
    store.commit(&batch)?;

    let use_token = |t: usize, device: usize| {
        let key = format!("tok-{t:02}");
        let mut b = Batch::new();
        b.require(Table::Tokens, key.clone(), Some(b"cohort=canary".to_vec()))
            .delete(Table::Tokens, key)
            .put(Table::Devices, format!("dev-{t:02}-{device}"), "enrolled");
        store.commit(&b)
    };
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|device| {
                let use_token = &use_token;
                s.spawn(move || {
                    (0..tokens)
                        .map(|t| use_token(t, device))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(
                h.join()
                    .map_err(|_| Failure("a writer thread panicked".into()))?,
            );
        }
        Ok::<_, Failure>(all)
    })?;
    let mut ok = 0;
    for r in results {
        match r {
            Ok(()) => ok += 1,
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
    }
    same(ok, tokens, "successful token uses (one per token)")?;
    same(store.scan(Table::Tokens, b"")?, vec![], "tokens left")?;
    same(
        store.scan(Table::Devices, b"dev-")?.len(),
        tokens,
        "devices enrolled",
    )?;
    Ok(())
}

/// What was committed is there after the store is closed and opened again, deletes included.
pub fn reopen_keeps_everything(open: Open<'_>) -> Result<(), Failure> {
    {
        let store = open()?;
        let mut batch = Batch::new();
        for i in 0..100u32 {
            batch.put(Table::Audit, i.to_be_bytes(), format!("entry {i}"));
        }
        batch.put(Table::Meta, "schema", "1");
        store.commit(&batch)?;
        store.commit(Batch::new().delete(Table::Audit, 7u32.to_be_bytes()))?;
    }
    let store = open()?;
    let audit = store.scan(Table::Audit, b"")?;
    same(audit.len(), 99, "audit entries after reopen")?;
    same(
        store.get(Table::Audit, &7u32.to_be_bytes())?,
        None,
        "a deleted key after reopen",
    )?;
    same(
        store.get(Table::Audit, &99u32.to_be_bytes())?,
        Some(b"entry 99".to_vec()),
        "a key after reopen",
    )?;
    same(
        store.get(Table::Meta, b"schema")?,
        Some(b"1".to_vec()),
        "meta after reopen",
    )?;
    // Still writable after reopening.
    store.commit(Batch::new().put(Table::Meta, "schema", "2"))?;
    same(
        store.get(Table::Meta, b"schema")?,
        Some(b"2".to_vec()),
        "a write after reopen",
    )?;
    Ok(())
}
