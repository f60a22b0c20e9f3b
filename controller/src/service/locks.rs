//! Deploy locks: an operator's (or the executor's) "no new device starts now". While any lock
//! holds, the rollout executor starts no device; devices already updating finish.
//!
//! A lock holds from its creation until it is released or its `until` passes. A lock with a
//! **freeze window** holds only part of the time: `outside` the window (deploys happen only
//! within business hours, say) or `during` it (no deploys on Friday afternoons). The window is a
//! [`MaintenanceWindow`] in one IANA zone, so the days the clocks change follow the same DST
//! policy as device maintenance windows (planner::window, docs/rollouts.md): a window edge in a
//! gap moves to the gap's end, one in a fold means its first occurrence, a window never grows.
//!
//! Locks are stored in table `rollouts` under `lock/<id>` (JSON, [`LockRecord`] form), with the
//! id counter at `meta/lock-seq`; every creation and release is audited (`lock.create`,
//! `lock.release`) in the same batch as the record. Every write holds the audit writer, which
//! serializes them, so the cache here and the store never disagree about who released first.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use jiff::civil::{Time, Weekday};
use serde::{Deserialize, Serialize};
use serde_json::json;
use swell_proto::Timestamp;

use super::audit::{self, AuditLog, AuditWriter};
use super::db::{Db, DbError};
use super::records::{counter_bytes, parse_counter, to_bytes};
use crate::planner::window::{parse_weekday, weekday_name};
use crate::planner::{MaintenanceWindow, Zone};
use crate::store::{Batch, Table};

/// Longest lock or release reason, in characters: a sentence or two for the audit log and the
/// rollout's `held_by`, not a document.
pub const MAX_REASON_CHARS: usize = 500;

/// Prefix of lock records in `rollouts`.
const LOCK_PREFIX: &str = "lock/";

/// The id counter in `rollouts`.
const SEQ_KEY: &[u8] = b"meta/lock-seq";

/// Why a lock could not be made or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The request is malformed (reason, until, freeze window).
    #[error("{0}")]
    Invalid(String),
    /// No such lock.
    #[error("no lock {0:?}")]
    NotFound(String),
    /// The lock was released before.
    #[error("lock {id} was already released by {by} at {at}")]
    AlreadyReleased {
        /// The lock.
        id: String,
        /// Who released it.
        by: String,
        /// When.
        at: Timestamp,
    },
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Whether a freeze holds outside or during its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeMode {
    /// The lock holds outside the window: deploys happen only within it.
    Outside,
    /// The lock holds within the window.
    During,
}

impl FreezeMode {
    /// `outside` or `during`.
    pub fn name(self) -> &'static str {
        match self {
            FreezeMode::Outside => "outside",
            FreezeMode::During => "during",
        }
    }

    /// The mode named `s`.
    pub fn parse(s: &str) -> Option<FreezeMode> {
        match s {
            "outside" => Some(FreezeMode::Outside),
            "during" => Some(FreezeMode::During),
            _ => None,
        }
    }
}

/// A validated freeze window: weekly wall-clock hours in one zone, and which side of them the
/// lock holds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freeze {
    window: MaintenanceWindow,
    zone: Zone,
    mode: FreezeMode,
}

/// A freeze window as JSON (the API's and the store's form).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeSpec {
    /// `mon` .. `sun`; every day if absent.
    #[serde(default)]
    pub days: Option<Vec<String>>,
    /// `HH:MM` local.
    pub start: String,
    /// `HH:MM` local; at or before `start` means the next day.
    pub end: String,
    /// IANA zone name.
    pub zone: String,
    /// `outside` or `during`.
    pub mode: String,
}

/// `HH:MM` (two digits each) as a wall-clock time.
fn clock_time(s: &str, field: &str) -> Result<Time, String> {
    let bad = || format!("freeze.{field}: {s:?} is not a local time HH:MM (such as \"09:00\")");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    Time::new(h, m, 0, 0).map_err(|_| bad())
}

