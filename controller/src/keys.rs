//! Key files: generating Ed25519 key pairs and reading PEM keys.
//!
//! Private keys are PKCS#8 v1 PEM (`-----BEGIN PRIVATE KEY-----`), public keys SPKI PEM
//! (`-----BEGIN PUBLIC KEY-----`): the forms `openssl genpkey -algorithm ed25519` and
//! `openssl pkey -pubout` write, so keys move freely between Swell and OpenSSL.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use swell_proto::keys::pem;
use swell_proto::{KeyId, PublicKey};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::fsutil::{self, DOCUMENT_MODE, Overwrite, PRIVATE_KEY_MODE};

const PRIVATE_LABEL: &str = "-----BEGIN PRIVATE KEY-----";
const PUBLIC_LABEL: &str = "-----BEGIN PUBLIC KEY-----";
const ENCRYPTED_LABEL: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";

/// A key pair written by [`generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    /// The new key's id.
    pub keyid: KeyId,
    /// The private key file (`PREFIX.pem`, mode 0600).
    pub private_key: PathBuf,
    /// The public key file (`PREFIX.pub.pem`).
    pub public_key: PathBuf,
}

/// `PREFIX` with `suffix` appended to its last component.
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes the key pair derived from `seed` as `PREFIX.pem` and `PREFIX.pub.pem`, refusing to
/// replace either file. The caller supplies the 32 random bytes.
pub fn generate(prefix: &Path, seed: &[u8; 32]) -> Result<Generated, Error> {
    let private_key = with_suffix(prefix, ".pem");
    let public_key = with_suffix(prefix, ".pub.pem");
    for path in [&private_key, &public_key] {
        if path.exists() {
            return Err(Error::Exists { path: path.clone() });
        }
    }
    let signing = SigningKey::from_bytes(seed);
    let public = PublicKey::from(signing.verifying_key());
    let private_pem =
        Zeroizing::new(pem::private_key_to_pem(&signing).map_err(|e| Error::Key {
            path: private_key.clone(),
            why: e.why.to_string(),
        })?);
    let public_pem = pem::public_key_to_pem(&public).map_err(|e| Error::Key {
        path: public_key.clone(),
        why: e.why.to_string(),
    })?;
    fsutil::write_atomic(
        &private_key,
        private_pem.as_bytes(),
        PRIVATE_KEY_MODE,
        Overwrite::Refuse,
    )?;
    if let Err(e) = fsutil::write_atomic(
        &public_key,
        public_pem.as_bytes(),
        DOCUMENT_MODE,
        Overwrite::Refuse,
    ) {
        // Do not leave half a key pair behind: the private key is useless without a record of
        // its public half, and a retry would refuse to overwrite it.
        let _ = std::fs::remove_file(&private_key);
        return Err(e);
    }
    Ok(Generated {
        keyid: public.key_id(),
        private_key,
        public_key,
    })
}

fn read_pem(path: &Path) -> Result<Zeroizing<String>, Error> {
    let bytes = Zeroizing::new(fsutil::read_small(path, "a PEM key")?);
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::Key {
        path: path.to_path_buf(),
        why: "not a PEM text file".into(),
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn not_a_key(path: &Path) -> Error {
    Error::Key {
        path: path.to_path_buf(),
        why: "not a PEM Ed25519 key (expected \"BEGIN PRIVATE KEY\" or \"BEGIN PUBLIC KEY\")"
            .into(),
    }
}

/// Reads a PKCS#8 PEM Ed25519 private key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Error> {
    let text = read_pem(path)?;
    if text.contains(ENCRYPTED_LABEL) {
        return Err(Error::Key {
            path: path.to_path_buf(),
            why: "encrypted private keys are not supported; decrypt it with `openssl pkey`".into(),
        });
    }
    if !text.contains(PRIVATE_LABEL) {
        return Err(if text.contains(PUBLIC_LABEL) {
            Error::Key {
                path: path.to_path_buf(),
                why: "this is a public key; signing needs the private key".into(),
            }
        } else {
            not_a_key(path)
        });
    }
    pem::private_key_from_pem(&text).map_err(|e| Error::Key {
        path: path.to_path_buf(),
        why: e.why.to_string(),
    })
}

/// Reads an Ed25519 public key from an SPKI PEM file, or derives it from a PKCS#8 PEM private
/// key file.
pub fn load_public_key(path: &Path) -> Result<PublicKey, Error> {
    let text = read_pem(path)?;
    if text.contains(PUBLIC_LABEL) {
        return pem::public_key_from_pem(&text).map_err(|e| Error::Key {
            path: path.to_path_buf(),
            why: e.why.to_string(),
        });
    }
    if text.contains(PRIVATE_LABEL) || text.contains(ENCRYPTED_LABEL) {
        return load_signing_key(path).map(|k| PublicKey::from(k.verifying_key()));
    }
    Err(not_a_key(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("k");
        let g = generate(&prefix, &[7; 32]).unwrap();
        assert_eq!(load_public_key(&g.public_key).unwrap().key_id(), g.keyid);
        assert_eq!(load_public_key(&g.private_key).unwrap().key_id(), g.keyid);
        assert_eq!(
            load_signing_key(&g.private_key).unwrap().to_bytes(),
            [7; 32]
        );
        let err = load_signing_key(&g.public_key).unwrap_err();
        assert!(err.to_string().contains("this is a public key"), "{err}");
        assert!(matches!(
            generate(&prefix, &[8; 32]),
            Err(Error::Exists { .. })
        ));
    }

    #[test]
    fn non_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.pem");
        std::fs::write(&path, "hello").unwrap();
        let err = load_public_key(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}: not a PEM", path.display())),
            "{err}"
        );
    }
}
