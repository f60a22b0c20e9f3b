//! The image format: a signed header (the compact manifest) followed by the application.
//!
//! An image is the file the gateway streams and the bootloader copies into ACTIVE, at offset 0.
//! The application starts at `header_len` (its vector table lives there).
//!
//! | offset | size | field | signed |
//! |---|---|---|---|
//! | 0 | 4 | magic `SWFI` | yes |
//! | 4 | 2 | header format, 1 | yes |
//! | 6 | 2 | `header_len`: where the payload starts | yes |
//! | 8 | 4 × 3 | version major, minor, patch | yes |
//! | 20 | 4 | `payload_len` | yes |
//! | 24 | 8 | security counter (anti-rollback, the release's `security_version`) | yes |
//! | 32 | 32 | SHA-256 of the payload | yes |
//! | 64 | 64 | hardware id, NUL-padded | yes |
//! | 128 | 64 | release name, NUL-padded | yes |
//! | 192 | 1 | signature count (1 ..= [`MAX_SIGNATURES`]) | no |
//! | 193 | 3 | zero | no |
//! | 196 | 96 × count | key id (32), Ed25519 signature (64) | no |
//! | … | | zero padding up to `header_len` | no |
//! | `header_len` | `payload_len` | the application | by digest |
//!
//! Integers are little-endian. The signatures cover bytes 0..192 (the *manifest*): they fix
//! the payload through its digest. The manifest's first bytes are `SWFI`, never `{`, so a
//! release key's signature over a manifest can never be read as one over a JSON document,
//! nor the reverse. The SHA-256 of the manifest is the image's identity (the *manifest
//! digest*), which the STATE record stores to bind an update to exactly this image.

use embedded_storage::nor_flash::ReadNorFlash;
use sha2::{Digest as _, Sha256};

use crate::PAGE_BUF;
use crate::anchor::{MAX_SIGNATURES, TrustAnchor};
use crate::error::Error;
use crate::flash::{self, Region};

/// The image magic.
pub const IMAGE_MAGIC: [u8; 4] = *b"SWFI";
/// The header format this build reads and writes.
pub const HEADER_FORMAT: u16 = 1;
/// Bytes covered by the signatures.
pub const MANIFEST_LEN: usize = 192;
/// Bytes of one signature entry.
pub const SIGNATURE_LEN: usize = 96;
/// Offset of the first signature entry.
pub const SIGNATURES_AT: usize = MANIFEST_LEN + 4;
/// Largest header block (manifest, count, signatures): what the transfer's `BEGIN` carries.
pub const MAX_BLOCK_LEN: usize = SIGNATURES_AT + MAX_SIGNATURES * SIGNATURE_LEN;
/// Longest hardware id or release name (proto's `MAX_NAME_LEN`).
pub const NAME_LEN: usize = 64;

/// Why an image or header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not an image of a format this build reads.
    #[error("not a Swell firmware image (bad magic or header format)")]
    BadMagic,
    /// A length field is inconsistent or the header is cut short.
    #[error("the image header is malformed: {0}")]
    Malformed(&'static str),
    /// The image does not fit the ACTIVE partition.
    #[error("the image ({len} bytes) does not fit ACTIVE ({capacity} bytes)")]
    TooLarge {
        /// Header plus payload.
        len: u32,
        /// ACTIVE's size.
        capacity: u32,
    },
    /// A key of the release role signed something else.
    #[error("the signature by release key {key} does not verify")]
    BadSignature {
        /// Index of the key in the anchor.
        key: usize,
    },
    /// Too few distinct release keys signed, and some signatures were by other keys.
    #[error("{valid} valid release signature(s) of {threshold} needed; others are by unknown keys")]
    UnknownKey {
        /// Distinct valid signatures.
        valid: usize,
        /// The threshold.
        threshold: u8,
    },
    /// Too few distinct release keys signed.
    #[error("{valid} valid release signature(s) of {threshold} needed")]
    ThresholdUnmet {
        /// Distinct valid signatures.
        valid: usize,
        /// The threshold.
        threshold: u8,
    },
    /// Built for other hardware.
    #[error("the image is for other hardware")]
    WrongHardware,
    /// Its security counter is below the committed one.
    #[error("security counter {offered} is below the committed {committed}")]
    Rollback {
        /// The image's counter.
        offered: u64,
        /// The device's committed counter.
        committed: u64,
    },
    /// The payload's SHA-256 is not the signed one (corrupt or truncated data).
    #[error("the payload's SHA-256 does not match the manifest")]
    DigestMismatch,
    /// The image in flash is not the one announced when the transfer began.
    #[error("the image in DFU is not the one the update was started for")]
    NotAnnounced,
}

