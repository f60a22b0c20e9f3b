//! Keys and key ids: a key id is the lowercase hex SHA-256 of the 32-byte raw public key, each
//! key has exactly one accepted encoding, and keys that would weaken signatures are refused.

mod common;

use common::hex32;
use swell_proto::{KeyId, PublicKey, Sha256Digest, Signature};

/// The key id of RFC 8032 TEST 1's public key, computed outside Swell
/// (`xxd -r -p | sha256sum`), pins the key-id contract to a value other tools reproduce.
#[test]
fn key_id_is_sha256_of_the_raw_key() {
    let key = PublicKey::from_bytes(&hex32(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    ))
    .unwrap();
    assert_eq!(
        key.key_id().to_hex(),
        "21fe31dfa154a261626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9"
    );
    for seed in [1, 2, 3, 11, 12, 21, 31, 32, 99] {
        let key = common::public(seed);
        assert_eq!(
            key.key_id(),
            KeyId::from_bytes(*Sha256Digest::of(&key.to_bytes()).as_bytes())
        );
    }
}

/// Small-order points (the identity, the point of order 2, a point of order 4) are refused: a
/// signature under such a key can verify for many messages.
#[test]
fn small_order_keys_are_refused() {
    let refusal = |bytes| PublicKey::from_bytes(&bytes).unwrap_err().why;
    for text in [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        assert_eq!(refusal(hex32(text)), "a small-order Ed25519 key", "{text}");
    }
}

/// y = p + 3 encodes the same point as y = 3: accepting both would give one key two key ids.
/// y = p + 2 is on no point of the curve.
#[test]
fn non_canonical_and_off_curve_encodings_are_refused() {
    let refusal = |bytes| PublicKey::from_bytes(&bytes).unwrap_err().why;
    assert_eq!(
        refusal(hex32(
            "f0ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
        )),
        "not the canonical encoding of its point"
    );
    let mut canonical = [0; 32];
    canonical[0] = 3;
    assert!(PublicKey::from_bytes(&canonical).is_ok());
    assert_eq!(
        refusal(hex32(
            "efffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
        )),
        "not a valid Ed25519 point"
    );
}

/// Strict verification: S must be below the group order L, so adding L to S (the classic
/// malleation, same value mod L) gives a signature that does not verify.
#[test]
fn non_canonical_signature_scalar_is_refused() {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let key = common::key(common::seed::RELEASE_1);
    let public = common::public(common::seed::RELEASE_1);
    let sig = swell_proto::keys::sign(&key, b"message");
    assert!(public.verify(b"message", &sig));
    let mut malleated = sig.0;
    let mut carry = 0u16;
    for (s, l) in malleated[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum.to_le_bytes()[0];
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits");
    assert!(!public.verify(b"message", &Signature(malleated)));
}

/// PKCS#8 v1 and SPKI, the DER OpenSSL writes for Ed25519, wrapped in PEM: the fixed RFC 8410
/// prefixes followed by the raw key.
#[cfg(feature = "pem")]
#[test]
fn pem_is_what_openssl_writes() {
    use base64::Engine as _;
    use swell_proto::keys::pem;

    fn pem_block(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    }
    let key = common::key(common::seed::RELEASE_1);
    let public = common::public(common::seed::RELEASE_1);
    let mut pkcs8 = common::hex("302e020100300506032b657004220420");
    pkcs8.extend(key.to_bytes());
    let mut spki = common::hex("302a300506032b6570032100");
    spki.extend(public.to_bytes());

    let private_pem = pem::private_key_to_pem(&key).unwrap();
    assert_eq!(private_pem, pem_block("PRIVATE KEY", &pkcs8));
    assert_eq!(
        pem::private_key_from_pem(&private_pem).unwrap().to_bytes(),
        key.to_bytes()
    );
    let public_pem = pem::public_key_to_pem(&public).unwrap();
    assert_eq!(public_pem, pem_block("PUBLIC KEY", &spki));
    assert_eq!(pem::public_key_from_pem(&public_pem).unwrap(), public);
    assert!(pem::private_key_from_pem(&public_pem).is_err());
    assert!(pem::public_key_from_pem("not a key").is_err());
}
