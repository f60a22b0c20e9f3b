//! The controller's certificate authority: an Ed25519 key and a self-signed CA certificate,
//! made on first start in `data_dir/ca/`, that issues
//!
//! - each enrolled device's mTLS client certificate: CN = the device id, over the device's
//!   **own** public key (the one it signs its reports with; its private key never leaves it),
//!   signed without a CSR: the key is handed to rcgen as raw [`PublicKeyData`];
//! - the broker's server certificate and the controller's own client certificate, for the
//!   Mosquitto configuration ([`super::mosquitto`]).
//!
//! | File (`data_dir/ca/`) | Mode | What |
//! |---|---|---|
//! | `ca.key.pem` | 0600 | the CA's PKCS#8 Ed25519 private key |
//! | `ca.pem` | 0644 | the CA certificate (what devices and brokers trust) |
//!
//! The key is written before the certificate, each atomically; a start that finds the key but
//! not the certificate re-makes the certificate from the key (same name, same key, so
//! certificates issued before stay valid).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, PublicKeyData, SanType, SerialNumber,
    SignatureAlgorithm,
};
use swell_proto::{DeviceId, PublicKey, Timestamp};

use crate::fsutil::{self, DOCUMENT_MODE, Overwrite, PRIVATE_KEY_MODE};

/// The CA certificate's common name (also the issuer name of everything it signs).
pub const CA_NAME: &str = "Swell device CA";

/// How long issued certificates are valid. Devices are cut off by revocation in the registry
/// (their messages are dropped), not by expiry, and a device in a drawer for years must still
/// be able to connect once it is plugged in again.
pub const CERT_VALIDITY_DAYS: i64 = 20 * 365;

/// Why the CA could not be opened or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{0}")]
    File(#[from] crate::Error),
    /// The stored key does not parse.
    #[error("{}: {why}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// rcgen refused to make a certificate.
    #[error("cannot make a certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// A device's raw Ed25519 public key, as rcgen wants it for the certificate's SPKI.
#[derive(Debug)]
struct RawEd25519([u8; 32]);

impl PublicKeyData for RawEd25519 {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ED25519
    }
}

