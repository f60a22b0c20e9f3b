//! The device's own Ed25519 key: generated on the device, never leaves it, signs every report.

use std::path::Path;

use ed25519_dalek::SigningKey;
use swell_proto::keys::pem::private_key_from_pem;

use crate::driver::AgentError;

/// Reads the device key (PKCS#8 PEM).
pub fn load_device_key(path: &Path) -> Result<SigningKey, AgentError> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| AgentError::Setup(format!("reading device key {}: {e}", path.display())))?;
    private_key_from_pem(&pem)
        .map_err(|e| AgentError::Setup(format!("device key {}: {e}", path.display())))
}
