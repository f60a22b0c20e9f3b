//! The trust anchor: the release role of a Swell trust root in a compact binary form, and the
//! threshold signature check that uses it.
//!
//! The rules are proto's: a key id is the SHA-256 of the 32-byte raw Ed25519 key; a threshold
//! counts *distinct* keys of the role; verification is strict (RFC 8032 with canonical `S`,
//! no small-order keys); a signature by a key of the role that does not verify is an error on
//! its own, whatever the other signatures say; signatures by other keys are ignored.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SWTA` |
//! | 4 | 1 | format, 1 |
//! | 5 | 1 | threshold (1 ..= key count, at most [`MAX_SIGNATURES`]) |
//! | 6 | 1 | key count (1 ..= [`MAX_ANCHOR_KEYS`]) |
//! | 7 | 1 | zero |
//! | 8 | 8 | version of the trust root it was derived from (little-endian) |
//! | 16 | 32 × count | raw Ed25519 public keys of the `release` role |

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::image::ImageError;

/// Most keys an anchor holds. A release role has a handful of keys; eight leaves room for a
/// rotation in progress without costing much RAM (64 bytes a key).
pub const MAX_ANCHOR_KEYS: usize = 8;

/// Most signatures an image carries, and so the highest threshold an anchor may demand. Each
/// costs 96 bytes of header and one Ed25519 verification at every boot.
pub const MAX_SIGNATURES: usize = 4;

/// The anchor's magic.
pub const ANCHOR_MAGIC: [u8; 4] = *b"SWTA";

const FIXED_LEN: usize = 16;

/// Why an anchor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// Not an anchor of a format this build reads.
    #[error("not a Swell trust anchor (bad magic, format or length)")]
    Malformed,
    /// Zero keys or more than [`MAX_ANCHOR_KEYS`].
    #[error("an anchor holds 1 to {MAX_ANCHOR_KEYS} keys, not {0}")]
    KeyCount(usize),
    /// A threshold of zero, above the key count, or above [`MAX_SIGNATURES`].
    #[error(
        "threshold {threshold} with {keys} keys (at most {MAX_SIGNATURES} signatures fit an image)"
    )]
    Threshold {
        /// The threshold.
        threshold: u8,
        /// The key count.
        keys: usize,
    },
    /// Key `index` is not a valid, canonical, non-small-order Ed25519 key.
    #[error("key {0} is not a valid Ed25519 public key")]
    BadKey(usize),
    /// Key `index` appears twice.
    #[error("key {0} is listed twice")]
    DuplicateKey(usize),
    /// The output buffer is too small.
    #[error("the buffer is too small for the anchor")]
    Buffer,
    /// The trust root's release role cannot be expressed (feature `proto`).
    #[error("the trust root's release role does not fit an anchor")]
    Root,
}

/// The release role's keys and threshold, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustAnchor {
    root_version: u64,
    threshold: u8,
    count: usize,
    keys: [[u8; 32]; MAX_ANCHOR_KEYS],
    ids: [[u8; 32]; MAX_ANCHOR_KEYS],
}

