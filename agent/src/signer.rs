//! Signing of everything the device sends, and the sequence numbers that make replays
//! detectable.
//!
//! Sequence numbers are `epoch × 2^32 + n`: `epoch` is persisted in the journal and raised once
//! per agent start, `n` counts messages in memory. Numbers therefore rise strictly across
//! restarts and power cuts without a disk write per message, which matters for heartbeats on
//! flash. 2^53 (the largest integer the JSON contract allows) leaves room for 2^21 starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use swell_proto::messages::{DeviceMessage, sign_device_message};
use swell_proto::{DeviceId, Timestamp};

/// Bits of a sequence number that count messages within one agent start.
const COUNTER_BITS: u32 = 32;

/// The current wall-clock time (the agent's one clock read for message timestamps).
pub fn now() -> Timestamp {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Timestamp::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
}

/// Signs device messages with the device key and fresh sequence numbers.
#[derive(Debug)]
pub struct Signer {
    device: DeviceId,
    key: SigningKey,
    next: AtomicU64,
}

impl Signer {
    /// A signer for `device` whose sequence numbers start at `epoch × 2^32`.
    pub fn new(device: DeviceId, key: SigningKey, epoch: u64) -> Self {
        Self {
            device,
            key,
            next: AtomicU64::new(epoch << COUNTER_BITS),
        }
    }

    /// The device this signer speaks for.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// Signs `message` issued at `issued` with the next sequence number.
    pub fn sign<T: DeviceMessage>(
        &self,
        message: &T,
        issued: Timestamp,
    ) -> Result<Vec<u8>, swell_proto::Error> {
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        sign_device_message(message, seq, issued, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swell_proto::PublicKey;
    use swell_proto::messages::{Presence, open_device_message};

    /// Messages verify with the device's public key, and a later start's numbers are higher
    /// than any number of an earlier start.
    #[test]
    fn sequence_numbers_rise_across_starts() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = PublicKey::from(key.verifying_key());
        let device = DeviceId::new("gw-1").unwrap();
        let msg = Presence {
            device: device.clone(),
            issued: Timestamp::from_unix(1_800_000_000),
            online: true,
            agent_version: "0.1.0".into(),
        };
        let first = Signer::new(device.clone(), key.clone(), 1);
        let second = Signer::new(device.clone(), key, 2);
        let now = Timestamp::from_unix(1_800_000_001);
        let mut seqs = Vec::new();
        for signer in [&first, &first, &second] {
            let bytes = signer.sign(&msg, msg.issued).unwrap();
            let opened = open_device_message::<Presence>(&bytes, &device, &public, now).unwrap();
            seqs.push(opened.seq);
        }
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }
}
