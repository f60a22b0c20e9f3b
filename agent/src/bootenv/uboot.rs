//! The U-Boot environment format, byte-compatible with U-Boot's `saveenv` and with
//! libubootenv's `fw_printenv`/`fw_setenv`.
//!
//! A copy is a region of `size` bytes at an offset on a file or block device:
//!
//! | offset | length | single copy | redundant copies |
//! |---|---|---|---|
//! | 0 | 4 | CRC-32 of bytes 4..size, little-endian | CRC-32 of bytes 5..size, little-endian |
//! | 4 | 1 | first byte of data | flag byte (see [`FlagScheme`]) |
//! | 4 or 5 | rest | `name=value\0name=value\0\0`, then fill | same |
//!
//! The CRC covers the whole data area including the fill, so the fill byte does not matter to
//! readers; Swell fills with `0x00` as U-Boot's own `env_export` does (libubootenv leaves
//! whatever its buffer held, `mkenvimage` uses `0xff`). Variables are written sorted by name in
//! byte order, as both U-Boot and libubootenv write them.
//!
//! This file is pure: encoding, decoding and the choice between copies. [`UbootEnvStore`] does
//! the I/O.

pub mod config;
mod store;

use std::path::Path;

pub use config::{FwEnvConfig, RegionConfig};
pub use store::{DEFAULT_LOCK_PATH, LoadedEnv, Region, UbootEnvStore};

use super::{Env, Error};

/// Length of the CRC at the start of every copy.
pub const CRC_LEN: usize = 4;

/// The largest region Swell will handle. The whole region is read into memory and rewritten
/// at once; real environments are 8 KiB to 256 KiB, so a larger size in `fw_env.config` is
/// almost certainly a mistake (e.g. a decimal number where libubootenv reads hex).
pub const MAX_ENV_SIZE: usize = 4 * 1024 * 1024;

/// The smallest region: a header and the two NULs of an empty environment.
pub const MIN_ENV_SIZE: usize = CRC_LEN + 1 + 2;

/// How the flag byte of redundant copies says which copy is newer.
///
/// libubootenv picks the scheme from the device, and Swell does the same
/// ([`FwEnvConfig`] → [`UbootEnvStore::from_config`]): files, block devices, NAND and UBI use
/// [`FlagScheme::Incremental`]; NOR flash uses [`FlagScheme::Boolean`], because flipping the
/// old copy's flag from `0x01` to `0x00` only clears bits and so needs no erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagScheme {
    /// Each write stores the current copy's flag plus one (wrapping `0xff` → `0x00`) in the
    /// other copy; the copy with the larger flag wins, `0x00` beats `0xff`, equal flags pick
    /// copy 1.
    Incremental,
    /// Each write stores `0x01` (active) in the other copy, then `0x00` (obsolete) in the old
    /// copy's flag byte. A copy whose flag is `0xff` (erased flash) wins, otherwise the larger
    /// flag, equal flags pick copy 1.
    Boolean,
}

impl FlagScheme {
    /// The flag for a copy written after one whose flag is `current`.
    pub fn next(self, current: u8) -> u8 {
        match self {
            FlagScheme::Incremental => current.wrapping_add(1),
            FlagScheme::Boolean => BOOLEAN_ACTIVE,
        }
    }
}

/// The Boolean scheme's flag for the newest copy.
pub const BOOLEAN_ACTIVE: u8 = 0x01;
/// The Boolean scheme's flag for a copy that has been superseded.
pub const BOOLEAN_OBSOLETE: u8 = 0x00;

/// The length of the header before the data: CRC, and the flag byte when redundant.
pub fn header_len(redundant: bool) -> usize {
    if redundant { CRC_LEN + 1 } else { CRC_LEN }
}

/// CRC-32 as zlib's `crc32(0, data, len)` computes it (IEEE 802.3, reflected, which is what
/// both U-Boot and libubootenv use).
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = CRC_TABLE[usize::from(crc.to_le_bytes()[0] ^ byte)] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0u32;
    while i < 256 {
        let mut crc = i;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i as usize] = crc;
        i += 1;
    }
    table
};