/// An image version (`MAJOR.MINOR.PATCH`; firmware versions carry no pre-release part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A hardware id or release name: 1 to 64 characters of `[A-Za-z0-9._-]` starting with a
/// letter or digit (proto's name rule), NUL-padded in the header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; NAME_LEN],
    len: u8,
}

impl Name {
    /// Validates `s`.
    pub fn new(s: &str) -> Option<Self> {
        Self::from_bytes(s.as_bytes())
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        let ok = !b.is_empty()
            && b.len() <= NAME_LEN
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !ok {
            return None;
        }
        let mut bytes = [0; NAME_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Some(Self {
            bytes,
            len: u8::try_from(b.len()).ok()?,
        })
    }

    /// Reads a NUL-padded field.
    pub(crate) fn from_field(field: &[u8]) -> Option<Self> {
        let len = field.iter().position(|&c| c == 0).unwrap_or(field.len());
        if field[len..].iter().any(|&c| c != 0) {
            return None;
        }
        Self::from_bytes(&field[..len])
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (checked in `from_bytes`).
        core::str::from_utf8(self.as_bytes()).unwrap_or("")
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The NUL-padded field.
    pub fn field(&self) -> &[u8; NAME_LEN] {
        &self.bytes
    }
}

impl core::fmt::Debug for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// A parsed header. Parsing alone proves nothing; [`ImageHeader::verify_block`] and
/// [`verify_in_flash`] check the signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where the payload starts.
    pub header_len: u32,
    /// The image version.
    pub version: Version,
    /// Payload bytes.
    pub payload_len: u32,
    /// Anti-rollback counter.
    pub security_counter: u64,
    /// SHA-256 of the payload.
    pub payload_sha256: [u8; 32],
    /// Hardware it runs on.
    pub hardware: Name,
    /// The release it belongs to.
    pub release: Name,
    /// Signature entries that follow the manifest.
    pub signatures: u8,
    /// SHA-256 of the manifest (bytes 0..192): the image's identity.
    pub manifest_digest: [u8; 32],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Bytes of the header block with `signatures` entries.
pub const fn block_len(signatures: usize) -> usize {
    SIGNATURES_AT + signatures * SIGNATURE_LEN
}

impl ImageHeader {
    /// Parses the manifest and signature count at the start of `block` (at least
    /// [`SIGNATURES_AT`] bytes). Checks formats and lengths, not signatures.
    pub fn parse(block: &[u8]) -> Result<Self, ImageError> {
        if block.len() < SIGNATURES_AT {
            return Err(ImageError::Malformed("the header is cut short"));
        }
        if block[..4] != IMAGE_MAGIC || u16_at(block, 4) != HEADER_FORMAT {
            return Err(ImageError::BadMagic);
        }
        let signatures = block[MANIFEST_LEN];
        if signatures == 0 || usize::from(signatures) > MAX_SIGNATURES {
            return Err(ImageError::Malformed("1 to 4 signatures"));
        }
        if block[MANIFEST_LEN + 1..SIGNATURES_AT] != [0; 3] {
            return Err(ImageError::Malformed("reserved bytes are not zero"));
        }
        let header_len = u32::from(u16_at(block, 6));
        let needed = block_len(usize::from(signatures));
        if flash::to_usize(header_len) < needed {
            return Err(ImageError::Malformed(
                "header_len is shorter than the signatures",
            ));
        }
        let mut payload_sha256 = [0; 32];
        payload_sha256.copy_from_slice(&block[32..64]);
        Ok(Self {
            header_len,
            version: Version {
                major: u32_at(block, 8),
                minor: u32_at(block, 12),
                patch: u32_at(block, 16),
            },
            payload_len: u32_at(block, 20),
            security_counter: u64_at(block, 24),
            payload_sha256,
            hardware: Name::from_field(&block[64..128])
                .ok_or(ImageError::Malformed("hardware id"))?,
            release: Name::from_field(&block[128..192])
                .ok_or(ImageError::Malformed("release name"))?,
            signatures,
            manifest_digest: Sha256::digest(&block[..MANIFEST_LEN]).into(),
        })
    }

    /// Bytes of this header's block (manifest, count and signatures).
    pub fn block_len(&self) -> usize {
        block_len(usize::from(self.signatures))
    }

    /// Header plus payload, if it fits in a `u32`.
    pub fn total_len(&self) -> Option<u32> {
        self.header_len.checked_add(self.payload_len)
    }

    /// Parses `block` (exactly the header block) and checks its signatures against `anchor`.
    pub fn verify_block(block: &[u8], anchor: &TrustAnchor) -> Result<Self, ImageError> {
        let header = Self::parse(block)?;
        if block.len() != header.block_len() {
            return Err(ImageError::Malformed(
                "the header block has the wrong length",
            ));
        }
        let entries = block[SIGNATURES_AT..].chunks_exact(SIGNATURE_LEN).map(|e| {
            // `chunks_exact(96)` yields 96-byte slices: the conversions cannot fail.
            let id: &[u8; 32] = e[..32].try_into().unwrap_or(&[0; 32]);
            let sig: &[u8; 64] = e[32..].try_into().unwrap_or(&[0; 64]);
            (id, sig)
        });
        anchor.verify(&block[..MANIFEST_LEN], entries)?;
        Ok(header)
    }

    /// Checks this (verified) header against the device: its hardware, the committed
    /// security counter, and ACTIVE's size.
    pub fn admit(&self, policy: &Policy<'_>) -> Result<(), ImageError> {
        if self.hardware.as_bytes() != policy.hardware.as_bytes() {
            return Err(ImageError::WrongHardware);
        }
        if self.security_counter < policy.committed_counter {
            return Err(ImageError::Rollback {
                offered: self.security_counter,
                committed: policy.committed_counter,
            });
        }
        let len = self.total_len().unwrap_or(u32::MAX);
        if len > policy.capacity {
            return Err(ImageError::TooLarge {
                len,
                capacity: policy.capacity,
            });
        }
        Ok(())
    }

    /// Checks that this header matches the release manifest the gateway verified: release
    /// name, version, security version, hardware, and `image_len` against the artifact for
    /// `target`. The gateway checks the artifact's digest over the whole image file itself.
    #[cfg(feature = "proto")]
    pub fn check_release(
        &self,
        release: &swell_proto::VerifiedRelease,
        target: &swell_proto::TargetName,
        image_len: u64,
    ) -> Result<(), &'static str> {
        use alloc::string::ToString as _;
        let doc = release.document();
        if doc.name.as_str() != self.release.as_str() {
            return Err("release name differs from the manifest's");
        }
        if doc.release_version.to_string() != self.version.to_string() {
            return Err("version differs from the manifest's");
        }
        if doc.security_version != self.security_counter {
            return Err("security counter differs from the manifest's security_version");
        }
        if !doc
            .hardware
            .iter()
            .any(|h| h.as_str() == self.hardware.as_str())
        {
            return Err("hardware id is not among the manifest's");
        }
        let artifact = doc
            .artifact(target)
            .map_err(|_| "the manifest has no artifact for this target")?;
        if artifact.size != image_len {
            return Err("image size differs from the artifact's");
        }
        Ok(())
    }
}

/// What a device requires of an image beyond valid signatures.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The device's hardware id.
    pub hardware: &'a Name,
    /// The committed security counter (the anti-rollback floor).
    pub committed_counter: u64,
    /// ACTIVE's size.
    pub capacity: u32,
}

