//! Ed25519 keys, key ids and signatures.
//!
//! Verification is always `verify_strict` (RFC 8032 §5.1.7 with canonical `S` and no
//! small-order keys or `R`), so a signature has exactly one valid encoding.

use alloc::string::String;
use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{InvalidId, KeyId};

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses the 32-byte raw form, refusing points that are not on the curve, keys of small
    /// order (which would let one signature verify for many messages), and non-canonical
    /// encodings (which would give one key two key ids).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, InvalidId> {
        let bad = |why| InvalidId {
            what: "public key",
            value: crate::hex::encode(bytes),
            why,
        };
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| bad("not a valid Ed25519 point"))?;
        if key.is_weak() {
            return Err(bad("a small-order Ed25519 key"));
        }
        // A few points have a second, non-canonical encoding (y + p < 2^255). Refusing it keeps
        // "one key, one key id": otherwise one key could sit in a role under two ids.
        if key.to_edwards().compress().to_bytes() != *bytes {
            return Err(bad("not the canonical encoding of its point"));
        }
        Ok(Self(key))
    }

    /// The 32-byte raw form.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The key id: lowercase hex SHA-256 of the raw public key.
    pub fn key_id(&self) -> KeyId {
        KeyId::from_bytes(*crate::Sha256Digest::of(self.0.as_bytes()).as_bytes())
    }

    /// Whether `sig` is this key's strict Ed25519 signature over `message`.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        self.0
            .verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig.0))
            .is_ok()
    }

    /// The underlying dalek key.
    pub fn as_dalek(&self) -> &VerifyingKey {
        &self.0
    }
}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> Self {
        Self(key)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

/// A 64-byte Ed25519 signature, base64 (standard alphabet, padded) in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", BASE64.encode(self.0))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bytes = BASE64
            .decode(s.as_bytes())
            .map_err(|_| serde::de::Error::custom("signature is not padded standard base64"))?;
        let bytes: [u8; 64] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("signature is not 64 bytes"))?;
        Ok(Self(bytes))
    }
}

/// Signs `message` with `key`.
pub fn sign(key: &SigningKey, message: &[u8]) -> Signature {
    Signature(key.sign(message).to_bytes())
}

/// PKCS#8 and SPKI PEM, the formats OpenSSL reads and writes for Ed25519.
#[cfg(feature = "pem")]
pub mod pem {
    use alloc::string::String;

    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
    use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, KeypairBytes};
    use ed25519_dalek::{SigningKey, VerifyingKey};

    use super::PublicKey;
    use crate::ids::InvalidId;

    fn bad(what: &'static str, why: &'static str) -> InvalidId {
        InvalidId {
            what,
            value: String::new(),
            why,
        }
    }

    /// Reads a PKCS#8 PEM Ed25519 private key (v1 as OpenSSL writes it, or v2).
    pub fn private_key_from_pem(pem: &str) -> Result<SigningKey, InvalidId> {
        SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| bad("private key", "not a PKCS#8 PEM Ed25519 private key"))
    }

    /// Writes `key` as PKCS#8 v1 PEM, the form `openssl genpkey -algorithm ed25519` writes.
    pub fn private_key_to_pem(key: &SigningKey) -> Result<String, InvalidId> {
        let pair = KeypairBytes {
            secret_key: key.to_bytes(),
            public_key: None,
        };
        ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_pem(&pair, LineEnding::LF)
            .map(|pem| String::from(pem.as_str()))
            .map_err(|_| bad("private key", "could not be encoded"))
    }

    /// Reads an SPKI PEM Ed25519 public key.
    pub fn public_key_from_pem(pem: &str) -> Result<PublicKey, InvalidId> {
        let key = VerifyingKey::from_public_key_pem(pem)
            .map_err(|_| bad("public key", "not an SPKI PEM Ed25519 public key"))?;
        PublicKey::from_bytes(key.as_bytes())
    }

    /// Writes `key` as SPKI PEM.
    pub fn public_key_to_pem(key: &PublicKey) -> Result<String, InvalidId> {
        key.as_dalek()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| bad("public key", "could not be encoded"))
    }
}