/// The controller's CA, opened.
#[derive(Debug)]
pub struct DeviceCa {
    key: KeyPair,
    cert_pem: String,
    dir: PathBuf,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Sets a certificate's validity: from a day before `now` (clock skew) for
/// [`CERT_VALIDITY_DAYS`], at day granularity.
fn validity(p: &mut CertificateParams, now: Timestamp) {
    let ymd = |t: Timestamp| {
        let d = jiff::Timestamp::from_second(t.unix())
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let month = u8::try_from(d.month()).unwrap_or(1);
        let day = u8::try_from(d.day()).unwrap_or(1);
        rcgen::date_time_ymd(i32::from(d.year()), month, day)
    };
    p.not_before = ymd(now.plus_secs(-86_400));
    p.not_after = ymd(now.plus_secs(CERT_VALIDITY_DAYS * 86_400));
}

/// A new Ed25519 key as an rcgen key pair and its PKCS#8 v1 PEM. The PEM comes from proto's
/// writer, not rcgen's (ring writes PKCS#8 v2, which OpenSSL 3 refuses; Mosquitto loads keys
/// with OpenSSL).
fn new_key() -> Result<(KeyPair, String), CaError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| CaError::Key {
        path: PathBuf::from("(new key)"),
        why: format!("no randomness: {e}"),
    })?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let pem = zeroize::Zeroizing::new(swell_proto::keys::pem::private_key_to_pem(&key).map_err(
        |e| CaError::Key {
            path: PathBuf::from("(new key)"),
            why: e.to_string(),
        },
    )?);
    let pair = KeyPair::from_pem(&pem)?;
    Ok((pair, pem.to_string()))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // Without randomness the serial is still unique enough for a private CA whose relying
    // parties never look serials up; a fixed one only matters for CRLs, which we do not issue.
    let _ = getrandom::fill(&mut bytes);
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl DeviceCa {
    /// Opens the CA in `dir`, making it first if there is none.
    pub fn open_or_create(dir: &Path, now: Timestamp) -> Result<DeviceCa, CaError> {
        std::fs::create_dir_all(dir).map_err(crate::Error::io("create", dir))?;
        let key_path = dir.join("ca.key.pem");
        let cert_path = dir.join("ca.pem");
        let key = if key_path.exists() {
            let pem = fsutil::read_small(&key_path, "CA key")?;
            let pem = String::from_utf8_lossy(&pem).into_owned();
            KeyPair::from_pem(&pem).map_err(|e| CaError::Key {
                path: key_path.clone(),
                why: e.to_string(),
            })?
        } else {
            let (key, pem) = new_key()?;
            fsutil::write_atomic(
                &key_path,
                pem.as_bytes(),
                PRIVATE_KEY_MODE,
                Overwrite::Refuse,
            )?;
            key
        };
        let cert_pem = if cert_path.exists() {
            String::from_utf8_lossy(&fsutil::read_small(&cert_path, "CA certificate")?).into_owned()
        } else {
            let mut p = ca_params();
            validity(&mut p, now);
            let pem = p.self_signed(&key)?.pem();
            fsutil::write_atomic(&cert_path, pem.as_bytes(), DOCUMENT_MODE, Overwrite::Refuse)?;
            pem
        };
        Ok(DeviceCa {
            key,
            cert_pem,
            dir: dir.to_owned(),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate's path.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(
        &self,
        mut p: CertificateParams,
        key: &impl PublicKeyData,
        now: Timestamp,
    ) -> Result<String, CaError> {
        validity(&mut p, now);
        p.serial_number = Some(random_serial());
        p.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(ca_params(), &self.key);
        Ok(p.signed_by(key, &issuer)?.pem())
    }

    fn client_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p
    }

    /// A device's client certificate: CN = its id, over its own public key.
    pub fn issue_device(
        &self,
        id: &DeviceId,
        key: &PublicKey,
        now: Timestamp,
    ) -> Result<String, CaError> {
        self.issue(
            Self::client_params(id.as_str()),
            &RawEd25519(key.to_bytes()),
            now,
        )
    }

    /// A new key and a client certificate with CN = `cn` (the controller's own identity at
    /// the broker). Returns `(certificate PEM, PKCS#8 key PEM)`.
    pub fn issue_client_with_key(
        &self,
        cn: &str,
        now: Timestamp,
    ) -> Result<(String, String), CaError> {
        let (key, pem) = new_key()?;
        let cert = self.issue(Self::client_params(cn), &key, now)?;
        Ok((cert, pem))
    }

    /// A new key and a server certificate for `names` (DNS names or IP addresses). Returns
    /// `(certificate PEM, PKCS#8 key PEM)`.
    pub fn issue_server(
        &self,
        names: &[String],
        now: Timestamp,
    ) -> Result<(String, String), CaError> {
        let (key, pem) = new_key()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map_or("swell-broker", String::as_str),
        );
        p.distinguished_name = dn;
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = self.issue(p, &key, now)?;
        Ok((cert, pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CA is made once and reopened with the same certificate; a device certificate
    /// carries the device's own key and its id.
    #[test]
    fn made_once_and_issues_over_the_device_key() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_unix(1_800_000_000);
        let ca = DeviceCa::open_or_create(dir.path(), now).unwrap();
        let again = DeviceCa::open_or_create(dir.path(), now).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        let device_key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let public = PublicKey::from(device_key.verifying_key());
        let id = DeviceId::new("gw-7").unwrap();
        let pem = again.issue_device(&id, &public, now).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let der = rustls_pki_der(&pem);
        // The raw public key and the CN appear in the certificate's DER.
        let raw = public.to_bytes();
        assert!(der.windows(32).any(|w| w == raw));
        assert!(der.windows(4).any(|w| w == b"gw-7"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("ca.key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    fn rustls_pki_der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    }
}
