//! The pure planner: (plan, fleet snapshot, now) → schedule.
//!
//! Two phases, both pure and both public so the executor can redo the second when a step
//! really begins:
//!
//! 1. [`assign`] puts each selected device in the first stage, in pipeline order, that selects
//!    it. A stage's share is taken from the devices not yet assigned that match its selector,
//!    rounded up; the devices a share takes are the `canary` cohort first, then in order of
//!    the SHA-256 of their id (a stable pseudo-random spread over sites and zones), then by
//!    id.
//! 2. [`schedule_step`] gives each device of one step the earliest start that satisfies, in
//!    this order of precedence: its zone's turn (zones open in [`ZoneOrder`], a zone never
//!    before the one ahead of it), its local maintenance window (the start lies inside it),
//!    the start rate (and ramp), `max_in_flight` and every disruption-budget group, the last
//!    two counted statically: a device is taken to be in flight from its start for its whole
//!    device timeout. Devices are placed zone by zone, taking the step's stages in turn
//!    within a zone, each stage's devices by id.
//!
//! [`plan`] chains the steps: a step may begin once the one before it has, at the latest,
//! finished: its last start plus that stage's device timeout plus its soak.
//!
//! Nothing here reads a clock; the same inputs give the same schedule, and the order of the
//! snapshot's input cannot matter because [`FleetSnapshot`] sorts by id.

use std::collections::BTreeMap;

use jiff::tz::Offset;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use swell_proto::DeviceId;

use super::capacity::{Intervals, MINUTE_MS, RateSlots};
use super::fleet::{FleetDevice, FleetSnapshot, Zone};
use super::plan::{FailureAction, Limits, Plan, Stage, ZoneOrder};
use super::window::WindowOccurrence;

/// The cohort that shares take first: canary devices are enrolled to be reached first.
pub const CANARY_COHORT: &str = "canary";

/// How far past a step's earliest start the planner looks for room before it gives up: a
/// year. A plan that needs longer has limits too tight for its fleet.
pub const HORIZON: SignedDuration = SignedDuration::from_hours(366 * 24);

/// Why no schedule could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The assignment names a device the snapshot does not have.
    #[error("device {0} is assigned to a stage but is not in the fleet snapshot")]
    UnknownDevice(DeviceId),
    /// No step with this index.
    #[error("the plan has no step {0}")]
    NoSuchStep(usize),
    /// A device found no room within [`HORIZON`].
    #[error(
        "stage {stage:?}: no start for device {device} in {zone} within 366 days of {from}; \
         the window, rate limits and budgets leave too little room"
    )]
    NoRoom {
        /// The stage.
        stage: String,
        /// The device's zone.
        zone: String,
        /// The first device that found none.
        device: DeviceId,
        /// The step's earliest start.
        from: Timestamp,
    },
}

/// Which devices each stage takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Per stage, in pipeline order (the order of [`Plan::stages`]): its devices, by id.
    pub stages: Vec<Vec<DeviceId>>,
    /// Devices the rollout selector selects that no stage took, by id.
    pub unassigned: Vec<DeviceId>,
    /// Device ids a selector lists explicitly (`devices = [...]`) that the snapshot does not
    /// have: typos, or devices since revoked. Nothing is planned for them.
    pub not_in_fleet: Vec<DeviceId>,
}

/// The schedule of a whole rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The `now` it was planned at.
    pub now: Timestamp,
    /// Which devices each stage takes.
    pub assignment: Assignment,
    /// The steps, in order.
    pub steps: Vec<StepSchedule>,
}

/// One step's schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepSchedule {
    /// Its index in the pipeline, from 0.
    pub index: usize,
    /// The earliest it may begin: `now` for the first step, else the estimated end of the one
    /// before. A stage with an approval gate begins no earlier than its approval.
    pub not_before: Timestamp,
    /// When it has finished at the latest if no device takes longer than its timeout and no
    /// approval waits: the latest estimated stage end.
    pub estimated_end: Timestamp,
    /// Its stages, in plan order.
    pub stages: Vec<StageSchedule>,
}