impl Freeze {
    /// Validates `spec`.
    pub fn from_spec(spec: &FreezeSpec) -> Result<Freeze, String> {
        let start = clock_time(&spec.start, "start")?;
        let end = clock_time(&spec.end, "end")?;
        let days: Vec<Weekday> = match &spec.days {
            None => ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .iter()
                .filter_map(|d| parse_weekday(d))
                .collect(),
            Some(names) => {
                let mut days = Vec::new();
                for n in names {
                    let d = parse_weekday(n).ok_or_else(|| {
                        format!("freeze.days: {n:?} is not one of mon tue wed thu fri sat sun")
                    })?;
                    if days.contains(&d) {
                        return Err(format!("freeze.days: {n:?} is listed twice"));
                    }
                    days.push(d);
                }
                days
            }
        };
        let window =
            MaintenanceWindow::new(start, end, &days).map_err(|e| format!("freeze: {e}"))?;
        let zone = Zone::new(&spec.zone).map_err(|e| format!("freeze.zone: {e}"))?;
        let mode = FreezeMode::parse(&spec.mode).ok_or_else(|| {
            format!(
                "freeze.mode: {:?} is neither \"outside\" nor \"during\"",
                spec.mode
            )
        })?;
        Ok(Freeze { window, zone, mode })
    }

    /// The JSON form (days always listed).
    pub fn spec(&self) -> FreezeSpec {
        FreezeSpec {
            days: Some(
                self.window
                    .days()
                    .map(|d| weekday_name(d).to_owned())
                    .collect(),
            ),
            start: self.window.start().strftime("%H:%M").to_string(),
            end: self.window.end().strftime("%H:%M").to_string(),
            zone: self.zone.name().to_owned(),
            mode: self.mode.name().to_owned(),
        }
    }

    /// The window.
    pub fn window(&self) -> &MaintenanceWindow {
        &self.window
    }

    /// The zone the window is read in.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// Outside or during.
    pub fn mode(&self) -> FreezeMode {
        self.mode
    }

    /// Whether `now` is inside the window, under the DST policy of planner::window.
    pub fn window_open_at(&self, now: Timestamp) -> bool {
        // Timestamps come from the store, the API or the clock, all far inside jiff's range
        // (years -9999 to 9999); one outside it is in no window.
        let Ok(t) = jiff::Timestamp::from_second(now.unix()) else {
            return false;
        };
        // `occurrences` yields the windows not yet closed at `t`, the first possibly open.
        self.window
            .occurrences(self.zone.tz(), t)
            .next()
            .is_some_and(|o| o.contains(t))
    }

    /// Whether the freeze holds at `now`.
    pub fn holds_at(&self, now: Timestamp) -> bool {
        match self.mode {
            FreezeMode::During => self.window_open_at(now),
            FreezeMode::Outside => !self.window_open_at(now),
        }
    }
}

impl fmt::Display for Freeze {
    /// `outside 09:00-15:30 mon,tue,wed,thu,fri America/Los_Angeles`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.mode.name(), self.window, self.zone)
    }
}

/// Who released a lock, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The actor.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Why.
    pub reason: String,
}

/// A deploy lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// `lock-N`.
    pub id: String,
    /// Why it was taken.
    pub reason: String,
    /// Who took it (`controller` for the executor's automatic locks).
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// When it stops holding by itself, if ever.
    pub until: Option<Timestamp>,
    /// The hours it holds, if not always.
    pub freeze: Option<Freeze>,
    /// The rollout whose abort took it, for automatic locks.
    pub auto_from: Option<String>,
    /// Its release, once released.
    pub released: Option<Released>,
}

impl Lock {
    /// Whether the lock holds at `now`: not released, `until` not reached, and inside (or
    /// outside) its freeze window if it has one.
    pub fn holds_at(&self, now: Timestamp) -> bool {
        if self.released.is_some() || self.until.is_some_and(|u| now >= u) {
            return false;
        }
        self.freeze.as_ref().is_none_or(|f| f.holds_at(now))
    }