/// Serializes `env` into one copy of `size` bytes. `flag` is `Some` for redundant copies.
pub fn encode(env: &Env, size: usize, flag: Option<u8>) -> Result<Vec<u8>, Error> {
    let header = header_len(flag.is_some());
    let mut region = Vec::with_capacity(size);
    region.extend_from_slice(&[0; CRC_LEN]);
    region.extend(flag);
    for (name, value) in env.sorted() {
        region.extend_from_slice(name.as_bytes());
        region.push(b'=');
        region.extend_from_slice(value.as_bytes());
        region.push(0);
    }
    // The empty entry that ends the list.
    region.push(0);
    if region.len() > size {
        return Err(Error::TooLarge {
            what: "U-Boot env region",
            needed: region.len(),
            available: size,
        });
    }
    region.resize(size, 0);
    let crc = crc32(&region[header..]);
    region[..CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    Ok(region)
}

/// What the header of one copy says, before its data is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyCheck {
    /// Whether the stored CRC matches the data.
    pub crc_ok: bool,
    /// The flag byte (redundant copies only).
    pub flag: Option<u8>,
}

/// Checks the CRC of one copy.
pub fn check(region: &[u8], redundant: bool) -> CopyCheck {
    let header = header_len(redundant);
    let (Some(stored), Some(data)) = (region.get(..CRC_LEN), region.get(header..)) else {
        return CopyCheck {
            crc_ok: false,
            flag: None,
        };
    };
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    CopyCheck {
        crc_ok: stored == crc32(data),
        flag: if redundant {
            region.get(CRC_LEN).copied()
        } else {
            None
        },
    }
}

/// Which of two redundant copies is current, exactly as libubootenv's `libuboot_load` decides
/// (and, for [`FlagScheme::Incremental`], as U-Boot's `env_import_redund` does): `None` when
/// neither CRC is good; the only good copy; else by flag.
pub fn select(copies: [CopyCheck; 2], scheme: FlagScheme) -> Option<usize> {
    let [c0, c1] = copies;
    match (c0.crc_ok, c1.crc_ok) {
        (false, false) => None,
        (true, false) => Some(0),
        (false, true) => Some(1),
        (true, true) => {
            let (f0, f1) = (c0.flag.unwrap_or(0), c1.flag.unwrap_or(0));
            let by_value = if f1 > f0 { 1 } else { 0 };
            Some(match scheme {
                FlagScheme::Boolean if f1 == 0xff => 1,
                FlagScheme::Boolean if f0 == 0xff => 0,
                FlagScheme::Incremental if f0 == 0xff && f1 == 0 => 1,
                FlagScheme::Incremental if f1 == 0xff && f0 == 0 => 0,
                _ => by_value,
            })
        }
    }
}

