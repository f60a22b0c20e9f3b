//! RFC 8785 (JSON Canonicalization Scheme) examples, adapted to Swell's integers-only JSON.

// The helper below is test support: an unwrap that fails is a failed test.
#![allow(clippy::unwrap_used)]

use swell_proto::json::{self, JsonErrorKind};

fn canonical(text: &str) -> String {
    String::from_utf8(json::parse(text.as_bytes()).unwrap().to_canonical()).unwrap()
}

/// §3.2.2's sample with its numbers replaced by integers (Swell refuses fractions and
/// exponents). The string is the RFC's, byte for byte, and must come out exactly as the RFC
/// prints it: `\u000F` becomes lowercase `\u000f`, `\u000a` becomes `\n`, `\u0042` becomes `B`,
/// `\/` becomes `/`, and `€` stays raw UTF-8.
#[test]
fn section_3_2_2_sample_with_integers() {
    let input = r#"{
  "numbers": [333333333, 1000000000000000, 4, -2, 0, 9007199254740991],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    let expected = concat!(
        r#"{"literals":[null,true,false],"#,
        r#""numbers":[333333333,1000000000000000,4,-2,0,9007199254740991],"#,
        "\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
    assert_eq!(canonical(input), expected);
    // The RFC prints the string as "€$\u000f\nA'B\"\\\\\"/" — the same bytes.
    assert!(expected.ends_with(r#""string":"€$\u000f\nA'B\"\\\\\"/"}"#));
}

/// §3.2.2's original sample has floating-point numbers, which Swell refuses outright rather
/// than canonicalize: the first one is where the parser stops.
#[test]
fn section_3_2_2_original_sample_is_refused() {
    let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    let err = json::parse(input.as_bytes()).unwrap_err();
    assert_eq!(err.kind, JsonErrorKind::NonInteger);
    assert_eq!(err.offset, input.find("333333333.").unwrap());
}

/// §3.2.3's sorting example: keys sort by their UTF-16 code units, so the emoji (surrogates
/// 0xD83D 0xDE00) sorts before U+FB33 although its UTF-8 and code point order is after.
#[test]
fn section_3_2_3_sorting_example() {
    let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
    // Expected order: "\r", "1", U+0080, U+00F6, U+20AC, U+1F600, U+FB33.
    let canonical_text = canonical(input);
    assert_eq!(
        canonical_text,
        concat!(
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",",
            "\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",",
            "\"\u{1f600}\":\"Emoji: Grinning Face\",",
            "\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        )
    );
}

/// §3.2.2.2: only `"`, `\` and the controls below U+0020 are escaped, with the two-character
/// forms where JSON has one and lowercase `\u00xx` otherwise; DEL, U+2028 and every other
/// character stay raw.
#[test]
fn string_escaping_is_minimal() {
    let mut input = String::from("\"");
    for c in 0u32..0x20 {
        input.push_str(&format!("\\u{c:04X}"));
    }
    input.push_str("\\u007f\\u2028\\u2029\\ud834\\udd1e\"");
    let expected = concat!(
        "\"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r",
        "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019",
        "\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\u{7f}\u{2028}\u{2029}\u{1d11e}\""
    );
    assert_eq!(canonical(&input), expected);
}
