//! Error signatures and the new-signature rule.
//!
//! Templating (a log line reduced to a template, hashed to a [`SignatureId`], one example line
//! kept) lives in `swell_proto::signals`, because the agent must compute the same ids as the
//! controller; it is re-exported here so the analysis reads as before. What stays here is the
//! analysis' own rule: which signatures seen on updated devices are new.

use std::collections::{BTreeMap, BTreeSet};

pub use swell_proto::signals::{
    MAX_EXAMPLE_BYTES, MAX_LINE_BYTES, Signature, SignatureId, template,
};

/// How often one signature was seen on one side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sighting {
    /// Devices that logged it.
    pub devices: usize,
    /// Lines counted, over all those devices.
    pub events: u64,
}

/// The signatures seen on updated devices that are **new**: in neither `known` (what the old
/// release has logged before this stage) nor `on_baseline` (what not-yet-updated devices
/// logged during it), and seen on at least `min_devices` updated devices. Ordered by devices,
/// most first, then by id.
///
/// One device is not enough by default: fleets print never-seen one-off lines all the time
/// (a disk about to fail, a neighbour's odd DHCP server), on old releases as much as new,
/// while a bug shipped in a release shows up on every device that meets its trigger.
pub fn new_signatures(
    on_updated: &BTreeMap<SignatureId, Sighting>,
    known: &BTreeSet<SignatureId>,
    on_baseline: &BTreeSet<SignatureId>,
    min_devices: usize,
) -> Vec<(SignatureId, Sighting)> {
    let mut new: Vec<(SignatureId, Sighting)> = on_updated
        .iter()
        .filter(|(id, s)| {
            s.devices >= min_devices.max(1) && !known.contains(id) && !on_baseline.contains(id)
        })
        .map(|(id, s)| (*id, *s))
        .collect();
    new.sort_by(|a, b| b.1.devices.cmp(&a.1.devices).then(a.0.cmp(&b.0)));
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    /// New means: not known before, not on the baseline, and on enough updated devices.
    #[test]
    fn new_signature_rule() {
        let id = |n: u8| SignatureId::from_bytes([n; 8]);
        let seen = |devices: usize| Sighting {
            devices,
            events: 10,
        };
        let on_updated = BTreeMap::from([
            (id(1), seen(5)), // known from history
            (id(2), seen(3)), // on the baseline now
            (id(3), seen(1)), // new, one device
            (id(4), seen(2)), // new
            (id(5), seen(7)), // new
        ]);
        let known = BTreeSet::from([id(1)]);
        let baseline = BTreeSet::from([id(2)]);
        let new = new_signatures(&on_updated, &known, &baseline, 2);
        assert_eq!(new, vec![(id(5), seen(7)), (id(4), seen(2))]);
        assert_eq!(new_signatures(&on_updated, &known, &baseline, 1).len(), 3);
    }
}