/// Parses the data area of a copy whose CRC is good.
///
/// Follows libubootenv: entries end at NUL, the list ends at an empty entry, an entry without
/// `=` or with an empty name is skipped, a later duplicate overrides an earlier one. Swell is
/// stricter in two places, because it must be able to write back what it read: a name with a
/// newline or bytes that are not UTF-8 make the copy malformed rather than being passed on.
/// `.flags` (U-Boot's variable attributes) is kept as an ordinary variable.
pub fn decode_data(data: &[u8], path: &Path) -> Result<Env, Error> {
    let malformed = |detail: String| Error::Malformed {
        what: "U-Boot environment",
        path: path.into(),
        detail,
    };
    let mut env = Env::new();
    let mut rest = data;
    while let Some(&first) = rest.first() {
        if first == 0 {
            return Ok(env);
        }
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(malformed(format!(
                "the entry at data byte {} is not NUL-terminated",
                data.len() - rest.len()
            )));
        };
        let entry = &rest[..end];
        rest = &rest[end + 1..];
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        if eq == 0 {
            continue;
        }
        let (name, value) = (&entry[..eq], &entry[eq + 1..]);
        let name = std::str::from_utf8(name).map_err(|_| {
            malformed(format!(
                "variable name {:?} is not UTF-8",
                String::from_utf8_lossy(name)
            ))
        })?;
        let value = std::str::from_utf8(value)
            .map_err(|_| malformed(format!("the value of {name} is not UTF-8")))?;
        env.set(name, value)
            .map_err(|err| malformed(err.to_string()))?;
    }
    // The area ended right after a complete entry; U-Boot's own size bound ends the list there.
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::try_from(pairs).unwrap()
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414f_a339
        );
    }

    #[test]
    fn single_copy_layout() {
        let region = encode(&env(&[("foo", "bar"), ("baud", "115200")]), 32, None).unwrap();
        assert_eq!(region.len(), 32);
        assert_eq!(&region[4..25], b"baud=115200\0foo=bar\0\0");
        assert!(region[25..].iter().all(|&b| b == 0));
        let crc = crc32(&region[4..]);
        assert_eq!(region[..4], crc.to_le_bytes());
        assert_eq!(
            check(&region, false),
            CopyCheck {
                crc_ok: true,
                flag: None
            }
        );
        let parsed = decode_data(&region[4..], Path::new("x")).unwrap();
        assert_eq!(parsed.sorted(), [("baud", "115200"), ("foo", "bar")]);
    }

    /// The bytes libubootenv 0.3.2's `fw_setenv foo bar3` wrote as the fourth write to a
    /// redundant 8 KiB file environment (flag 4); its fill happened to be zero.
    #[test]
    fn redundant_layout_matches_fw_setenv_bytes() {
        let region = encode(&env(&[("foo", "bar3")]), 0x2000, Some(4)).unwrap();
        assert_eq!(&region[..14], b"\x73\x93\x0c\xc5\x04foo=bar3\0");
        assert_eq!(
            check(&region, true),
            CopyCheck {
                crc_ok: true,
                flag: Some(4)
            }
        );
    }

    #[test]
    fn empty_env_and_exact_fit() {
        let region = encode(&Env::new(), MIN_ENV_SIZE, Some(1)).unwrap();
        assert_eq!(&region[4..], b"\x01\0\0");
        assert!(
            decode_data(&region[5..], Path::new("x"))
                .unwrap()
                .is_empty()
        );
        // "a=b\0" + "\0" = 5 data bytes after a 5-byte header.
        assert!(encode(&env(&[("a", "b")]), 10, Some(0)).is_ok());
        match encode(&env(&[("a", "b")]), 9, Some(0)) {
            Err(Error::TooLarge {
                needed: 10,
                available: 9,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn corrupt_crc_is_detected() {
        let mut region = encode(&env(&[("a", "1")]), 64, Some(3)).unwrap();
        region[20] ^= 0x40;
        assert_eq!(
            check(&region, true),
            CopyCheck {
                crc_ok: false,
                flag: Some(3)
            }
        );
        assert!(!check(&region[..3], false).crc_ok);
    }

    #[test]
    fn decode_follows_libubootenv() {
        let path = Path::new("/dev/x");
        let parsed = decode_data(b"novalue\0=anon\0b=2\0a=1\0b=3\0\0c=ignored\0", path).unwrap();
        assert_eq!(parsed.iter().collect::<Vec<_>>(), [("b", "3"), ("a", "1")]);
        // A complete entry that ends the area exactly.
        assert_eq!(decode_data(b"a=1\0", path).unwrap().len(), 1);
        let err = decode_data(b"a=1\0b=2", path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed U-Boot environment at /dev/x: the entry at data byte 4 is not NUL-terminated"
        );
        assert!(decode_data(b"a\nb=1\0\0", path).is_err());
        assert!(decode_data(b"a=\xff\0\0", path).is_err());
    }

    /// Every row is a case of libubootenv's `libuboot_load` choice.
    #[test]
    fn select_matches_libubootenv() {
        use FlagScheme::{Boolean, Incremental};
        let ok = |flag| CopyCheck {
            crc_ok: true,
            flag: Some(flag),
        };
        let bad = |flag| CopyCheck {
            crc_ok: false,
            flag: Some(flag),
        };
        let cases = [
            (bad(9), bad(9), Incremental, None),
            (ok(9), bad(10), Incremental, Some(0)),
            (bad(10), ok(9), Incremental, Some(1)),
            (ok(1), ok(2), Incremental, Some(1)),
            (ok(2), ok(1), Incremental, Some(0)),
            (ok(5), ok(5), Incremental, Some(0)),
            (ok(0xff), ok(0x00), Incremental, Some(1)),
            (ok(0x00), ok(0xff), Incremental, Some(0)),
            (ok(0xfe), ok(0xff), Incremental, Some(1)),
            (ok(1), ok(0), Boolean, Some(0)),
            (ok(0), ok(1), Boolean, Some(1)),
            (ok(1), ok(1), Boolean, Some(0)),
            (ok(1), ok(0xff), Boolean, Some(1)),
            (ok(0xff), ok(1), Boolean, Some(0)),
            (ok(0xff), ok(0xff), Boolean, Some(1)),
            (ok(0), bad(1), Boolean, Some(0)),
        ];
        for (c0, c1, scheme, want) in cases {
            assert_eq!(select([c0, c1], scheme), want, "{c0:?} {c1:?} {scheme:?}");
        }
    }

    #[test]
    fn next_flag_wraps() {
        assert_eq!(FlagScheme::Incremental.next(7), 8);
        assert_eq!(FlagScheme::Incremental.next(0xff), 0);
        assert_eq!(FlagScheme::Boolean.next(0), BOOLEAN_ACTIVE);
    }
}
