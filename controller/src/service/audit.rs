//! The audit log: every operator action and every automated decision, appended in order, each
//! entry carrying the hash of the one before it.
//!
//! An entry is a JSON object `{seq, time, actor, action, details, prev, hash}`. `hash` is the
//! SHA-256 of the RFC 8785 canonical JSON of the entry without `hash` (proto's JCS writer), and
//! `prev` is the previous entry's `hash` (64 zeros for the first). The store keeps entries in
//! the `audit` table under their zero-padded sequence number, and the newest `(seq, hash)` as
//! the head in `meta`, written in the same batch as the entry, so deleting the newest entries
//! is detected too.
//!
//! An append is part of the batch of the change it records ([`AuditWriter::append`]): the
//! change and its audit entry are stored together or not at all. Appends are serialized by the
//! writer's lock, and the batch also requires the head it extends, so two writers can never
//! fork the chain.
//!
//! [`verify`] is pure: it takes the stored entries and head and names every entry that was
//! modified, reordered or deleted.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value as JsonValue;
use swell_proto::json::{self, Value};
use swell_proto::{Sha256Digest, Timestamp};
use tokio::sync::{Mutex, MutexGuard};

use super::db::{Db, DbError, keys};
use crate::store::{Batch, Table};

/// The `prev` of the first entry.
pub const GENESIS: Sha256Digest = Sha256Digest::from_bytes([0; 32]);

/// The actor of automated decisions.
pub const CONTROLLER_ACTOR: &str = "controller";

/// One entry as stored and as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it was recorded.
    pub time: Timestamp,
    /// A token name, or `controller`.
    pub actor: String,
    /// What was done, such as `device.provision`.
    pub action: String,
    /// The specifics (a JSON object with integer numbers only).
    pub details: Value,
    /// The previous entry's hash.
    pub prev: Sha256Digest,
    /// This entry's hash.
    pub hash: Sha256Digest,
}

/// Why details could not be recorded.
#[derive(Debug, thiserror::Error)]
#[error("audit details are not strict JSON: {0}")]
pub struct DetailsError(String);

/// Converts serde-serializable details into proto's strict JSON value (objects with integer
/// numbers only), the form that canonicalizes.
pub fn details(value: &impl Serialize) -> Result<Value, DetailsError> {
    let bytes = serde_json::to_vec(value).map_err(|e| DetailsError(e.to_string()))?;
    json::parse(&bytes).map_err(|e| DetailsError(e.to_string()))
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn int(n: u64) -> Value {
    // Sequence numbers stay far below 2^53; saturate rather than wrap if they ever did not.
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Entry {
    fn body(&self) -> std::collections::BTreeMap<String, Value> {
        let mut m = std::collections::BTreeMap::new();
        m.insert("seq".into(), int(self.seq));
        m.insert("time".into(), text(&self.time.to_string()));
        m.insert("actor".into(), text(&self.actor));
        m.insert("action".into(), text(&self.action));
        m.insert("details".into(), self.details.clone());
        m.insert("prev".into(), text(&self.prev.to_hex()));
        m
    }

    /// The hash this entry should carry: SHA-256 over the canonical JSON of all other fields.
    pub fn compute_hash(&self) -> Sha256Digest {
        Sha256Digest::of(&Value::Object(self.body()).to_canonical())
    }

    /// A new entry after `prev_seq`/`prev`, hashed.
    pub fn new(
        prev_seq: u64,
        prev: Sha256Digest,
        time: Timestamp,
        actor: &str,
        action: &str,
        details: Value,
    ) -> Entry {
        let mut e = Entry {
            seq: prev_seq + 1,
            time,
            actor: actor.to_owned(),
            action: action.to_owned(),
            details,
            prev,
            hash: GENESIS,
        };
        e.hash = e.compute_hash();
        e
    }

    /// The stored form: canonical JSON including `hash`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = self.body();
        m.insert("hash".into(), text(&self.hash.to_hex()));
        Value::Object(m).to_canonical()
    }

    /// Parses the stored form (without checking the hash).
    pub fn from_bytes(bytes: &[u8]) -> Result<Entry, String> {
        let Value::Object(mut m) = json::parse(bytes).map_err(|e| e.to_string())? else {
            return Err("not a JSON object".into());
        };
        let mut take_str = |k: &str| match m.remove(k) {
            Some(Value::String(s)) => Ok(s),
            _ => Err(format!("no string {k:?}")),
        };
        let time = Timestamp::parse(&take_str("time")?).map_err(|e| e.to_string())?;
        let actor = take_str("actor")?;
        let action = take_str("action")?;
        let prev = Sha256Digest::from_hex(&take_str("prev")?).map_err(|e| e.to_string())?;
        let hash = Sha256Digest::from_hex(&take_str("hash")?).map_err(|e| e.to_string())?;
        let seq = match m.remove("seq") {
            Some(Value::Int(n)) => u64::try_from(n).map_err(|_| "negative seq".to_owned())?,
            _ => return Err("no integer \"seq\"".into()),
        };
        let details = m.remove("details").ok_or("no \"details\"")?;
        if let Some(extra) = m.keys().next() {
            return Err(format!("unknown field {extra:?}"));
        }
        Ok(Entry {
            seq,
            time,
            actor,
            action,
            details,
            prev,
            hash,
        })
    }

    /// The entry as API JSON.
    pub fn to_json(&self) -> JsonValue {
        // Canonical bytes of proto's Value are valid JSON for serde_json.
        serde_json::from_slice(&self.to_bytes()).unwrap_or(JsonValue::Null)
    }
}

/// The newest entry's position and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its sequence number (0 for an empty log).
    pub seq: u64,
    /// Its hash ([`GENESIS`] for an empty log).
    pub hash: Sha256Digest,
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };

    /// Stored form: `seq hash`.
    pub fn to_bytes(self) -> Vec<u8> {
        format!("{} {}", self.seq, self.hash).into_bytes()
    }

    /// Parses the stored form.
    pub fn from_bytes(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (seq, hash) = text.split_once(' ')?;
        Some(Head {
            seq: seq.parse().ok()?,
            hash: Sha256Digest::from_hex(hash).ok()?,
        })
    }
}

