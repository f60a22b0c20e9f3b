//! API tokens and roles.
//!
//! A token is a random bearer secret; the config holds only its SHA-256, so a leaked config
//! does not leak tokens. A request's token is hashed and looked up by digest. The digest of a
//! 256-bit random secret reveals nothing useful through lookup timing, so no constant-time
//! comparison is needed.
//!
//! Roles are ordered: a viewer reads; an operator also changes the fleet and releases; an
//! admin can do everything, including revoking devices.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use swell_proto::Sha256Digest;

/// What a token may do. Ordered: each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also provisions devices, uploads releases and sends commands.
    Operator,
    /// Also revokes devices (and, later, manages enrollment tokens).
    Admin,
}

impl Role {
    /// The role's name as written in the config.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who made a request: the token's name (the audit log's actor) and its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's role.
    pub role: Role,
}

/// The configured tokens, by the SHA-256 of the secret.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    by_digest: BTreeMap<Sha256Digest, Caller>,
}

/// Longest token name: it appears in every audit entry and log line.
const MAX_TOKEN_NAME: usize = 64;

impl TokenTable {
    /// Adds a token; names and digests must be unique.
    pub fn insert(&mut self, name: String, role: Role, digest: Sha256Digest) -> Result<(), String> {
        if name.is_empty()
            || name.len() > MAX_TOKEN_NAME
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
        {
            return Err(format!(
                "token name {name:?}: 1 to {MAX_TOKEN_NAME} of letters, digits, '.', '_', '-', '@'"
            ));
        }
        if self.by_digest.values().any(|c| c.name == name) {
            return Err(format!("two tokens are named {name:?}"));
        }
        if self.by_digest.contains_key(&digest) {
            return Err(format!(
                "token {name:?} has the same sha256 as another token"
            ));
        }
        self.by_digest.insert(digest, Caller { name, role });
        Ok(())
    }

    /// The caller a bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<&Caller> {
        self.by_digest.get(&digest_of(token))
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether no token is configured (the API then refuses every authenticated call).
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The SHA-256 of a token's text, as the config stores it.
pub fn digest_of(token: &str) -> Sha256Digest {
    Sha256Digest::from_bytes(Sha256::digest(token.as_bytes()).into())
}

/// Prefix of generated tokens, so a secret scanner (or a person) recognises one.
pub const TOKEN_PREFIX: &str = "swell_";

/// A new token from 32 random bytes (the caller draws them): the prefix and 64 hex digits.
pub fn token_from_random(random: &[u8; 32]) -> String {
    let mut token = String::from(TOKEN_PREFIX);
    for b in random {
        token.push_str(&format!("{b:02x}"));
    }
    token
}

/// The `[[api.token]]` entry for a token.
pub fn toml_entry(name: &str, role: Role, token: &str) -> String {
    format!(
        "[[api.token]]\nname = {name:?}\nrole = \"{role}\"\nsha256 = \"{}\"\n",
        digest_of(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(Role::parse(r.name()), Some(r));
        }
    }

    #[test]
    fn tokens_authenticate_by_digest() {
        let token = token_from_random(&[9; 32]);
        assert!(token.starts_with("swell_") && token.len() == 6 + 64);
        let mut table = TokenTable::default();
        table
            .insert("alice".into(), Role::Admin, digest_of(&token))
            .unwrap();
        assert_eq!(table.authenticate(&token).unwrap().name, "alice");
        assert!(table.authenticate("swell_other").is_none());
        assert!(
            table
                .insert("alice".into(), Role::Viewer, digest_of("x"))
                .is_err()
        );
        assert!(
            table
                .insert("bob".into(), Role::Viewer, digest_of(&token))
                .is_err()
        );
        assert!(
            table
                .insert("b ob".into(), Role::Viewer, digest_of("y"))
                .is_err()
        );
        let entry = toml_entry("alice", Role::Admin, &token);
        assert!(entry.contains(&digest_of(&token).to_hex()), "{entry}");
    }
}