/// Fully verifies the image at the start of `region`: header format, signatures against
/// `anchor`, `policy`, and the payload's SHA-256 read back from flash. Uses
/// [`MAX_BLOCK_LEN`] + [`PAGE_BUF`] bytes of stack.
pub fn verify_in_flash<F: ReadNorFlash>(
    flash: &mut F,
    region: Region,
    anchor: &TrustAnchor,
    policy: &Policy<'_>,
) -> Result<ImageHeader, Error> {
    let header = read_header(flash, region)?;
    let mut block = [0u8; MAX_BLOCK_LEN];
    let block = &mut block[..header.block_len()];
    flash::read(flash, region, 0, block)?;
    let header = ImageHeader::verify_block(block, anchor)?;
    header.admit(policy)?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; PAGE_BUF];
    let mut at = header.header_len;
    let end = header.total_len().ok_or(ImageError::Malformed("length"))?;
    while at < end {
        let n = (end - at).min(flash::to_u32("chunk", PAGE_BUF)?);
        let chunk = &mut buf[..flash::to_usize(n)];
        flash::read(flash, region, at, chunk)?;
        hasher.update(&*chunk);
        at += n;
    }
    if <[u8; 32]>::from(hasher.finalize()) != header.payload_sha256 {
        return Err(ImageError::DigestMismatch.into());
    }
    Ok(header)
}

