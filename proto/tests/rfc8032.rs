//! RFC 8032 §7.1 Ed25519 test vectors: the public key derived from each secret key matches,
//! `swell_proto::keys::sign` reproduces the signature byte for byte (Ed25519 is deterministic),
//! `PublicKey::verify` accepts it, and rejects it after any single bit flip of the signature
//! or the message.
//!
//! TEST 1024 (a 1023-byte message) is left out: its message is too long to copy here with
//! certainty, and the other four exercise the same code.

mod common;

use common::{hex, hex32};
use ed25519_dalek::SigningKey;
use swell_proto::PublicKey;
use swell_proto::keys::sign;

struct Vector {
    name: &'static str,
    secret: &'static str,
    public: &'static str,
    message: &'static str,
    signature: &'static str,
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "TEST 1",
        secret: "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        public: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        message: "",
        signature: "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    },
    Vector {
        name: "TEST 2",
        secret: "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        public: "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        message: "72",
        signature: "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    },
    Vector {
        name: "TEST 3",
        secret: "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        public: "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        message: "af82",
        signature: "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    },
    Vector {
        name: "TEST SHA(abc)",
        secret: "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        public: "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        message: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        signature: "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    },
];

/// Each vector: derived public key, byte-exact signature, acceptance.
#[test]
fn vectors_sign_and_verify() {
    for v in VECTORS {
        let secret = SigningKey::from_bytes(&hex32(v.secret));
        let public = PublicKey::from(secret.verifying_key());
        assert_eq!(public.to_bytes(), hex32(v.public), "{}: public key", v.name);
        assert_eq!(
            PublicKey::from_bytes(&hex32(v.public)).unwrap(),
            public,
            "{}: the raw public key parses",
            v.name
        );
        let message = hex(v.message);
        let signature = sign(&secret, &message);
        assert_eq!(
            signature.0.to_vec(),
            hex(v.signature),
            "{}: signature",
            v.name
        );
        assert!(public.verify(&message, &signature), "{}: verify", v.name);
    }
}

/// Flipping any one bit of the signature, or of a non-empty message, makes verification fail.
#[test]
fn any_flipped_bit_is_rejected() {
    for v in VECTORS {
        let public = PublicKey::from_bytes(&hex32(v.public)).unwrap();
        let message = hex(v.message);
        let signature = swell_proto::Signature(hex(v.signature).try_into().unwrap());
        for bit in 0..512 {
            let mut bad = signature;
            bad.0[bit / 8] ^= 1 << (bit % 8);
            assert!(!public.verify(&message, &bad), "{}: sig bit {bit}", v.name);
        }
        for bit in 0..message.len() * 8 {
            let mut bad = message.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !public.verify(&bad, &signature),
                "{}: message bit {bit}",
                v.name
            );
        }
    }
}

/// The SHA(abc) vector's message is SHA-512("abc"), as the RFC says: a check that the long
/// hex string above was copied right.
#[test]
fn sha_abc_message_is_sha512_of_abc() {
    use sha2::Digest as _;
    let v = VECTORS.iter().find(|v| v.name == "TEST SHA(abc)").unwrap();
    assert_eq!(sha2::Sha512::digest(b"abc").to_vec(), hex(v.message));
}
