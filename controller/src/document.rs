//! Operations on any signed envelope, whatever its `_type`: signing with a key file, the
//! payload that signatures cover, and attaching a signature made elsewhere (OpenSSL, an HSM).
//! `root sign`, `release sign` and `document sign` all go through [`sign_file`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use swell_proto::envelope::Opened;
use swell_proto::limits::MAX_DOCUMENT_BYTES;
use swell_proto::{Document, KeyId, PublicKey, RawEnvelope, RoleKeys, Signature, SignatureEntry};

use crate::error::Error;
use crate::fsutil::{self, DOCUMENT_MODE, Overwrite};
use crate::keys;
use crate::output::{Report, Table};

/// Reads and parses the envelope at `path` (strict JSON, size limit, envelope shape).
pub fn read_envelope(path: &Path) -> Result<RawEnvelope, Error> {
    let bytes = fsutil::read_document(path)?;
    RawEnvelope::parse(&bytes, MAX_DOCUMENT_BYTES).map_err(Error::document(path))
}

/// The envelope as the text swellctl writes: pretty JSON with a final newline. Signatures
/// cover the canonical form of `signed`, not this layout, so the file may be reformatted.
pub fn envelope_text(env: &RawEnvelope) -> Vec<u8> {
    let mut text = Vec::new();
    // A `Value` always serializes (it holds only strings, integers, arrays and objects), and
    // writing to a Vec cannot fail; fall back to the canonical form rather than panic.
    if serde_json::to_writer_pretty(&mut text, &env.to_value()).is_err() {
        text = env.to_canonical();
    }
    text.push(b'\n');
    text
}

/// Writes `env` to `path` atomically.
pub fn write_envelope(path: &Path, env: &RawEnvelope, overwrite: Overwrite) -> Result<(), Error> {
    fsutil::write_atomic(path, &envelope_text(env), DOCUMENT_MODE, overwrite)
}

/// What a signing command did.
#[derive(Debug, Serialize)]
pub struct Signed {
    /// The document signed.
    pub file: PathBuf,
    /// Its `_type`.
    #[serde(rename = "type")]
    pub doc_type: String,
    /// The key that signed.
    pub keyid: KeyId,
    /// Key ids of all signatures the document now carries.
    pub signatures: Vec<KeyId>,
}

impl Report for Signed {
    fn table(&self) -> Table {
        let mut t = Table::new();
        t.row("signed", self.file.display())
            .row("type", &self.doc_type)
            .row("key", self.keyid)
            .list("signatures", &self.signatures, "none");
        t
    }
}

/// Which documents a signing command accepts.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// Any envelope (`document sign`).
    Any,
    /// Only a well-formed document of this type (`root sign`, `release sign`), so a key holder
    /// cannot sign the wrong file by mistake.
    Typed(fn(RawEnvelope) -> Result<(), swell_proto::Error>),
}

/// [`Expect::Typed`] for documents of type `T`.
pub fn typed<T: Document>() -> Expect {
    Expect::Typed(|env| env.open::<T>().map(drop))
}

fn signed_report(file: &Path, env: &RawEnvelope, keyid: KeyId) -> Signed {
    Signed {
        file: file.to_path_buf(),
        doc_type: env.doc_type().unwrap_or("").to_owned(),
        keyid,
        signatures: env.signatures.iter().map(|s| s.keyid).collect(),
    }
}

/// Adds (or replaces) the signature of the key in `key_file` to the document at `path`,
/// rewriting it atomically.
pub fn sign_file(path: &Path, key_file: &Path, expect: Expect) -> Result<Signed, Error> {
    let key = keys::load_signing_key(key_file)?;
    let mut env = read_envelope(path)?;
    if let Expect::Typed(check) = expect {
        check(env.clone()).map_err(Error::document(path))?;
    }
    env.add_signature(&key);
    write_envelope(path, &env, Overwrite::Replace)?;
    Ok(signed_report(
        path,
        &env,
        PublicKey::from(key.verifying_key()).key_id(),
    ))
}

/// The canonical bytes of the document's `signed` value: exactly what signatures cover.
pub fn payload(path: &Path) -> Result<Vec<u8>, Error> {
    Ok(read_envelope(path)?.signed.to_canonical())
}

/// Verifies a raw 64-byte Ed25519 signature by `public_key` over the payload of the document
/// at `path` and, if it verifies, attaches it (replacing an earlier one by the same key).
pub fn attach(path: &Path, public_key: &Path, signature: &Path) -> Result<Signed, Error> {
    let key = keys::load_public_key(public_key)?;
    let raw = fsutil::read_small(signature, "a signature")?;
    let sig: [u8; 64] = raw
        .as_slice()
        .try_into()
        .map_err(|_| Error::SignatureLength {
            path: signature.to_path_buf(),
            len: raw.len() as u64,
        })?;
    let sig = Signature(sig);
    let mut env = read_envelope(path)?;
    let keyid = key.key_id();
    if !key.verify(&env.signed.to_canonical(), &sig) {
        return Err(Error::SignatureInvalid {
            signature: signature.to_path_buf(),
            keyid,
            document: path.to_path_buf(),
        });
    }
    env.signatures.retain(|s| s.keyid != keyid);
    env.signatures.push(SignatureEntry { keyid, sig });
    write_envelope(path, &env, Overwrite::Replace)?;
    Ok(signed_report(path, &env, keyid))
}

/// Key ids of `role` whose signatures on `opened` verify, each once, in signature order.
pub fn valid_signers<T>(
    opened: &Opened<T>,
    keys: &BTreeMap<KeyId, PublicKey>,
    role: &RoleKeys,
) -> Vec<KeyId> {
    let mut out = Vec::new();
    for entry in &opened.signatures {
        let Some(key) = keys.get(&entry.keyid) else {
            continue;
        };
        if role.keyids.contains(&entry.keyid)
            && !out.contains(&entry.keyid)
            && key.verify(&opened.canonical, &entry.sig)
        {
            out.push(entry.keyid);
        }
    }
    out
}