/// Parses (without verifying) the header at the start of `region`.
pub fn read_header<F: ReadNorFlash>(flash: &mut F, region: Region) -> Result<ImageHeader, Error> {
    let mut fixed = [0u8; SIGNATURES_AT];
    flash::read(flash, region, 0, &mut fixed)?;
    Ok(ImageHeader::parse(&fixed)?)
}

/// What goes into a manifest; [`Manifest::build`] writes a signed image. Host side (release
/// tooling, tests); it needs no heap.
#[derive(Debug, Clone, Copy)]
pub struct Manifest<'a> {
    /// The image version.
    pub version: Version,
    /// Anti-rollback counter.
    pub security_counter: u64,
    /// Hardware id.
    pub hardware: &'a str,
    /// Release name.
    pub release: &'a str,
    /// Where the payload starts (at least the header block; vector-table alignment is the
    /// application's business).
    pub header_len: u16,
}

/// Why [`Manifest::build`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A name breaks the name rule.
    #[error("invalid hardware id or release name")]
    Name,
    /// No keys, more than [`MAX_SIGNATURES`], or `header_len` too short for them.
    #[error("1 to 4 keys, and header_len large enough for their signatures")]
    Signatures,
    /// The output buffer is too small or the payload too large.
    #[error("the output buffer is too small")]
    Buffer,
}