/// One stage's schedule and the gate numbers the planner fixes for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSchedule {
    /// The stage's name.
    pub name: String,
    /// Whether an operator must approve before it starts.
    pub approval: bool,
    /// How many devices it has.
    pub devices: usize,
    /// Devices that must be Committed and soaked for the stage to pass.
    pub success_required: usize,
    /// Failures tolerated; one more trips the failure gate.
    pub failures_tolerated: usize,
    /// What tripping does.
    pub failure_action: FailureAction,
    /// The soak after commit.
    pub soak: SignedDuration,
    /// The device timeout.
    pub device_timeout: SignedDuration,
    /// The last start plus the device timeout plus the soak (`not_before` if it has no
    /// devices: an empty stage passes at once).
    pub estimated_end: Timestamp,
    /// Its zones with devices, in the step's zone order.
    pub zones: Vec<ZoneSchedule>,
}

/// One zone's devices in one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSchedule {
    /// The zone.
    pub zone: Zone,
    /// Its UTC offset at the step's `not_before` (what east-to-west order sorts by).
    pub utc_offset: Offset,
    /// No device of the zone starts before this: the zone's turn in the zone order.
    pub opens: Timestamp,
    /// The window occurrences used, in time order.
    pub windows: Vec<WindowSchedule>,
}

/// The starts inside one window occurrence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSchedule {
    /// The window.
    pub window: WindowOccurrence,
    /// Its starts, by time then device id.
    pub starts: Vec<DeviceStart>,
}

/// One device's planned start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStart {
    /// The device.
    pub device: DeviceId,
    /// When it may start (UTC).
    pub at: Timestamp,
    /// `at` plus the device timeout: until when the plan counts it in flight.
    pub in_flight_until: Timestamp,
}

/// A start with where it belongs, for walking a whole schedule in time order.
#[derive(Debug, Clone, Copy)]
pub struct PlannedStart<'s> {
    /// The step index.
    pub step: usize,
    /// The stage.
    pub stage: &'s StageSchedule,
    /// The zone.
    pub zone: &'s ZoneSchedule,
    /// The window.
    pub window: &'s WindowOccurrence,
    /// The start.
    pub start: &'s DeviceStart,
}

impl Schedule {
    /// Every start, by time then device id.
    pub fn starts(&self) -> Vec<PlannedStart<'_>> {
        let mut all: Vec<PlannedStart<'_>> = self
            .steps
            .iter()
            .flat_map(|step| {
                step.stages.iter().flat_map(move |stage| {
                    stage.zones.iter().flat_map(move |zone| {
                        zone.windows.iter().flat_map(move |w| {
                            w.starts.iter().map(move |start| PlannedStart {
                                step: step.index,
                                stage,
                                zone,
                                window: &w.window,
                                start,
                            })
                        })
                    })
                })
            })
            .collect();
        all.sort_by(|a, b| (a.start.at, &a.start.device).cmp(&(b.start.at, &b.start.device)));
        all
    }

    /// How many devices the stages take.
    pub fn device_count(&self) -> usize {
        self.assignment.stages.iter().map(Vec::len).sum()
    }
}

/// The order in which a share takes devices: canaries first, then a stable hash spread.
fn share_key(d: &FleetDevice) -> (bool, [u8; 32], &DeviceId) {
    let hash: [u8; 32] = Sha256::digest(d.id.as_str().as_bytes()).into();
    (d.cohort.as_deref() != Some(CANARY_COHORT), hash, &d.id)
}

