//! Property tests of the JSON layer and the signed envelope.
//!
//! - Canonical form: for arbitrary values (strings with any Unicode scalar, controls and astral
//!   characters included; bounded depth), every spelling of a value (members in any order, any
//!   white space between tokens, any mix of escapes) parses to that value and canonicalizes to
//!   the same bytes; `parse(canonical(v)) == v`; canonicalization is idempotent.
//! - Signed envelopes: no single-byte change anywhere in a signed envelope's canonical bytes
//!   yields something that verifies.
//! - Hostile input: nothing the parsers refuse makes them panic, and what they accept has
//!   exactly one spelling.

mod common;

use std::sync::LazyLock;

use common::{device_1, device_key, now};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use swell_proto::json::{self, MAX_SAFE_INTEGER, Value};
use swell_proto::messages::{self, Heartbeat, Presence, Report};
use swell_proto::{
    DeviceId, Error, KeyId, PublicKey, RawEnvelope, RootDocument, SemVer, Timestamp, TrustRoot,
};

fn arb_string() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..10).prop_map(String::from_iter)
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).prop_map(Value::Int),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(arb_string(), inner, 0..6).prop_map(Value::Object),
        ]
    })
}

/// A deterministic source of choices for one rendering (xorshift64*).
struct Choices(u64);

impl Choices {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
        usize::try_from(r).unwrap_or_default() % n
    }
}

/// `v` spelled non-canonically: members shuffled, random white space between tokens, each
/// character of each string written raw, as a short escape or as `\uXXXX` (surrogate pairs for
/// astral characters, hex digits in either case).
fn render(v: &Value, c: &mut Choices, out: &mut String) {
    white_space(c, out);
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::String(s) => render_string(s, c, out),
        Value::Array(items) => {
            out.push('[');
            white_space(c, out);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render(item, c, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            for i in (1..entries.len()).rev() {
                entries.swap(i, c.below(i + 1));
            }
            out.push('{');
            white_space(c, out);
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                white_space(c, out);
                render_string(key, c, out);
                white_space(c, out);
                out.push(':');
                render(value, c, out);
            }
            out.push('}');
        }
    }
    white_space(c, out);
}

fn white_space(c: &mut Choices, out: &mut String) {
    for _ in 0..c.below(3) {
        out.push([' ', '\t', '\n', '\r'][c.below(4)]);
    }
}

fn render_string(s: &str, c: &mut Choices, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        let short = match ch {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            _ => None,
        };
        let raw_allowed = ch != '"' && ch != '\\' && u32::from(ch) >= 0x20;
        match c.below(3) {
            0 if raw_allowed => out.push(ch),
            1 if short.is_some() => out.push_str(short.unwrap_or_default()),
            _ => {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    let hex = format!("{unit:04x}");
                    out.push_str("\\u");
                    out.push_str(&if c.below(2) == 0 {
                        hex.to_uppercase()
                    } else {
                        hex
                    });
                }
            }
        }
    }
    out.push('"');
}

/// `root.json`, loaded once: the tests below verify tens of thousands of documents.
static ROOT: LazyLock<TrustRoot> = LazyLock::new(common::trusted_root);

/// The signed fixtures that verify, as canonical bytes, by name (see `verify_as`).
static SIGNED: LazyLock<Vec<(&'static str, Vec<u8>)>> = LazyLock::new(|| {
    [
        "release.json",
        "root-v2.json",
        "command-install.json",
        "command-revert.json",
        "report-rolled-back.json",
        "heartbeat.json",
        "presence.json",
    ]
    .into_iter()
    .map(|name| (name, common::raw(name).to_canonical()))
    .collect()
});

fn verify_as(name: &str, bytes: &[u8]) -> Result<(), Error> {
    let device = device_1();
    let key = device_key(&device);
    match name {
        "release.json" => ROOT.verify_release(bytes, now()).map(drop),
        "root-v2.json" => ROOT.rotate(bytes).map(drop),
        "command-install.json" | "command-revert.json" => {
            ROOT.verify_command(bytes, &device, now()).map(drop)
        }
        "report-rolled-back.json" => {
            messages::open_device_message::<Report>(bytes, &device, &key, now()).map(drop)
        }
        "heartbeat.json" => {
            messages::open_device_message::<Heartbeat>(bytes, &device, &key, now()).map(drop)
        }
        "presence.json" => {
            messages::open_device_message::<Presence>(bytes, &device, &key, now()).map(drop)
        }
        other => unreachable!("no check for {other}"),
    }
}

/// Runs every entry point that takes untrusted bytes; only a panic can fail this.
fn feed_everything(bytes: &[u8]) {
    let device = device_1();
    let key = device_key(&device);
    let root = &*ROOT;
    let _ = json::parse(bytes);
    let _ = RawEnvelope::parse(bytes, usize::MAX).map(RawEnvelope::open::<RootDocument>);
    let _ = TrustRoot::from_trusted(bytes);
    let _ = root.rotate(bytes);
    let _ = root.verify_release(bytes, now());
    let _ = root.verify_command(bytes, &device, now());
    let _ = messages::open_device_message::<Report>(bytes, &device, &key, now());
    let _ = messages::open_device_message::<Heartbeat>(bytes, &device, &key, now());
    let _ = messages::open_device_message::<Presence>(bytes, &device, &key, now());
}

