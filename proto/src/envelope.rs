//! The signed envelope every Swell document and device message uses:
//! `{"signed": {...}, "signatures": [{"keyid": "<hex>", "sig": "<base64>"}]}`.
//!
//! Signatures are Ed25519 over the RFC 8785 canonical form of the `signed` value. The typed
//! document is deserialized from those canonical bytes, so what the code reads is exactly
//! what was signed.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use ed25519_dalek::SigningKey;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::SPEC_VERSION;
use crate::error::Error;
use crate::ids::KeyId;
use crate::json::{self, Value};
use crate::keys::{PublicKey, Signature, sign};
use crate::limits::MAX_SIGNATURES;
use crate::time::Timestamp;

/// One signature in an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// The signing key's id.
    pub keyid: KeyId,
    /// The signature over the canonical `signed` bytes.
    pub sig: Signature,
}

/// A signed document type. Its body is the `signed` object without the four header fields,
/// which [`envelope`] adds and [`RawEnvelope::open`] checks and removes.
pub trait Document: Serialize + DeserializeOwned {
    /// The `_type` value.
    const TYPE: &'static str;
}

/// The header fields every `signed` object carries besides `_type` and `spec_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// A document's revision, or a message's sequence number.
    pub version: u64,
    /// After this instant the document is refused.
    pub expires: Timestamp,
}

/// The names of the header fields, which no document body may use.
const HEADER_FIELDS: [&str; 4] = ["_type", "spec_version", "version", "expires"];

/// An envelope whose `signed` value is kept as parsed JSON: what a key holder signs without
/// needing to understand the document (`swellctl root sign`, `release sign`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEnvelope {
    /// The signed value.
    pub signed: Value,
    /// The signatures so far.
    pub signatures: Vec<SignatureEntry>,
}

/// An envelope that has been parsed and typed but whose signatures are not yet checked
/// against any role.
#[derive(Debug, Clone)]
pub struct Opened<T> {
    /// The header fields.
    pub header: Header,
    /// The typed `signed` value, header fields removed.
    pub body: T,
    /// The canonical bytes of `signed`: what the signatures cover.
    pub canonical: Vec<u8>,
    /// The signatures.
    pub signatures: Vec<SignatureEntry>,
}

fn malformed(what: &'static str, detail: impl ToString) -> Error {
    Error::Malformed {
        what,
        detail: detail.to_string(),
    }
}

/// A serde error from typing a canonical value. serde_json appends "at line 1 column N", a
/// position in the canonical bytes, which the sender never saw and which would only mislead;
/// the message itself names the field.
fn typing_error(what: &'static str, e: &serde_json::Error) -> Error {
    let text = e.to_string();
    let detail = match text.rsplit_once(" at line ") {
        Some((message, _)) if e.line() != 0 => message,
        _ => &text,
    };
    malformed(what, detail)
}