/// Phase 1: which devices each stage takes.
pub fn assign(plan: &Plan, fleet: &FleetSnapshot) -> Assignment {
    let mut remaining: Vec<&FleetDevice> = fleet
        .devices()
        .iter()
        .filter(|d| plan.selector().matches(d))
        .collect();
    let mut stages = Vec::new();
    for (_, stage) in plan.stages() {
        let mut candidates: Vec<&FleetDevice> = remaining
            .iter()
            .copied()
            .filter(|d| stage.selector.matches(d))
            .collect();
        if let Some(share) = stage.share {
            let n = share.take_of(candidates.len());
            candidates.sort_by_cached_key(|d| share_key(d));
            candidates.truncate(n);
        }
        let mut ids: Vec<DeviceId> = candidates.iter().map(|d| d.id.clone()).collect();
        ids.sort();
        remaining.retain(|d| ids.binary_search(&d.id).is_err());
        stages.push(ids);
    }
    let listed = std::iter::once(plan.selector())
        .chain(plan.stages().map(|(_, s)| &s.selector))
        .flat_map(|s| s.devices.iter());
    let mut not_in_fleet: Vec<DeviceId> = listed
        .filter(|id| fleet.get(id).is_none())
        .cloned()
        .collect();
    not_in_fleet.sort();
    not_in_fleet.dedup();
    Assignment {
        stages,
        unassigned: remaining.iter().map(|d| d.id.clone()).collect(),
        not_in_fleet,
    }
}

/// The whole schedule: [`assign`], then each step from the estimated end of the one before.
pub fn plan(plan: &Plan, fleet: &FleetSnapshot, now: Timestamp) -> Result<Schedule, PlanError> {
    let assignment = assign(plan, fleet);
    let mut steps = Vec::with_capacity(plan.steps().len());
    let mut not_before = now;
    for index in 0..plan.steps().len() {
        let step = schedule_step(plan, fleet, &assignment, index, not_before)?;
        not_before = step.estimated_end;
        steps.push(step);
    }
    Ok(Schedule {
        now,
        assignment,
        steps,
    })
}

fn to_ms(t: Timestamp) -> i64 {
    let ms = t.as_millisecond();
    // Round up, so that no start is before `t`.
    if t.subsec_nanosecond().rem_euclid(1_000_000) == 0 {
        ms
    } else {
        ms + 1
    }
}

fn from_ms(ms: i64) -> Timestamp {
    // Only instants derived from real window occurrences reach here, all well inside jiff's
    // range; the fallback keeps the function total.
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX)
}

fn duration_ms(d: SignedDuration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The zones of a step's devices in the order they open.
fn zone_order(order: &ZoneOrder, zones: Vec<Zone>, at: Timestamp) -> Vec<Zone> {
    let east_to_west = |z: &Zone| (-z.tz().to_offset(at).seconds(), z.name().to_owned());
    let mut rest = zones;
    rest.sort_by_cached_key(east_to_west);
    match order {
        ZoneOrder::EastToWest => rest,
        ZoneOrder::Explicit(listed) => {
            let mut out: Vec<Zone> = listed
                .iter()
                .filter(|z| rest.contains(z))
                .cloned()
                .collect();
            rest.retain(|z| !listed.contains(z));
            out.extend(rest);
            out
        }
    }
}

impl Limits {
    /// Starts allowed in the UTC minute holding `t`, for a step whose ramp began at `origin`:
    /// `max_starts_per_minute`, or the ramp's value for that minute. The executor holds real
    /// starts to the same caps the planner placed them under.
    pub fn starts_allowed(&self, origin: Timestamp, t: Timestamp) -> u32 {
        cap(self, to_ms(origin), to_ms(t).div_euclid(MINUTE_MS))
    }
}

/// Starts per minute allowed in `minute` of a step whose ramp began at `origin` (ms).
fn cap(limits: &Limits, origin: i64, minute: i64) -> u32 {
    let max = limits.max_starts_per_minute;
    let Some(ramp) = limits.ramp else {
        return max;
    };
    let every = duration_ms(ramp.every).max(MINUTE_MS);
    let k = (minute * MINUTE_MS - origin).max(0) / every;
    let k = u32::try_from(k).unwrap_or(u32::MAX);
    ramp.factor
        .checked_pow(k)
        .and_then(|f| f.checked_mul(ramp.initial_per_minute))
        .map_or(max, |r| r.min(max))
}

/// One device waiting to be placed.
struct Pending<'a> {
    stage: usize,
    device: &'a FleetDevice,
}