/// The store key of entry `seq`: zero-padded so byte order is numeric order.
pub fn entry_key(seq: u64) -> Vec<u8> {
    format!("{seq:020}").into_bytes()
}

/// What is wrong with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Its content no longer matches its hash, or it does not parse.
    Modified,
    /// It sits at another position than the one it was written at.
    Reordered,
    /// It is missing.
    Deleted,
    /// Its `prev` does not match the hash of the entry before it: that entry was replaced by
    /// one with a recomputed hash.
    ChainBroken,
}

impl ProblemKind {
    /// The kind's name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            ProblemKind::Modified => "modified",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Deleted => "deleted",
            ProblemKind::ChainBroken => "chain_broken",
        }
    }
}

/// One problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The position concerned.
    pub seq: u64,
    /// What is wrong.
    pub kind: ProblemKind,
    /// In words.
    pub detail: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Entries read.
    pub entries: u64,
    /// The head as stored.
    pub head: Head,
    /// Problems, in log order (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<Problem>,
}

/// Problems listed before verification stops counting: one tampering usually shows as one or
/// two problems, and a wholly corrupted log need not be listed entry by entry.
pub const MAX_PROBLEMS: usize = 100;

/// Checks the stored `entries` (key, value; in key order) against each other and `head`.
///
/// Each entry must parse, match its own hash, sit at the position its `seq` names, and name
/// as `prev` the hash of the entry with the previous `seq`. Positions with no entry are
/// deleted; so is everything between the last stored entry and the head.
pub fn verify(entries: &[crate::store::Entry], head: Head) -> Verification {
    let mut problems = Vec::new();
    let mut push = |seq, kind, detail: String| {
        problems.push(Problem { seq, kind, detail });
    };
    // Pass 1: each entry on its own, and the gaps between positions.
    let mut valid: Vec<Entry> = Vec::new();
    let mut hashes = std::collections::BTreeMap::new();
    let mut expected = 1u64;
    for (key, bytes) in entries {
        let at = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.parse::<u64>().ok());
        let Some(at) = at else {
            push(
                expected,
                ProblemKind::Modified,
                "an entry has a malformed key".into(),
            );
            continue;
        };
        if at > expected {
            let detail = if at == expected + 1 {
                format!("entry {expected} is missing")
            } else {
                format!("entries {expected} to {} are missing", at - 1)
            };
            push(expected, ProblemKind::Deleted, detail);
        }
        expected = at + 1;
        match Entry::from_bytes(bytes) {
            Err(why) => push(
                at,
                ProblemKind::Modified,
                format!("entry {at} does not parse: {why}"),
            ),
            Ok(e) if e.compute_hash() != e.hash => {
                push(
                    at,
                    ProblemKind::Modified,
                    format!("entry {at} does not match its hash"),
                );
            }
            Ok(e) => {
                if e.seq != at {
                    push(
                        at,
                        ProblemKind::Reordered,
                        format!("entry {} is stored at position {at}", e.seq),
                    );
                }
                hashes.insert(e.seq, e.hash);
                valid.push(e);
            }
        }
    }
    // Pass 2: the chain, between entries that are intact on their own.
    for e in &valid {
        let linked = match e.seq {
            0 => false,
            1 => e.prev == GENESIS,
            n => hashes.get(&(n - 1)).is_none_or(|h| *h == e.prev),
        };
        if !linked {
            push(
                e.seq,
                ProblemKind::ChainBroken,
                format!(
                    "entry {} does not follow entry {}, which was replaced",
                    e.seq,
                    e.seq.saturating_sub(1)
                ),
            );
        }
    }
    // The head: the newest entry the controller wrote.
    let read = expected - 1;
    if head.seq > read {
        let detail = if head.seq == read + 1 {
            format!("entry {} (the newest) is missing", head.seq)
        } else {
            format!(
                "entries {} to {} (the newest) are missing",
                read + 1,
                head.seq
            )
        };
        push(read + 1, ProblemKind::Deleted, detail);
    } else if head.seq < read {
        push(
            head.seq + 1,
            ProblemKind::Modified,
            format!(
                "entries after {} were added outside the controller",
                head.seq
            ),
        );
    } else if read > 0 && hashes.get(&read).is_some_and(|h| *h != head.hash) {
        push(
            read,
            ProblemKind::ChainBroken,
            format!("entry {read} (the newest) is not the one recorded as the head"),
        );
    }
    problems.sort_by_key(|p| p.seq);
    problems.truncate(MAX_PROBLEMS);
    Verification {
        entries: u64::try_from(entries.len()).unwrap_or(u64::MAX),
        head,
        problems,
    }
}

