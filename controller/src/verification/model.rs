//! What the analysis reads: per-device time series of counters, gauges and error-signature
//! counts, each device with the metadata that decides who is compared with whom.
//!
//! These are the controller's internal types (no serde): the ingest of the agents' health
//! batches converts into them at the edge. Every series is a list of points in any order;
//! the analysis picks the points inside each look's window and never assumes the list is
//! sorted, complete or free of gaps (devices go silent, batches arrive late).
//!
//! | Series | Point | Meaning |
//! |---|---|---|
//! | counter (`crashes`, `restarts`, `reboots`, `health_check_failures`) | [`CounterPoint`] | `count` events in `(start, end]`; the interval is also the time the device was observed, so gaps are not counted as quiet time |
//! | gauge (`memory_kib`, `cpu_percent`, `boot_time_s`) | [`GaugePoint`] | the value at `at` (or averaged over the batch that ends at `at`) |
//! | error signature | [`CounterPoint`] | `count` lines of that signature in `(start, end]` |
//!
//! Counters are *increments*: the ingest turns an agent's cumulative counters into
//! differences and drops the interval across a counter reset (an agent restart), rather than
//! inventing events.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use swell_proto::{DeviceId, HardwareId};

use super::signatures::{Signature, SignatureId};
use crate::planner::Zone;

/// Which side of the comparison a device is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    /// It committed the stage's release at `committed`.
    Updated {
        /// When it reported the new release committed (after its trial boot).
        committed: Timestamp,
    },
    /// It still runs the release the rollout replaces: a candidate for the baseline.
    Baseline,
}

/// What the analysis knows about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMeta {
    /// Its id (reports name devices by it).
    pub id: DeviceId,
    /// Its hardware model: devices are only ever compared within one model.
    pub hardware: HardwareId,
    /// Its time zone: the same zone means the same local time of day, so the same daily
    /// load pattern.
    pub zone: Zone,
    /// Its cohort, if any.
    pub cohort: Option<String>,
    /// Updated in this stage, or not yet updated.
    pub arm: Arm,
}

/// `count` events in the interval `(start, end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterPoint {
    /// Start of the interval (exclusive).
    pub start: Timestamp,
    /// End of the interval (inclusive).
    pub end: Timestamp,
    /// Events in it.
    pub count: u64,
}

/// A gauge's value at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugePoint {
    /// When it was measured.
    pub at: Timestamp,
    /// The value, in the metric's unit.
    pub value: f64,
}

/// One device's series.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSeries {
    /// Who it is and which side it is on.
    pub meta: DeviceMeta,
    /// Counter series by metric name.
    pub counters: BTreeMap<String, Vec<CounterPoint>>,
    /// Gauge series by metric name.
    pub gauges: BTreeMap<String, Vec<GaugePoint>>,
    /// Error-signature counts by signature.
    pub signatures: BTreeMap<SignatureId, Vec<CounterPoint>>,
}

impl DeviceSeries {
    /// A device with no data yet.
    pub fn new(meta: DeviceMeta) -> DeviceSeries {
        DeviceSeries {
            meta,
            counters: BTreeMap::new(),
            gauges: BTreeMap::new(),
            signatures: BTreeMap::new(),
        }
    }
}

/// Everything the analysis of one stage reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageData {
    /// The stage's updated devices and the baseline candidates (devices not yet updated;
    /// the analysis picks the comparable ones). Each device once.
    pub devices: Vec<DeviceSeries>,
    /// Template and example line of every signature in `devices`, for the reasons.
    pub catalog: BTreeMap<SignatureId, Signature>,
    /// Signatures the old release logged before this stage (the history kept for the
    /// fleet). A signature in here is never "new", only possibly "more frequent".
    pub known_signatures: BTreeSet<SignatureId>,
}
