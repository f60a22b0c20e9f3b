//! Validated identifiers. Each type can only hold a value that passed its check, so code that
//! receives one never re-validates it (tough's `TargetName` is the model).

use alloc::string::{String, ToString};
use core::fmt;
use core::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::MAX_NAME_LEN;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {why}")]
pub struct InvalidId {
    /// Which kind of identifier was being parsed.
    pub what: &'static str,
    /// The rejected text (cut to the name length limit).
    pub value: String,
    /// The rule it broke.
    pub why: &'static str,
}

fn invalid(what: &'static str, value: &str, why: &'static str) -> InvalidId {
    let mut cut = value.to_string();
    if cut.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !cut.is_char_boundary(end) {
            end -= 1;
        }
        cut.truncate(end);
    }
    InvalidId {
        what,
        value: cut,
        why,
    }
}

/// Checks the name rule shared by device ids, hardware ids, release names and artifact
/// targets: 1 to [`MAX_NAME_LEN`] characters from `[A-Za-z0-9._-]`, starting with a letter or
/// digit. This keeps names safe as MQTT topic levels (no `/`, `+`, `#`), as file names (no
/// `/`, no leading `.`) and in URLs.
fn check_name(what: &'static str, s: &str) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(invalid(what, s, "it is empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(invalid(what, s, "it is longer than 64 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            what,
            s,
            "only letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    if !s.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid(what, s, "it must start with a letter or digit"));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `s`.
            pub fn new(s: &str) -> Result<Self, InvalidId> {
                check_name($what, s)?;
                Ok(Self(s.to_string()))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A device's identifier, unique in a fleet; also its MQTT topic level.
    DeviceId,
    "device id"
);
name_type!(
    /// A hardware model identifier; releases list the ones they are built for.
    HardwareId,
    "hardware id"
);
name_type!(
    /// A release's name, such as `gateway-os`.
    ReleaseName,
    "release name"
);
name_type!(
    /// Where an artifact is installed: a slot role such as `rootfs`, or a child device id.
    TargetName,
    "artifact target"
);

macro_rules! hex32_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; 32]);

        impl $name {
            /// Wraps 32 raw bytes.
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Parses 64 lowercase hexadecimal digits.
            pub fn from_hex(s: &str) -> Result<Self, InvalidId> {
                crate::hex::decode32(s)
                    .map(Self)
                    .ok_or_else(|| invalid($what, s, "expected 64 lowercase hex digits"))
            }

            /// 64 lowercase hexadecimal digits.
            pub fn to_hex(&self) -> String {
                crate::hex::encode(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, InvalidId> {
                Self::from_hex(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.to_hex())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::from_hex(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

hex32_type!(
    /// The SHA-256 digest of some bytes.
    Sha256Digest,
    "SHA-256 digest"
);
hex32_type!(
    /// A key id: the SHA-256 of the 32-byte raw Ed25519 public key.
    KeyId,
    "key id"
);

impl Sha256Digest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(data).into())
    }
}

/// A semantic version (SemVer 2.0.0), ordered by precedence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SemVer(semver::Version);

impl SemVer {
    /// Parses `s` strictly (`MAJOR.MINOR.PATCH[-pre][+build]`, no leading `v`).
    pub fn new(s: &str) -> Result<Self, InvalidId> {
        if s.len() > MAX_NAME_LEN {
            return Err(invalid("version", s, "it is longer than 64 characters"));
        }
        semver::Version::parse(s)
            .map(Self)
            .map_err(|_| invalid("version", s, "expected a semantic version such as 1.4.2"))
    }

    /// The major version.
    pub fn major(&self) -> u64 {
        self.0.major
    }
}

impl FromStr for SemVer {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::new(s)
    }
}

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for SemVer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SemVer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_the_safe_alphabet_only() {
        assert!(DeviceId::new("gw-0042.site_a").is_ok());
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a+b",
            "a#",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn digests_are_lowercase_hex() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Sha256Digest::from_hex(&d.to_hex()), Ok(d));
        assert!(Sha256Digest::from_hex(&d.to_hex().to_uppercase()).is_err());
        assert!(Sha256Digest::from_hex("ab").is_err());
    }

    #[test]
    fn versions_order_by_precedence() {
        let v = |s| SemVer::new(s).unwrap();
        assert!(v("1.0.0-rc.1") < v("1.0.0"));
        assert!(v("1.2.0") < v("1.10.0"));
        assert!(SemVer::new("v1.0.0").is_err());
        assert!(SemVer::new("1.0").is_err());
    }
}