/// Static capacity shared by a step's stages.
struct Capacity<'p> {
    limits: &'p Limits,
    ramp_origin: i64,
    slots: RateSlots,
    in_flight: Intervals,
    groups: BTreeMap<(String, String), Intervals>,
}

impl Capacity<'_> {
    /// The earliest start at or after `from` inside `window`, if any; it is not yet taken.
    fn fit(&self, device: &FleetDevice, from: i64, window_end: i64, timeout: i64) -> Fit {
        let mut t = from;
        loop {
            let s = self
                .slots
                .next_free(t, |m| cap(self.limits, self.ramp_origin, m));
            if s >= window_end {
                return Fit::WindowFull;
            }
            let e = s.saturating_add(timeout);
            let mut jump = self.in_flight.blocked(s, e, self.limits.max_in_flight);
            for (key, value, n) in self.limits.budget_groups(&device.tags) {
                if let Some(iv) = self.groups.get(&(key.to_owned(), value.to_owned())) {
                    jump = jump.max(iv.blocked(s, e, n));
                }
            }
            match jump {
                None => return Fit::At(s),
                Some(j) => t = j,
            }
        }
    }

    fn take(&mut self, device: &FleetDevice, s: i64, timeout: i64) {
        let minute = s.div_euclid(MINUTE_MS);
        self.slots
            .take(s, cap(self.limits, self.ramp_origin, minute));
        let e = s.saturating_add(timeout);
        self.in_flight.insert(s, e);
        for (key, value, _) in self.limits.budget_groups(&device.tags) {
            self.groups
                .entry((key.to_owned(), value.to_owned()))
                .or_default()
                .insert(s, e);
        }
    }
}

enum Fit {
    At(i64),
    WindowFull,
}