    /// The lock as the API shows it, with `holding` at `now`.
    pub fn to_json(&self, now: Timestamp) -> serde_json::Value {
        json!({
            "id": self.id,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "until": self.until,
            "freeze": self.freeze.as_ref().map(Freeze::spec),
            "holding": self.holds_at(now),
            "auto_from": self.auto_from,
            "released": self.released.as_ref().map(|r| json!({
                "by": r.by, "at": r.at, "reason": r.reason,
            })),
        })
    }

    fn seq(&self) -> Option<u64> {
        self.id.strip_prefix("lock-")?.parse().ok()
    }
}

/// What a new lock asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLock {
    /// Why (1 to [`MAX_REASON_CHARS`] characters).
    pub reason: String,
    /// When it stops holding by itself; must be after `now`.
    pub until: Option<Timestamp>,
    /// The hours it holds, if not always.
    pub freeze: Option<Freeze>,
    /// The rollout whose abort takes it (the executor's automatic lock).
    pub auto_from: Option<String>,
}

/// Checks a reason's length.
pub fn check_reason(reason: &str, what: &str) -> Result<(), LockError> {
    let n = reason.chars().count();
    if reason.trim().is_empty() || n > MAX_REASON_CHARS {
        return Err(LockError::Invalid(format!(
            "{what}: between 1 and {MAX_REASON_CHARS} characters (got {n})"
        )));
    }
    Ok(())
}

/// A lock as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockRecord {
    id: String,
    reason: String,
    created_by: String,
    created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    freeze: Option<FreezeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auto_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    released: Option<ReleasedRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleasedRecord {
    by: String,
    at: Timestamp,
    reason: String,
}