/// A key id: the SHA-256 of the raw key.
pub fn key_id(key: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Whether `bytes` is a key proto would accept: on the curve, not of small order, canonical.
fn valid_key(bytes: &[u8; 32]) -> bool {
    match VerifyingKey::from_bytes(bytes) {
        Ok(key) => !key.is_weak() && key.to_edwards().compress().to_bytes() == *bytes,
        Err(_) => false,
    }
}

impl TrustAnchor {
    /// An anchor for `keys` with `threshold`, derived from trust root `root_version`.
    pub fn new(root_version: u64, threshold: u8, keys: &[[u8; 32]]) -> Result<Self, AnchorError> {
        if keys.is_empty() || keys.len() > MAX_ANCHOR_KEYS {
            return Err(AnchorError::KeyCount(keys.len()));
        }
        if threshold == 0 || usize::from(threshold) > keys.len().min(MAX_SIGNATURES) {
            return Err(AnchorError::Threshold {
                threshold,
                keys: keys.len(),
            });
        }
        let mut anchor = Self {
            root_version,
            threshold,
            count: keys.len(),
            keys: [[0; 32]; MAX_ANCHOR_KEYS],
            ids: [[0; 32]; MAX_ANCHOR_KEYS],
        };
        for (i, key) in keys.iter().enumerate() {
            if !valid_key(key) {
                return Err(AnchorError::BadKey(i));
            }
            if keys[..i].contains(key) {
                return Err(AnchorError::DuplicateKey(i));
            }
            anchor.keys[i] = *key;
            anchor.ids[i] = key_id(key);
        }
        Ok(anchor)
    }

    /// Parses the binary form.
    pub fn parse(bytes: &[u8]) -> Result<Self, AnchorError> {
        if bytes.len() < FIXED_LEN || bytes[..4] != ANCHOR_MAGIC || bytes[4] != 1 || bytes[7] != 0 {
            return Err(AnchorError::Malformed);
        }
        let count = usize::from(bytes[6]);
        if count == 0 || count > MAX_ANCHOR_KEYS {
            return Err(AnchorError::KeyCount(count));
        }
        if bytes.len() != FIXED_LEN + 32 * count {
            return Err(AnchorError::Malformed);
        }
        let mut version = [0; 8];
        version.copy_from_slice(&bytes[8..16]);
        let mut keys = [[0u8; 32]; MAX_ANCHOR_KEYS];
        for (key, raw) in keys.iter_mut().zip(bytes[FIXED_LEN..].chunks_exact(32)) {
            key.copy_from_slice(raw);
        }
        Self::new(u64::from_le_bytes(version), bytes[5], &keys[..count])
    }

    /// Bytes of the binary form.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + 32 * self.count
    }

    /// Writes the binary form into `out`; returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, AnchorError> {
        let len = self.encoded_len();
        let out = out.get_mut(..len).ok_or(AnchorError::Buffer)?;
        out[..4].copy_from_slice(&ANCHOR_MAGIC);
        out[4] = 1;
        out[5] = self.threshold;
        // `count` is at most MAX_ANCHOR_KEYS, checked at construction.
        out[6] = u8::try_from(self.count).map_err(|_| AnchorError::KeyCount(self.count))?;
        out[7] = 0;
        out[8..16].copy_from_slice(&self.root_version.to_le_bytes());
        for (dst, key) in out[FIXED_LEN..].chunks_exact_mut(32).zip(self.keys()) {
            dst.copy_from_slice(key);
        }
        Ok(len)
    }

    /// The distinct valid signatures required.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// The version of the trust root this anchor was derived from.
    pub fn root_version(&self) -> u64 {
        self.root_version
    }

    /// The raw keys.
    pub fn keys(&self) -> &[[u8; 32]] {
        &self.keys[..self.count]
    }

    /// The key ids, in the order of [`TrustAnchor::keys`].
    pub fn key_ids(&self) -> &[[u8; 32]] {
        &self.ids[..self.count]
    }

    /// Checks `signatures` (key id, signature) over `message` against the role: at least
    /// `threshold` distinct keys of the role with valid strict signatures, and no invalid
    /// signature from a key of the role.
    pub fn verify<'a>(
        &self,
        message: &[u8],
        signatures: impl IntoIterator<Item = (&'a [u8; 32], &'a [u8; 64])>,
    ) -> Result<(), ImageError> {
        // Every signature by a key of the role is checked, repeats included, as proto does.
        let mut valid = [false; MAX_ANCHOR_KEYS];
        let mut unknown = false;
        for (keyid, sig) in signatures {
            let Some(i) = self.key_ids().iter().position(|id| id == keyid) else {
                unknown = true;
                continue;
            };
            let key = VerifyingKey::from_bytes(&self.keys[i])
                .map_err(|_| ImageError::BadSignature { key: i })?;
            key.verify_strict(message, &Signature::from_bytes(sig))
                .map_err(|_| ImageError::BadSignature { key: i })?;
            valid[i] = true;
        }
        let count = valid.iter().filter(|v| **v).count();
        if count >= usize::from(self.threshold) {
            return Ok(());
        }
        Err(if unknown {
            ImageError::UnknownKey {
                valid: count,
                threshold: self.threshold,
            }
        } else {
            ImageError::ThresholdUnmet {
                valid: count,
                threshold: self.threshold,
            }
        })
    }

    /// The anchor for `root`'s `release` role. The root is already verified (there is no
    /// other way to hold a `TrustRoot`), so its keys are valid; this only re-encodes them.
    #[cfg(feature = "proto")]
    pub fn from_root(root: &swell_proto::TrustRoot) -> Result<Self, AnchorError> {
        let doc = root.document();
        let role = &doc.roles.release;
        if role.keyids.is_empty() || role.keyids.len() > MAX_ANCHOR_KEYS {
            return Err(AnchorError::KeyCount(role.keyids.len()));
        }
        let mut keys = [[0u8; 32]; MAX_ANCHOR_KEYS];
        for (slot, id) in keys.iter_mut().zip(&role.keyids) {
            let entry = doc.keys.get(id).ok_or(AnchorError::Root)?;
            // `public` is 64 lowercase hex digits (the root validated it); any 32-byte hex
            // parser reads it.
            let bytes =
                swell_proto::KeyId::from_hex(&entry.public).map_err(|_| AnchorError::Root)?;
            *slot = *bytes.as_bytes();
        }
        let threshold = u8::try_from(role.threshold).map_err(|_| AnchorError::Threshold {
            threshold: u8::MAX,
            keys: role.keyids.len(),
        })?;
        Self::new(root.header().version, threshold, &keys[..role.keyids.len()])
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn raw(seed: u8) -> [u8; 32] {
        key(seed).verifying_key().to_bytes()
    }

    #[test]
    fn round_trips_and_validates() {
        let a = TrustAnchor::new(3, 2, &[raw(1), raw(2), raw(3)]).unwrap();
        let mut buf = [0; 128];
        let n = a.encode(&mut buf).unwrap();
        assert_eq!(n, 16 + 96);
        assert_eq!(TrustAnchor::parse(&buf[..n]).unwrap(), a);
        assert_eq!(a.key_ids()[0], key_id(&raw(1)));
        assert!(TrustAnchor::parse(&buf[..n - 1]).is_err());
        assert_eq!(
            TrustAnchor::new(1, 0, &[raw(1)]),
            Err(AnchorError::Threshold {
                threshold: 0,
                keys: 1
            })
        );
        assert_eq!(
            TrustAnchor::new(1, 2, &[raw(1)]),
            Err(AnchorError::Threshold {
                threshold: 2,
                keys: 1
            })
        );
        assert_eq!(
            TrustAnchor::new(1, 1, &[raw(1), raw(1)]),
            Err(AnchorError::DuplicateKey(1))
        );
        // The identity point is of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            TrustAnchor::new(1, 1, &[identity]),
            Err(AnchorError::BadKey(0))
        );
    }

    #[test]
    fn counts_distinct_keys_of_the_role() {
        let a = TrustAnchor::new(1, 2, &[raw(1), raw(2)]).unwrap();
        let msg = b"manifest";
        let s1 = key(1).sign(msg).to_bytes();
        let s2 = key(2).sign(msg).to_bytes();
        let s9 = key(9).sign(msg).to_bytes();
        let (id1, id2, id9) = (key_id(&raw(1)), key_id(&raw(2)), key_id(&raw(9)));
        assert_eq!(a.verify(msg, [(&id1, &s1), (&id2, &s2)]), Ok(()));
        assert_eq!(
            a.verify(msg, [(&id1, &s1), (&id1, &s1)]),
            Err(ImageError::ThresholdUnmet {
                valid: 1,
                threshold: 2
            })
        );
        assert_eq!(
            a.verify(msg, [(&id1, &s1), (&id9, &s9)]),
            Err(ImageError::UnknownKey {
                valid: 1,
                threshold: 2
            })
        );
        // A bad signature by a role key fails even when the threshold is met otherwise.
        assert_eq!(
            a.verify(msg, [(&id1, &s1), (&id2, &s2), (&id2, &s1)]),
            Err(ImageError::BadSignature { key: 1 })
        );
        assert_eq!(
            a.verify(msg, [(&id2, &s1), (&id1, &s1)]),
            Err(ImageError::BadSignature { key: 1 })
        );
    }
}