/// Phase 2 for one step: when each of its devices may start, given that the step may begin at
/// `not_before`. The executor calls this again with the real time a step begins.
pub fn schedule_step(
    plan: &Plan,
    fleet: &FleetSnapshot,
    assignment: &Assignment,
    index: usize,
    not_before: Timestamp,
) -> Result<StepSchedule, PlanError> {
    let step = plan
        .steps()
        .get(index)
        .ok_or(PlanError::NoSuchStep(index))?;
    let first_stage: usize = plan.steps()[..index].iter().map(|s| s.stages.len()).sum();
    let stages: Vec<&Stage> = step.stages.iter().collect();

    // The step's devices, per stage and zone.
    let mut by_zone: BTreeMap<Zone, Vec<Vec<&FleetDevice>>> = BTreeMap::new();
    for (k, _) in stages.iter().enumerate() {
        let ids = assignment
            .stages
            .get(first_stage + k)
            .map_or(&[][..], Vec::as_slice);
        for id in ids {
            let d = fleet
                .get(id)
                .ok_or_else(|| PlanError::UnknownDevice(id.clone()))?;
            by_zone
                .entry(d.zone.clone())
                .or_insert_with(|| vec![Vec::new(); stages.len()])[k]
                .push(d);
        }
    }
    let zones = zone_order(
        plan.zone_order(),
        by_zone.keys().cloned().collect(),
        not_before,
    );

    // Each zone's turn: the first instant of its windows at or after the turn of the zone
    // ahead of it.
    let horizon = to_ms(not_before).saturating_add(duration_ms(HORIZON));
    let mut opens: BTreeMap<Zone, i64> = BTreeMap::new();
    let mut turn = to_ms(not_before);
    for zone in &zones {
        let first = plan
            .window()
            .occurrences(zone.tz(), from_ms(turn))
            .next()
            .map(|w| to_ms(w.start.timestamp()).max(turn))
            .filter(|t| *t <= horizon);
        let Some(first) = first else {
            // A zone is in `by_zone` only because one of the step's devices is in it.
            let culprit = by_zone[zone]
                .iter()
                .enumerate()
                .find_map(|(k, ds)| ds.first().map(|d| (k, *d)));
            if let Some((k, d)) = culprit {
                return Err(PlanError::NoRoom {
                    stage: stages[k].name.clone(),
                    zone: zone.name().to_owned(),
                    device: d.id.clone(),
                    from: not_before,
                });
            }
            continue;
        };
        turn = first;
        opens.insert(zone.clone(), first);
    }

    // Placement order: zone by zone; within a zone the stages in turn, each by device id.
    let mut pending: Vec<Pending<'_>> = Vec::new();
    for zone in &zones {
        let lists = &by_zone[zone];
        let longest = lists.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            for (k, list) in lists.iter().enumerate() {
                if let Some(d) = list.get(i) {
                    pending.push(Pending {
                        stage: k,
                        device: d,
                    });
                }
            }
        }
    }

    let mut capacity = Capacity {
        limits: plan.limits(),
        ramp_origin: zones
            .first()
            .and_then(|z| opens.get(z))
            .copied()
            .unwrap_or(0),
        slots: RateSlots::default(),
        in_flight: Intervals::default(),
        groups: BTreeMap::new(),
    };
    // stage -> zone -> window start -> (window, starts)
    type Placed = BTreeMap<i64, (WindowOccurrence, Vec<DeviceStart>)>;
    let mut placed: Vec<BTreeMap<Zone, Placed>> = vec![BTreeMap::new(); stages.len()];
    for p in &pending {
        let stage = stages[p.stage];
        let timeout = duration_ms(stage.device_timeout);
        let zone = &p.device.zone;
        let Some(&from) = opens.get(zone) else {
            // Every zone with a pending device got its turn above, or planning stopped.
            continue;
        };
        let no_room = || PlanError::NoRoom {
            stage: stage.name.clone(),
            zone: zone.name().to_owned(),
            device: p.device.id.clone(),
            from: not_before,
        };
        let mut t = from;
        let mut found = None;
        for w in plan.window().occurrences(zone.tz(), from_ms(from)) {
            let (ws, we) = (
                to_ms(w.start.timestamp()),
                w.end.timestamp().as_millisecond(),
            );
            if ws > horizon {
                break;
            }
            t = t.max(ws);
            if t >= we {
                continue;
            }
            if let Fit::At(s) = capacity.fit(p.device, t, we, timeout) {
                found = Some((s, w));
                break;
            }
        }
        let (s, w) = found.ok_or_else(no_room)?;
        if s > horizon {
            return Err(no_room());
        }
        capacity.take(p.device, s, timeout);
        placed[p.stage]
            .entry(zone.clone())
            .or_default()
            .entry(to_ms(w.start.timestamp()))
            .or_insert_with(|| (w, Vec::new()))
            .1
            .push(DeviceStart {
                device: p.device.id.clone(),
                at: from_ms(s),
                in_flight_until: from_ms(s.saturating_add(timeout)),
            });
    }

    let mut out = Vec::with_capacity(stages.len());
    for (k, stage) in stages.iter().enumerate() {
        let n = assignment.stages.get(first_stage + k).map_or(0, Vec::len);
        let mut by_zone = std::mem::take(&mut placed[k]);
        let mut last_start: Option<Timestamp> = None;
        let zones_out: Vec<ZoneSchedule> = zones
            .iter()
            .filter_map(|z| by_zone.remove(z).map(|w| (z, w)))
            .map(|(z, windows)| ZoneSchedule {
                zone: z.clone(),
                utc_offset: z.tz().to_offset(not_before),
                opens: from_ms(opens.get(z).copied().unwrap_or_default()),
                windows: windows
                    .into_values()
                    .map(|(window, mut starts)| {
                        starts.sort_by(|a, b| (a.at, &a.device).cmp(&(b.at, &b.device)));
                        if let Some(s) = starts.last() {
                            last_start = last_start.max(Some(s.at));
                        }
                        WindowSchedule { window, starts }
                    })
                    .collect(),
            })
            .collect();
        let estimated_end = match last_start {
            None => not_before,
            Some(t) => t
                .checked_add(stage.device_timeout)
                .and_then(|t| t.checked_add(stage.success.soak))
                .unwrap_or(Timestamp::MAX),
        };
        out.push(StageSchedule {
            name: stage.name.clone(),
            approval: stage.approval,
            devices: n,
            success_required: stage.success.required_of(n),
            failures_tolerated: stage.failure.tolerate.tolerated_of(n),
            failure_action: stage.failure.action,
            soak: stage.success.soak,
            device_timeout: stage.device_timeout,
            estimated_end,
            zones: zones_out,
        });
    }
    let estimated_end = out
        .iter()
        .map(|s| s.estimated_end)
        .max()
        .unwrap_or(not_before)
        .max(not_before);
    Ok(StepSchedule {
        index,
        not_before,
        estimated_end,
        stages: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::fleet::Zone;
    use std::collections::BTreeMap;
    use swell_proto::HardwareId;

    fn device(id: &str, cohort: Option<&str>) -> FleetDevice {
        FleetDevice {
            id: DeviceId::new(id).unwrap(),
            hardware: HardwareId::new("gw").unwrap(),
            zone: Zone::new("UTC").unwrap(),
            cohort: cohort.map(str::to_owned),
            tags: BTreeMap::new(),
            version: None,
        }
    }

    fn plan_with(steps: &str) -> Plan {
        Plan::from_toml(&format!(
            "[window]\nstart = \"02:00\"\nend = \"04:00\"\n\
             [limits]\nmax_in_flight = 5\nmax_starts_per_minute = 5\n\
             [defaults]\ndevice_timeout = \"10m\"\n\
             success = {{ committed = \"100%\", soak = \"0s\" }}\n\
             failure = {{ tolerate = 0, action = \"pause\" }}\n{steps}"
        ))
        .unwrap()
    }

    #[test]
    fn shares_take_canaries_first_then_a_stable_hash_order() {
        let fleet = FleetSnapshot::new(
            (0..10)
                .map(|i| device(&format!("d{i}"), (i == 7).then_some(CANARY_COHORT)))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let p = plan_with(
            "[[step]]\n[[step.stage]]\nname = \"first\"\nshare = 2\n\
             [[step]]\n[[step.stage]]\nname = \"rest\"",
        );
        let a = assign(&p, &fleet);
        assert_eq!(a.stages[0].len(), 2);
        assert!(a.stages[0].contains(&DeviceId::new("d7").unwrap()));
        assert_eq!(a.stages[1].len(), 8);
        assert!(a.unassigned.is_empty());
        // Stable: the same pick from the same ids, whatever else is in the fleet.
        assert_eq!(assign(&p, &fleet), a);
    }

    #[test]
    fn explicitly_listed_devices_missing_from_the_fleet_are_reported() {
        let fleet = FleetSnapshot::new([device("a", None), device("b", None)]).unwrap();
        let p = plan_with(
            "[[step]]\n[[step.stage]]\nname = \"listed\"\n\
             selector = { devices = [\"a\", \"ghost\"] }",
        );
        let a = assign(&p, &fleet);
        assert_eq!(a.stages, vec![vec![DeviceId::new("a").unwrap()]]);
        assert_eq!(a.unassigned, vec![DeviceId::new("b").unwrap()]);
        assert_eq!(a.not_in_fleet, vec![DeviceId::new("ghost").unwrap()]);
    }

    #[test]
    fn unknown_step_and_device_are_errors() {
        let fleet = FleetSnapshot::new([device("a", None)]).unwrap();
        let p = plan_with("[[step]]\n[[step.stage]]\nname = \"all\"");
        let now = Timestamp::UNIX_EPOCH;
        let a = assign(&p, &fleet);
        assert_eq!(
            schedule_step(&p, &fleet, &a, 1, now),
            Err(PlanError::NoSuchStep(1))
        );
        let empty = FleetSnapshot::default();
        assert_eq!(
            schedule_step(&p, &empty, &a, 0, now),
            Err(PlanError::UnknownDevice(DeviceId::new("a").unwrap()))
        );
    }
}