/// The audit log's writer: serializes appends and knows the head.
#[derive(Debug, Clone)]
pub struct AuditLog {
    db: Db,
    head: Arc<Mutex<Head>>,
}

/// Holds the append lock until the batch carrying the entry is committed.
#[derive(Debug)]
pub struct AuditWriter<'a> {
    db: &'a Db,
    head: MutexGuard<'a, Head>,
    pending: Vec<Entry>,
}

impl AuditLog {
    /// Opens the log, reading its head.
    pub async fn open(db: Db) -> Result<AuditLog, DbError> {
        let head = match db.get(Table::Meta, keys::AUDIT_HEAD.to_vec()).await? {
            Some(bytes) => Head::from_bytes(&bytes).ok_or_else(|| {
                DbError::Corrupt(format!("audit head {:?}", String::from_utf8_lossy(&bytes)))
            })?,
            None => Head::EMPTY,
        };
        Ok(AuditLog {
            db,
            head: Arc::new(Mutex::new(head)),
        })
    }

    /// Takes the append lock. Hold the writer across the commit of the batch it fills.
    pub async fn writer(&self) -> AuditWriter<'_> {
        AuditWriter {
            db: &self.db,
            head: self.head.lock().await,
            pending: Vec::new(),
        }
    }

    /// Records an entry on its own (a decision that changes nothing else in the store).
    pub async fn record(
        &self,
        time: Timestamp,
        actor: &str,
        action: &str,
        details: Value,
    ) -> Result<Entry, DbError> {
        let mut w = self.writer().await;
        let mut batch = Batch::new();
        w.append(&mut batch, time, actor, action, details);
        w.commit(batch).await
    }

    /// Every entry, oldest first.
    pub async fn list(&self) -> Result<Vec<Entry>, DbError> {
        let raw = self.db.scan(Table::Audit, Vec::new()).await?;
        raw.iter()
            .map(|(k, v)| {
                Entry::from_bytes(v).map_err(|why| {
                    DbError::Corrupt(format!("audit entry {}: {why}", String::from_utf8_lossy(k)))
                })
            })
            .collect()
    }

    /// Verifies the whole log as stored.
    pub async fn verify(&self) -> Result<Verification, DbError> {
        // Hold the lock so no append lands between reading the entries and the head.
        let _guard = self.head.lock().await;
        let raw = self.db.scan(Table::Audit, Vec::new()).await?;
        let head = match self.db.get(Table::Meta, keys::AUDIT_HEAD.to_vec()).await? {
            Some(bytes) => Head::from_bytes(&bytes).unwrap_or(Head {
                seq: u64::MAX,
                hash: GENESIS,
            }),
            None => Head::EMPTY,
        };
        Ok(verify(&raw, head))
    }
}