impl RawEnvelope {
    /// Parses an envelope of at most `limit` bytes.
    pub fn parse(bytes: &[u8], limit: usize) -> Result<Self, Error> {
        if bytes.len() > limit {
            return Err(Error::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let Value::Object(mut top) = json::parse(bytes)? else {
            return Err(malformed("envelope", "expected a JSON object"));
        };
        let signed = top
            .remove("signed")
            .ok_or_else(|| malformed("envelope", "no \"signed\""))?;
        let sigs = top
            .remove("signatures")
            .ok_or_else(|| malformed("envelope", "no \"signatures\""))?;
        if let Some(extra) = top.keys().next() {
            return Err(malformed("envelope", format!("unknown field \"{extra}\"")));
        }
        if !matches!(signed, Value::Object(_)) {
            return Err(malformed("envelope", "\"signed\" is not an object"));
        }
        let Value::Array(sigs) = sigs else {
            return Err(malformed("envelope", "\"signatures\" is not an array"));
        };
        if sigs.len() > MAX_SIGNATURES {
            return Err(Error::TooManySignatures {
                count: sigs.len(),
                limit: MAX_SIGNATURES,
            });
        }
        let signatures = sigs
            .iter()
            .map(|s| {
                serde_json::from_slice(&s.to_canonical()).map_err(|e| typing_error("signature", &e))
            })
            .collect::<Result<Vec<SignatureEntry>, Error>>()?;
        Ok(Self { signed, signatures })
    }

    /// The `_type` of the signed value.
    pub fn doc_type(&self) -> Option<&str> {
        match self.signed.get("_type") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }

    /// Checks the `_type` and `spec_version` header fields.
    pub fn check_header(&self, expected: &'static str) -> Result<(), Error> {
        let found = self
            .doc_type()
            .ok_or_else(|| malformed("document", "no string \"_type\""))?;
        if found != expected {
            return Err(Error::WrongType {
                expected,
                found: found.to_string(),
            });
        }
        match self.signed.get("spec_version") {
            Some(Value::Int(v)) if *v == i64::from(SPEC_VERSION) => Ok(()),
            Some(Value::Int(v)) => Err(Error::UnsupportedSpec {
                found: *v,
                supported: SPEC_VERSION,
            }),
            _ => Err(malformed("document", "no integer \"spec_version\"")),
        }
    }

    /// Adds (or replaces) `key`'s signature over the canonical `signed` bytes.
    pub fn add_signature(&mut self, key: &SigningKey) {
        let keyid = PublicKey::from(key.verifying_key()).key_id();
        let sig = sign(key, &self.signed.to_canonical());
        self.signatures.retain(|s| s.keyid != keyid);
        self.signatures.push(SignatureEntry { keyid, sig });
    }

    /// Types the signed value as `T` after checking its header.
    pub fn open<T: Document>(self) -> Result<Opened<T>, Error> {
        self.check_header(T::TYPE)?;
        let canonical = self.signed.to_canonical();
        let Value::Object(mut fields) = self.signed else {
            return Err(malformed("envelope", "\"signed\" is not an object"));
        };
        let version = match fields.remove("version") {
            Some(Value::Int(v)) => u64::try_from(v).ok(),
            _ => None,
        };
        let version = version.ok_or_else(|| malformed(T::TYPE, "no non-negative \"version\""))?;
        let expires = match fields.remove("expires") {
            Some(Value::String(s)) => Timestamp::parse(&s)?,
            _ => return Err(malformed(T::TYPE, "no string \"expires\"")),
        };
        for field in HEADER_FIELDS {
            fields.remove(field);
        }
        let body = serde_json::from_slice(&Value::Object(fields).to_canonical())
            .map_err(|e| typing_error(T::TYPE, &e))?;
        Ok(Opened {
            header: Header { version, expires },
            body,
            canonical,
            signatures: self.signatures,
        })
    }

    /// The envelope as canonical JSON bytes.
    pub fn to_canonical(&self) -> Vec<u8> {
        self.to_value().to_canonical()
    }

    /// The envelope as a JSON value.
    pub fn to_value(&self) -> Value {
        let sigs = self
            .signatures
            .iter()
            .map(|s| {
                let mut m = BTreeMap::new();
                m.insert("keyid".to_string(), Value::String(s.keyid.to_hex()));
                m.insert("sig".to_string(), Value::String(signature_text(&s.sig)));
                Value::Object(m)
            })
            .collect();
        let mut top = BTreeMap::new();
        top.insert("signed".to_string(), self.signed.clone());
        top.insert("signatures".to_string(), Value::Array(sigs));
        Value::Object(top)
    }
}

fn signature_text(sig: &Signature) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(sig.0)
}

/// Builds an unsigned envelope around `body` with `header`.
pub fn envelope<T: Document>(header: Header, body: &T) -> Result<RawEnvelope, Error> {
    let text = serde_json::to_vec(body).map_err(|e| malformed(T::TYPE, e))?;
    let Value::Object(mut fields) = json::parse(&text)? else {
        return Err(malformed(T::TYPE, "the body is not a JSON object"));
    };
    if let Some(clash) = HEADER_FIELDS.iter().find(|f| fields.contains_key(**f)) {
        return Err(malformed(
            T::TYPE,
            format!("the body uses the header field {clash}"),
        ));
    }
    // JSON integers stop at 2^53 - 1 (see `json::MAX_SAFE_INTEGER`): a larger version would
    // sign a document that no reader, this one included, accepts.
    let version = i64::try_from(header.version)
        .ok()
        .filter(|v| *v <= json::MAX_SAFE_INTEGER)
        .ok_or_else(|| {
            malformed(
                T::TYPE,
                "version is over 2^53 - 1, the largest JSON integer",
            )
        })?;
    fields.insert("_type".to_string(), Value::String(T::TYPE.to_string()));
    fields.insert(
        "spec_version".to_string(),
        Value::Int(i64::from(SPEC_VERSION)),
    );
    fields.insert("version".to_string(), Value::Int(version));
    fields.insert(
        "expires".to_string(),
        Value::String(header.expires.to_string()),
    );
    let env = RawEnvelope {
        signed: Value::Object(fields),
        signatures: Vec::new(),
    };
    // Never sign what no reader accepts: an `expires` or a body timestamp past year 9999, or a
    // body that does not deserialize back into `T`, would otherwise become a document that
    // every device refuses only after it was signed and shipped.
    RawEnvelope::parse(&env.to_canonical(), usize::MAX)?.open::<T>()?;
    Ok(env)
}

/// Builds the envelope of `body` signed by each of `keys`, as canonical JSON bytes.
pub fn sign_document<T: Document>(
    header: Header,
    body: &T,
    keys: &[&SigningKey],
) -> Result<Vec<u8>, Error> {
    let mut env = envelope(header, body)?;
    for key in keys {
        env.add_signature(key);
    }
    Ok(env.to_canonical())
}

/// Parses and types an envelope of at most `limit` bytes.
pub fn open<T: Document>(bytes: &[u8], limit: usize) -> Result<Opened<T>, Error> {
    RawEnvelope::parse(bytes, limit)?.open()
}

/// A role: the keys allowed to sign for it and how many distinct ones must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleKeys {
    /// Key ids of the role.
    pub keyids: Vec<KeyId>,
    /// Distinct valid signatures required.
    pub threshold: u32,
}