impl Manifest<'_> {
    /// Writes the image (header, signatures by each of `keys`, payload) into `out` and returns
    /// its length.
    pub fn build(
        &self,
        payload: &[u8],
        keys: &[&ed25519_dalek::SigningKey],
        out: &mut [u8],
    ) -> Result<usize, BuildError> {
        use ed25519_dalek::Signer as _;
        let hw = Name::new(self.hardware).ok_or(BuildError::Name)?;
        let release = Name::new(self.release).ok_or(BuildError::Name)?;
        let header_len = usize::from(self.header_len);
        if keys.is_empty() || keys.len() > MAX_SIGNATURES || header_len < block_len(keys.len()) {
            return Err(BuildError::Signatures);
        }
        let total = header_len + payload.len();
        let payload_len = u32::try_from(payload.len()).map_err(|_| BuildError::Buffer)?;
        let out = out.get_mut(..total).ok_or(BuildError::Buffer)?;
        out[..header_len].fill(0);
        out[..4].copy_from_slice(&IMAGE_MAGIC);
        out[4..6].copy_from_slice(&HEADER_FORMAT.to_le_bytes());
        out[6..8].copy_from_slice(&self.header_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.version.major.to_le_bytes());
        out[12..16].copy_from_slice(&self.version.minor.to_le_bytes());
        out[16..20].copy_from_slice(&self.version.patch.to_le_bytes());
        out[20..24].copy_from_slice(&payload_len.to_le_bytes());
        out[24..32].copy_from_slice(&self.security_counter.to_le_bytes());
        out[32..64].copy_from_slice(&Sha256::digest(payload));
        out[64..128].copy_from_slice(hw.field());
        out[128..192].copy_from_slice(release.field());
        out[MANIFEST_LEN] = u8::try_from(keys.len()).map_err(|_| BuildError::Signatures)?;
        let (manifest, rest) = out.split_at_mut(MANIFEST_LEN);
        let entries = &mut rest[SIGNATURES_AT - MANIFEST_LEN..];
        for (entry, key) in entries.chunks_exact_mut(SIGNATURE_LEN).zip(keys) {
            let raw = key.verifying_key().to_bytes();
            entry[..32].copy_from_slice(&crate::anchor::key_id(&raw));
            entry[32..].copy_from_slice(&key.sign(manifest).to_bytes());
        }
        out[header_len..].copy_from_slice(payload);
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use std::string::ToString as _;

    use super::*;

    fn manifest() -> Manifest<'static> {
        Manifest {
            version: Version {
                major: 1,
                minor: 2,
                patch: 3,
            },
            security_counter: 7,
            hardware: "sensor-v2",
            release: "sensor-fw",
            header_len: 512,
        }
    }

    #[test]
    fn builds_and_verifies() {
        let k1 = SigningKey::from_bytes(&[1; 32]);
        let k2 = SigningKey::from_bytes(&[2; 32]);
        let anchor = TrustAnchor::new(
            1,
            2,
            &[k1.verifying_key().to_bytes(), k2.verifying_key().to_bytes()],
        )
        .unwrap();
        let mut out = [0u8; 1024];
        let n = manifest()
            .build(&[0xAB; 300], &[&k1, &k2], &mut out)
            .unwrap();
        assert_eq!(n, 812);
        let h = ImageHeader::verify_block(&out[..block_len(2)], &anchor).unwrap();
        assert_eq!(h.version.to_string(), "1.2.3");
        assert_eq!(h.hardware.as_str(), "sensor-v2");
        assert_eq!(
            (h.header_len, h.payload_len, h.security_counter),
            (512, 300, 7)
        );

        // One signature is below the threshold; a flipped manifest bit breaks a signature.
        let n1 = manifest().build(&[0xAB; 300], &[&k1], &mut out).unwrap();
        assert_eq!(
            ImageHeader::verify_block(&out[..block_len(1)], &anchor),
            Err(ImageError::ThresholdUnmet {
                valid: 1,
                threshold: 2
            })
        );
        assert_eq!(n1, 812);
        manifest()
            .build(&[0xAB; 300], &[&k1, &k2], &mut out)
            .unwrap();
        out[25] ^= 1;
        assert_eq!(
            ImageHeader::verify_block(&out[..block_len(2)], &anchor),
            Err(ImageError::BadSignature { key: 0 })
        );
    }

    #[test]
    fn refuses_malformed_headers() {
        let k1 = SigningKey::from_bytes(&[1; 32]);
        let mut out = [0u8; 1024];
        manifest().build(&[1; 10], &[&k1], &mut out).unwrap();
        let mut bad = out;
        bad[0] = b'X';
        assert_eq!(ImageHeader::parse(&bad), Err(ImageError::BadMagic));
        let mut bad = out;
        bad[MANIFEST_LEN] = 5;
        assert!(ImageHeader::parse(&bad).is_err());
        let mut bad = out;
        bad[6..8].copy_from_slice(&100u16.to_le_bytes());
        assert!(ImageHeader::parse(&bad).is_err());
        let mut bad = out;
        bad[70] = b'/';
        assert!(ImageHeader::parse(&bad).is_err());
        assert!(ImageHeader::parse(&out[..100]).is_err());
        assert!(Name::new("").is_none() && Name::new(".x").is_none());
        assert!(Name::new(&"x".repeat(65)).is_none());
    }
}