impl AuditWriter<'_> {
    /// Adds the entry to `batch` (with the new head; the first entry also adds the old head as
    /// a precondition). Several entries may go into one batch: they chain in order.
    pub fn append(
        &mut self,
        batch: &mut Batch,
        time: Timestamp,
        actor: &str,
        action: &str,
        details: Value,
    ) {
        let head = self.pending.last().map_or(*self.head, |e| Head {
            seq: e.seq,
            hash: e.hash,
        });
        let entry = Entry::new(head.seq, head.hash, time, actor, action, details);
        if self.pending.is_empty() {
            let old = (head.seq > 0).then(|| head.to_bytes());
            batch.require(Table::Meta, keys::AUDIT_HEAD.to_vec(), old);
        }
        let new = Head {
            seq: entry.seq,
            hash: entry.hash,
        };
        batch
            .put(Table::Audit, entry_key(entry.seq), entry.to_bytes())
            .put(Table::Meta, keys::AUDIT_HEAD.to_vec(), new.to_bytes());
        self.pending.push(entry);
    }

    /// Whether an entry was appended.
    pub fn has_entries(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Commits `batch` and, if it was stored, advances the head.
    pub async fn commit(mut self, batch: Batch) -> Result<Entry, DbError> {
        self.db.commit(batch).await?;
        let entry = self
            .pending
            .pop()
            .ok_or_else(|| DbError::Corrupt("audit commit without an entry".into()))?;
        *self.head = Head {
            seq: entry.seq,
            hash: entry.hash,
        };
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> (Vec<crate::store::Entry>, Head) {
        let mut head = Head::EMPTY;
        let mut out = Vec::new();
        for i in 0..n {
            let e = Entry::new(
                head.seq,
                head.hash,
                Timestamp::from_unix(1_800_000_000 + i),
                "alice",
                "device.provision",
                details(&serde_json::json!({"device": format!("gw-{i}")})).unwrap(),
            );
            head = Head {
                seq: e.seq,
                hash: e.hash,
            };
            out.push((entry_key(e.seq), e.to_bytes()));
        }
        (out, head)
    }

    fn kinds(v: &Verification) -> Vec<(u64, &'static str)> {
        v.problems.iter().map(|p| (p.seq, p.kind.name())).collect()
    }

    #[test]
    fn an_intact_log_verifies() {
        let (entries, head) = chain(5);
        let v = verify(&entries, head);
        assert!(v.problems.is_empty(), "{v:?}");
        assert_eq!(v.entries, 5);
        assert!(verify(&[], Head::EMPTY).problems.is_empty());
        let e = Entry::from_bytes(&entries[2].1).unwrap();
        assert_eq!(e.seq, 3);
        assert_eq!(e.to_bytes(), entries[2].1);
    }

    #[test]
    fn a_modified_entry_is_named() {
        let (mut entries, head) = chain(5);
        let text = String::from_utf8(entries[2].1.clone()).unwrap();
        entries[2].1 = text.replace("gw-2", "gw-9").into_bytes();
        assert_eq!(kinds(&verify(&entries, head)), [(3, "modified")]);
    }

    #[test]
    fn a_rehashed_entry_breaks_the_chain_after_it() {
        let (mut entries, head) = chain(5);
        let mut e = Entry::from_bytes(&entries[1].1).unwrap();
        e.actor = "mallory".into();
        e.hash = e.compute_hash();
        entries[1].1 = e.to_bytes();
        assert_eq!(kinds(&verify(&entries, head)), [(3, "chain_broken")]);
    }

    #[test]
    fn deleted_entries_are_named_in_the_middle_and_at_the_end() {
        let (entries, head) = chain(5);
        let mut middle = entries.clone();
        middle.remove(1);
        assert_eq!(kinds(&verify(&middle, head)), [(2, "deleted")]);
        let mut tail = entries.clone();
        tail.pop();
        assert_eq!(kinds(&verify(&tail, head)), [(5, "deleted")]);
        assert_eq!(kinds(&verify(&[], head)), [(1, "deleted")]);
    }

    #[test]
    fn swapped_entries_are_reordered() {
        let (mut entries, head) = chain(5);
        let (a, b) = (entries[1].1.clone(), entries[2].1.clone());
        entries[1].1 = b;
        entries[2].1 = a;
        let k = kinds(&verify(&entries, head));
        assert_eq!(k, [(2, "reordered"), (3, "reordered")]);
    }

    #[test]
    fn heads_round_trip() {
        let h = Head {
            seq: 42,
            hash: Sha256Digest::of(b"x"),
        };
        assert_eq!(Head::from_bytes(&h.to_bytes()), Some(h));
        assert_eq!(Head::from_bytes(b"x y"), None);
    }
}