impl<T> Opened<T> {
    /// Counts valid signatures from distinct keys of `role` and checks the threshold.
    ///
    /// A signature by a key of the role that does not verify is an error on its own: it means
    /// the document was altered after signing, and no count of other signatures excuses that.
    /// Signatures by keys outside the role are ignored unless the threshold is then unmet, in
    /// which case the first of them is named.
    pub fn check_role(
        &self,
        keys: &BTreeMap<KeyId, PublicKey>,
        role: &RoleKeys,
        role_name: &str,
    ) -> Result<(), Error> {
        let mut valid = BTreeSet::new();
        let mut unknown = None;
        for entry in &self.signatures {
            let key = if role.keyids.contains(&entry.keyid) {
                keys.get(&entry.keyid)
            } else {
                None
            };
            match key {
                Some(key) if key.verify(&self.canonical, &entry.sig) => {
                    valid.insert(entry.keyid);
                }
                Some(_) => {
                    return Err(Error::BadSignature {
                        keyid: entry.keyid,
                        role: role_name.to_string(),
                    });
                }
                None => {
                    unknown.get_or_insert(entry.keyid);
                }
            }
        }
        let count = u32::try_from(valid.len()).unwrap_or(u32::MAX);
        if count >= role.threshold {
            return Ok(());
        }
        Err(match unknown {
            Some(keyid) => Error::UnknownKey {
                keyid,
                role: role_name.to_string(),
                valid: valid.len(),
                threshold: role.threshold,
            },
            None => Error::ThresholdUnmet {
                role: role_name.to_string(),
                valid: valid.len(),
                threshold: role.threshold,
            },
        })
    }

    /// Checks that exactly `key` signed: the form of device messages, each signed by the one
    /// key the device enrolled with.
    pub fn check_single_key(&self, key: &PublicKey, role_name: &str) -> Result<(), Error> {
        let keyid = key.key_id();
        let mut keys = BTreeMap::new();
        keys.insert(keyid, *key);
        self.check_role(
            &keys,
            &RoleKeys {
                keyids: alloc::vec![keyid],
                threshold: 1,
            },
            role_name,
        )
    }
}

impl<T: Document> Opened<T> {
    /// Fails with [`Error::Expired`] if the document expired at or before `now`.
    pub fn check_expiry(&self, now: Timestamp) -> Result<(), Error> {
        let expires = self.header.expires;
        if expires <= now {
            return Err(Error::Expired {
                what: T::TYPE,
                expires,
                now,
            });
        }
        Ok(())
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap as _, SerializeSeq as _};
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(n) => s.serialize_i64(*n),
            Value::String(v) => s.serialize_str(v),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(map) => {
                let mut m = s.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}