/// Changing any byte of a signed fixture's canonical bytes never yields a document that
/// verifies. Exhaustive over positions; at each, the low bit and the ASCII case bit (0x20) are
/// flipped, which turns digits into other digits and letters into their other case (hex and
/// base64 text). `no_single_byte_change_verifies` tries arbitrary replacement bytes.
#[test]
fn no_single_bit_flip_verifies() {
    for (name, bytes) in SIGNED.iter() {
        verify_as(name, bytes).unwrap();
        for i in 0..bytes.len() {
            for bit in [0, 5] {
                let mut changed = bytes.clone();
                changed[i] ^= 1 << bit;
                assert!(
                    verify_as(name, &changed).is_err(),
                    "{name}: flipping bit {bit} of byte {i} still verifies"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any spelling of a value parses back to it and canonicalizes to the same bytes.
    #[test]
    fn canonical_form_ignores_order_white_space_and_escapes(v in arb_value(), seed in any::<u64>()) {
        let mut text = String::new();
        render(&v, &mut Choices(seed | 1), &mut text);
        let parsed = json::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(&parsed, &v);
        prop_assert_eq!(parsed.to_canonical(), v.to_canonical());
    }

    /// The canonical form parses back to the value, and is a fixed point.
    #[test]
    fn canonical_form_round_trips(v in arb_value()) {
        let canonical = v.to_canonical();
        let parsed = json::parse(&canonical).unwrap();
        prop_assert_eq!(&parsed, &v);
        prop_assert_eq!(parsed.to_canonical(), canonical);
    }

    /// Replacing any one byte of a signed envelope's canonical bytes with any other byte never
    /// yields a document that verifies.
    #[test]
    fn no_single_byte_change_verifies(which in 0usize..7, at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let (name, bytes) = &SIGNED[which];
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        let mut changed = bytes.clone();
        changed[i] = byte;
        prop_assert!(verify_as(name, &changed).is_err());
    }

    /// Random bytes never panic any parser or verifier.
    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        feed_everything(&bytes);
    }

    /// Byte soup from JSON's own alphabet reaches deeper into the parser; still no panic.
    #[test]
    fn json_like_bytes_never_panic(
        bytes in vec(prop::sample::select(b"{}[]\",:0123456789-.eE \t\nnultrfase\\u/\x00\x7f\xc3\xa9\xed\xa0\x80\xf0\x9f".to_vec()), 0..300)
    ) {
        feed_everything(&bytes);
    }

    /// A valid envelope with a few random bytes inserted, deleted or replaced never panics.
    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..7,
        edits in vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..5),
    ) {
        let mut bytes = SIGNED[which].1.clone();
        for (at, op, byte) in edits {
            let i = at.index(bytes.len() + 1);
            match op {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => {}
            }
        }
        feed_everything(&bytes);
    }

    /// Any 32 bytes: `PublicKey::from_bytes` never panics, and a key it accepts has exactly
    /// that encoding (one key, one key id).
    #[test]
    fn public_key_parsing_is_total_and_canonical(bytes in any::<[u8; 32]>()) {
        if let Ok(key) = PublicKey::from_bytes(&bytes) {
            prop_assert_eq!(key.to_bytes(), bytes);
        }
    }

    /// Identifier, key id, timestamp and version parsers never panic, and what they accept
    /// they print back unchanged: every accepted value has one spelling.
    #[test]
    fn text_parsers_are_total_and_canonical(
        any_text in "\\PC{0,80}",
        near_time in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
        near_hex in "[0-9a-fA-F]{63,65}",
        near_version in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(-[0-9A-Za-z.-]{0,8})?(\\+[0-9A-Za-z.-]{0,8})?",
    ) {
        for text in [&any_text, &near_time, &near_hex, &near_version] {
            if let Ok(t) = Timestamp::parse(text) {
                prop_assert_eq!(&t.to_string(), text);
            }
            if let Ok(k) = KeyId::from_hex(text) {
                prop_assert_eq!(&k.to_hex(), text);
            }
            if let Ok(d) = DeviceId::new(text) {
                prop_assert_eq!(d.as_str(), text);
            }
            if let Ok(v) = SemVer::new(text) {
                prop_assert_eq!(&v.to_string(), text);
            }
        }
    }
}

/// The same for PEM: arbitrary text is refused without a panic.
#[cfg(feature = "pem")]
mod pem {
    use proptest::prelude::*;
    use swell_proto::keys::pem;

    proptest! {
        #[test]
        fn pem_parsing_never_panics(text in "(-----BEGIN (PUBLIC|PRIVATE) KEY-----\n)?[A-Za-z0-9+/=\n]{0,120}(-----END (PUBLIC|PRIVATE) KEY-----\n)?") {
            let _ = pem::public_key_from_pem(&text);
            let _ = pem::private_key_from_pem(&text);
        }
    }
}