impl LockRecord {
    fn from_lock(l: &Lock) -> LockRecord {
        LockRecord {
            id: l.id.clone(),
            reason: l.reason.clone(),
            created_by: l.created_by.clone(),
            created_at: l.created_at,
            until: l.until,
            freeze: l.freeze.as_ref().map(Freeze::spec),
            auto_from: l.auto_from.clone(),
            released: l.released.as_ref().map(|r| ReleasedRecord {
                by: r.by.clone(),
                at: r.at,
                reason: r.reason.clone(),
            }),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Lock, DbError> {
        let corrupt = |e: String| DbError::Corrupt(format!("lock: {e}"));
        let r: LockRecord = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let freeze = r
            .freeze
            .as_ref()
            .map(Freeze::from_spec)
            .transpose()
            .map_err(|e| corrupt(format!("{}: {e}", r.id)))?;
        let lock = Lock {
            id: r.id,
            reason: r.reason,
            created_by: r.created_by,
            created_at: r.created_at,
            until: r.until,
            freeze,
            auto_from: r.auto_from,
            released: r.released.map(|x| Released {
                by: x.by,
                at: x.at,
                reason: x.reason,
            }),
        };
        if lock.seq().is_none() {
            return Err(corrupt(format!("{:?} is not lock-N", lock.id)));
        }
        Ok(lock)
    }
}

fn key(id: &str) -> Vec<u8> {
    format!("{LOCK_PREFIX}{id}").into_bytes()
}

fn details(lock: &Lock, reason: &str) -> swell_proto::json::Value {
    let d = json!({
        "id": lock.id,
        "reason": reason,
        "until": lock.until,
        "freeze": lock.freeze.as_ref().map(Freeze::spec),
        "auto_from": lock.auto_from,
    });
    // Strings and nulls only: the conversion cannot fail; an empty object would still record
    // the action.
    audit::details(&d).unwrap_or_else(|_| swell_proto::json::Value::Object(BTreeMap::new()))
}

#[derive(Debug, Default)]
struct Cache {
    /// By sequence number.
    locks: BTreeMap<u64, Lock>,
    /// The last sequence number handed out.
    seq: u64,
}

/// The cloneable handle on the locks: a cache of every lock (there are few) over the store,
/// which it writes through the audit log's writer (every change is one audited batch).
#[derive(Debug, Clone)]
pub struct Locks {
    audit: AuditLog,
    cache: Arc<Mutex<Cache>>,
}

impl Locks {
    /// Loads every lock.
    pub async fn open(db: Db, audit: AuditLog) -> Result<Locks, DbError> {
        let mut cache = Cache::default();
        for (_, v) in db
            .scan(Table::Rollouts, LOCK_PREFIX.as_bytes().to_vec())
            .await?
        {
            let lock = LockRecord::parse(&v)?;
            let seq = lock.seq().unwrap_or(0);
            cache.locks.insert(seq, lock);
        }
        let stored = match db.get(Table::Rollouts, SEQ_KEY.to_vec()).await? {
            Some(b) => parse_counter(&b)?,
            None => 0,
        };
        // The counter and the records are written together, but take the larger anyway so an
        // id is never handed out twice.
        let highest = cache.locks.keys().next_back().copied().unwrap_or(0);
        cache.seq = stored.max(highest);
        Ok(Locks {
            audit,
            cache: Arc::new(Mutex::new(cache)),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        // The cache is only ever replaced whole-entry, so a panic elsewhere cannot leave it
        // half-updated.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The locks that hold at `now`, oldest first.
    pub fn holding(&self, now: Timestamp) -> Vec<Lock> {
        self.cache()
            .locks
            .values()
            .filter(|l| l.holds_at(now))
            .cloned()
            .collect()
    }

    /// Unreleased locks (every lock with `include_released`), newest first.
    pub fn list(&self, include_released: bool) -> Vec<Lock> {
        self.cache()
            .locks
            .values()
            .rev()
            .filter(|l| include_released || l.released.is_none())
            .cloned()
            .collect()
    }

    /// One lock.
    pub fn get(&self, id: &str) -> Option<Lock> {
        let seq = id.strip_prefix("lock-")?.parse::<u64>().ok()?;
        self.cache().locks.get(&seq).cloned()
    }

    /// Validates `new` against `now`.
    pub fn check(new: &NewLock, now: Timestamp) -> Result<(), LockError> {
        check_reason(&new.reason, "reason")?;
        if let Some(u) = new.until
            && u <= now
        {
            return Err(LockError::Invalid(format!(
                "until: {u} is not in the future (now {now})"
            )));
        }
        Ok(())
    }

    /// Takes a lock, audited.
    pub async fn create(
        &self,
        new: NewLock,
        actor: &str,
        now: Timestamp,
    ) -> Result<Lock, LockError> {
        Self::check(&new, now)?;
        let mut w = self.audit.writer().await;
        let mut batch = Batch::new();
        let lock = self.create_in(&mut batch, &mut w, new, actor, now);
        w.commit(batch).await?;
        self.installed(lock.clone());
        Ok(lock)
    }

    /// For the executor's auto-lock after an abort: adds the lock's puts and its audit entry
    /// to a batch the caller commits (with an AuditWriter the caller holds); call
    /// [`Locks::installed`] after the commit succeeds to update the cache.
    ///
    /// `new` is not validated here: a reason longer than [`MAX_REASON_CHARS`] is cut.
    pub fn create_in(
        &self,
        batch: &mut Batch,
        w: &mut AuditWriter<'_>,
        new: NewLock,
        actor: &str,
        now: Timestamp,
    ) -> Lock {
        let seq = {
            let mut cache = self.cache();
            cache.seq += 1;
            cache.seq
        };
        let lock = Lock {
            id: format!("lock-{seq}"),
            reason: new.reason.chars().take(MAX_REASON_CHARS).collect(),
            created_by: actor.to_owned(),
            created_at: now,
            until: new.until,
            freeze: new.freeze,
            auto_from: new.auto_from,
            released: None,
        };
        batch
            .require(Table::Rollouts, key(&lock.id), None)
            .put(
                Table::Rollouts,
                key(&lock.id),
                to_bytes(&LockRecord::from_lock(&lock)),
            )
            .put(Table::Rollouts, SEQ_KEY.to_vec(), counter_bytes(seq));
        w.append(
            batch,
            now,
            actor,
            "lock.create",
            details(&lock, &lock.reason),
        );
        lock
    }

    /// Puts a lock whose batch was committed into the cache.
    pub fn installed(&self, lock: Lock) {
        if let Some(seq) = lock.seq() {
            let mut cache = self.cache();
            cache.seq = cache.seq.max(seq);
            cache.locks.insert(seq, lock);
        }
    }

    /// Releases a lock, audited; a released lock cannot be released again.
    pub async fn release(
        &self,
        id: &str,
        reason: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<Lock, LockError> {
        check_reason(reason, "reason")?;
        // The writer serializes every lock write, so the state read below is current.
        let mut w = self.audit.writer().await;
        let old = self
            .get(id)
            .ok_or_else(|| LockError::NotFound(id.to_owned()))?;
        if let Some(r) = &old.released {
            return Err(LockError::AlreadyReleased {
                id: old.id,
                by: r.by.clone(),
                at: r.at,
            });
        }
        let mut lock = old;
        lock.released = Some(Released {
            by: actor.to_owned(),
            at: now,
            reason: reason.to_owned(),
        });
        let mut batch = Batch::new();
        batch.put(
            Table::Rollouts,
            key(&lock.id),
            to_bytes(&LockRecord::from_lock(&lock)),
        );
        w.append(
            &mut batch,
            now,
            actor,
            "lock.release",
            details(&lock, reason),
        );
        w.commit(batch).await?;
        self.installed(lock.clone());
        Ok(lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn freeze(days: Option<&[&str]>, start: &str, end: &str, zone: &str, mode: &str) -> Freeze {
        Freeze::from_spec(&FreezeSpec {
            days: days.map(|d| d.iter().map(|s| (*s).to_owned()).collect()),
            start: start.into(),
            end: end.into(),
            zone: zone.into(),
            mode: mode.into(),
        })
        .unwrap()
    }

    /// "Outside mon-fri 09:00-15:30 America/Los_Angeles" the week the clocks spring forward
    /// (Sunday 2027-03-14) and the week they fall back (Sunday 2027-11-07): the window follows
    /// local time, PST (-08:00) before and PDT (-07:00) after, and its end is exclusive.
    #[test]
    fn outside_business_hours_across_dst_changes() {
        let weekdays = ["mon", "tue", "wed", "thu", "fri"];
        let f = freeze(
            Some(&weekdays),
            "09:00",
            "15:30",
            "America/Los_Angeles",
            "outside",
        );
        assert_eq!(
            f.to_string(),
            "outside 09:00-15:30 mon,tue,wed,thu,fri America/Los_Angeles"
        );
        let cases = [
            // Friday before, PST: 08:59 holds, 09:00 does not, 15:29 does not, 15:30 holds.
            ("2027-03-12T16:59:00Z", true),
            ("2027-03-12T17:00:00Z", false),
            ("2027-03-12T23:29:00Z", false),
            ("2027-03-12T23:30:00Z", true),
            // Saturday noon, and Sunday during the gap itself.
            ("2027-03-13T20:00:00Z", true),
            ("2027-03-14T10:30:00Z", true),
            // Monday after, PDT: the same local times are an hour earlier in UTC.
            ("2027-03-15T15:59:00Z", true),
            ("2027-03-15T16:00:00Z", false),
            ("2027-03-15T22:29:00Z", false),
            ("2027-03-15T22:30:00Z", true),
            // 09:00 PST would be 17:00Z: by then the window has long been open.
            ("2027-03-15T17:00:00Z", false),
            // Friday 2027-11-05, still PDT.
            ("2027-11-05T15:59:00Z", true),
            ("2027-11-05T16:00:00Z", false),
            ("2027-11-05T22:30:00Z", true),
            // Saturday, and Sunday's repeated 01:00 hour.
            ("2027-11-06T18:00:00Z", true),
            ("2027-11-07T09:30:00Z", true),
            // Monday 2027-11-08, PST again.
            ("2027-11-08T16:59:00Z", true),
            ("2027-11-08T17:00:00Z", false),
            ("2027-11-08T23:29:00Z", false),
            ("2027-11-08T23:30:00Z", true),
        ];
        for (at, holds) in cases {
            assert_eq!(f.holds_at(t(at)), holds, "at {at}");
        }
    }

    /// A `during` freeze over the spring-forward night follows the DST policy: it opens at
    /// 01:00 PST and ends at 04:00 PDT (two real hours); one wholly inside the gap never opens.
    #[test]
    fn during_a_window_with_the_gap_inside() {
        let f = freeze(
            Some(&["sun"]),
            "01:00",
            "04:00",
            "America/Los_Angeles",
            "during",
        );
        assert!(!f.holds_at(t("2027-03-14T08:59:59Z")));
        assert!(f.holds_at(t("2027-03-14T09:00:00Z")));
        assert!(f.holds_at(t("2027-03-14T10:59:59Z")));
        assert!(!f.holds_at(t("2027-03-14T11:00:00Z")));
        let gap = freeze(
            Some(&["sun"]),
            "02:00",
            "02:30",
            "America/Los_Angeles",
            "during",
        );
        for at in [
            "2027-03-14T09:59:00Z",
            "2027-03-14T10:00:00Z",
            "2027-03-14T10:15:00Z",
        ] {
            assert!(!gap.holds_at(t(at)), "{at}");
        }
        // The next Sunday it opens as written: 02:00 PDT is 09:00Z.
        assert!(gap.holds_at(t("2027-03-21T09:00:00Z")));
    }

    #[test]
    fn a_window_across_midnight_and_every_day() {
        let f = freeze(None, "22:00", "06:00", "UTC", "during");
        assert_eq!(f.spec().days.unwrap().len(), 7);
        assert!(f.holds_at(t("2027-01-01T23:00:00Z")));
        assert!(f.holds_at(t("2027-01-02T05:59:00Z")));
        assert!(!f.holds_at(t("2027-01-02T06:00:00Z")));
    }

    #[test]
    fn invalid_freezes_are_named() {
        let spec = |days: Option<Vec<&str>>, start: &str, zone: &str, mode: &str| FreezeSpec {
            days: days.map(|d| d.into_iter().map(str::to_owned).collect()),
            start: start.into(),
            end: "10:00".into(),
            zone: zone.into(),
            mode: mode.into(),
        };
        let err = |s: FreezeSpec| Freeze::from_spec(&s).unwrap_err();
        assert!(err(spec(None, "9:00", "UTC", "during")).contains("freeze.start"));
        assert!(err(spec(None, "10:00", "UTC", "during")).contains("end equals start"));
        assert!(err(spec(Some(vec![]), "09:00", "UTC", "during")).contains("no weekday"));
        assert!(err(spec(Some(vec!["Mon"]), "09:00", "UTC", "during")).contains("freeze.days"));
        assert!(err(spec(Some(vec!["mon", "mon"]), "09:00", "UTC", "during")).contains("twice"));
        assert!(err(spec(None, "09:00", "Mars/Olympus", "during")).contains("freeze.zone"));
        assert!(err(spec(None, "09:00", "UTC", "always")).contains("freeze.mode"));
    }

    #[test]
    fn until_and_release_end_a_lock() {
        let mut lock = Lock {
            id: "lock-1".into(),
            reason: "r".into(),
            created_by: "alice".into(),
            created_at: t("2027-01-01T00:00:00Z"),
            until: Some(t("2027-01-02T00:00:00Z")),
            freeze: None,
            auto_from: None,
            released: None,
        };
        assert!(lock.holds_at(t("2027-01-01T12:00:00Z")));
        assert!(!lock.holds_at(t("2027-01-02T00:00:00Z")));
        lock.until = None;
        assert!(lock.holds_at(t("2030-01-01T00:00:00Z")));
        lock.released = Some(Released {
            by: "bob".into(),
            at: t("2027-01-01T12:00:00Z"),
            reason: "done".into(),
        });
        assert!(!lock.holds_at(t("2027-01-01T06:00:00Z")));
        assert_eq!(lock.to_json(t("2027-01-01T06:00:00Z"))["holding"], false);
    }

    async fn open(dir: &std::path::Path) -> (Locks, AuditLog) {
        let path = dir.join("state.redb");
        let store = tokio::task::spawn_blocking(move || crate::store::Engine::Redb.open(&path))
            .await
            .unwrap()
            .unwrap();
        let db = Db::new(Arc::from(store));
        let audit = AuditLog::open(db.clone()).await.unwrap();
        (Locks::open(db, audit.clone()).await.unwrap(), audit)
    }

    fn new_lock(reason: &str) -> NewLock {
        NewLock {
            reason: reason.into(),
            until: None,
            freeze: None,
            auto_from: None,
        }
    }

    /// Create, hold, release, refuse a second release; the executor's batch path; ids keep
    /// counting after a reopen; every change is audited.
    #[tokio::test]
    async fn locks_are_stored_audited_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let now = t("2027-03-15T12:00:00Z");
        {
            let (locks, audit) = open(dir.path()).await;
            let a = locks
                .create(new_lock("freeze"), "alice", now)
                .await
                .unwrap();
            assert_eq!(a.id, "lock-1");
            assert_eq!(locks.holding(now), std::slice::from_ref(&a));
            let err = locks
                .create(
                    NewLock {
                        until: Some(now),
                        ..new_lock("x")
                    },
                    "alice",
                    now,
                )
                .await
                .unwrap_err();
            assert!(err.to_string().contains("not in the future"), "{err}");
            assert!(locks.create(new_lock(" "), "alice", now).await.is_err());

            let mut w = audit.writer().await;
            let mut batch = Batch::new();
            let auto = NewLock {
                auto_from: Some("r-3".into()),
                ..new_lock("rollout r-3 aborted")
            };
            let b = locks.create_in(&mut batch, &mut w, auto, "controller", now);
            assert!(
                locks.holding(now).len() == 1,
                "not installed before the commit"
            );
            w.commit(batch).await.unwrap();
            locks.installed(b.clone());
            assert_eq!(b.id, "lock-2");
            assert_eq!(locks.holding(now).len(), 2);

            let r = locks.release("lock-1", "done", "bob", now).await.unwrap();
            assert_eq!(r.released.as_ref().unwrap().by, "bob");
            let again = locks.release("lock-1", "again", "bob", now).await;
            assert!(matches!(again, Err(LockError::AlreadyReleased { .. })));
            let missing = locks.release("lock-9", "x", "bob", now).await;
            assert!(matches!(missing, Err(LockError::NotFound(_))));
            assert_eq!(locks.list(false), std::slice::from_ref(&b));
            assert_eq!(locks.list(true).len(), 2);

            let actions: Vec<String> = audit
                .list()
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.action)
                .collect();
            assert_eq!(actions, ["lock.create", "lock.create", "lock.release"]);
        }
        let (locks, _) = open(dir.path()).await;
        assert_eq!(locks.list(true).len(), 2);
        assert!(locks.get("lock-1").unwrap().released.is_some());
        assert_eq!(
            locks.get("lock-2").unwrap().auto_from.as_deref(),
            Some("r-3")
        );
        let c = locks.create(new_lock("next"), "alice", now).await.unwrap();
        assert_eq!(c.id, "lock-3");
    }
}
