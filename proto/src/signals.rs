//! Error signatures: a log line reduced to a template (its variable parts masked), hashed to
//! a short id, with one example line kept for people.
//!
//! Two lines that differ only in numbers, hex, UUIDs, ids, paths, addresses or quoted values
//! get the same template, so "the same error on another device, another request" counts as
//! one signature, and a message the old release never printed stands out as a new one.
//!
//! | Masked | Becomes | Example |
//! |---|---|---|
//! | quoted strings (`"…"`, `'…'`) | `"<STR>"` | `open "a b"` → `open "<STR>"` |
//! | UUIDs | `<UUID>` | `job 550e8400-e29b-41d4-a716-446655440000` |
//! | URLs | `<URL>` | `https://x.example/a?b=1` |
//! | paths (absolute; relative with a dotted or numbered segment) | `<PATH>` | `/var/lib/app/7.db` |
//! | IPv4 (with port or prefix) and IPv6 | `<IP>` | `10.0.3.7:8883`, `fe80::1` |
//! | dates and times of day | `<TS>` | `2027-03-01T12:00:00Z`, `12:00:01.5` |
//! | `0x` hex and hex runs of 6+ with a digit | `<HEX>` | `0x7ffd`, `deadbeef42` |
//! | numbers (with a short unit) | `<NUM>` | `42`, `-3.5`, `120ms` → `<NUM>ms` |
//! | other words with digits | `<ID>` | `eth0`, `sda1` |
//!
//! Words without digits are kept, whitespace runs become one space.
//!
//! Architecture invariant: templating uses only `core`, `alloc` and `sha2`, because the agent
//! computes the ids it reports and the controller the ids it compares, and both must agree:
//! this is the one implementation (the controller's `verification::signatures` re-exports
//! it).

use alloc::borrow::ToOwned as _;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Lines are cut to this many bytes before templating: a multi-kilobyte stack dump is one
/// signature by its first lines, and the bound keeps templating cheap on a device.
pub const MAX_LINE_BYTES: usize = 4096;

/// The example line kept with a signature is cut to this many bytes: enough to read in a
/// terminal or an audit record, small enough to ship in every health batch.
pub const MAX_EXAMPLE_BYTES: usize = 512;

/// A signature's id: the first 8 bytes of the SHA-256 of its template, written as 16
/// lowercase hex digits. 64 bits make a collision among the few thousand templates of a
/// fleet about a one-in-10¹² event.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignatureId([u8; 8]);

impl SignatureId {
    /// The id of a template.
    pub fn of_template(template: &str) -> SignatureId {
        let digest = Sha256::digest(template.as_bytes());
        let mut id = [0; 8];
        id.copy_from_slice(&digest[..8]);
        SignatureId(id)
    }

    /// An id from its raw bytes (the evaluation harness makes ids for simulated messages).
    pub fn from_bytes(bytes: [u8; 8]) -> SignatureId {
        SignatureId(bytes)
    }

    /// Parses 16 hex digits, as [`fmt::Display`] writes them.
    pub fn from_hex(s: &str) -> Option<SignatureId> {
        if s.len() != 16 {
            return None;
        }
        let mut id = [0; 8];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(SignatureId(id))
    }
}

impl fmt::Display for SignatureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SignatureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureId({self})")
    }
}

impl SignatureId {
    /// The 16 lowercase hex digits, without allocating.
    fn hex(&self) -> [u8; 16] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 16];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
        }
        out
    }
}

/// On the wire: 16 lowercase hex digits.
impl Serialize for SignatureId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        // The digits are ASCII, so this never fails.
        s.serialize_str(core::str::from_utf8(&hex).unwrap_or_default())
    }
}

/// Exactly 16 lowercase hex digits: one spelling per id, so ids compare as text too.
impl<'de> Deserialize<'de> for SignatureId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SignatureId::from_hex(&s)
            .filter(|id| id.hex() == s.as_bytes())
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "signature id {s:?} is not 16 lowercase hex digits"
                ))
            })
    }
}

/// A signature: id, template and one example line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `SignatureId::of_template(&template)`.
    pub id: SignatureId,
    /// The masked line.
    pub template: String,
    /// One line that produced it, cut to [`MAX_EXAMPLE_BYTES`].
    pub example: String,
}

impl Signature {
    /// The signature of one log line.
    pub fn of_line(line: &str) -> Signature {
        let template = template(line);
        Signature {
            id: SignatureId::of_template(&template),
            template,
            example: cut(line.trim(), MAX_EXAMPLE_BYTES).to_owned(),
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Characters that may be part of one word, path, address or number.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '\\' | '@' | '~')
}

/// The template of `line`: variable parts masked as the module documentation says.
pub fn template(line: &str) -> String {
    let line = mask_uuids(cut(line, MAX_LINE_BYTES));
    let mut out = String::with_capacity(line.len());
    let mut rest = line.as_str();
    let mut prev: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
            rest = rest.trim_start();
            prev = Some(' ');
            continue;
        }
        let opens_quote = c == '"' || (c == '\'' && !prev.is_some_and(char::is_alphanumeric));
        if opens_quote && let Some(len) = quoted_len(rest, c) {
            out.push(c);
            out.push_str("<STR>");
            out.push(c);
            rest = &rest[len..];
            prev = Some(c);
            continue;
        }
        if is_word_char(c) {
            let mut end = rest
                .find(|ch: char| !is_word_char(ch))
                .unwrap_or(rest.len());
            if rest[..end].contains("://") {
                // A URL runs on through its query and fragment.
                end = rest
                    .find(|ch: char| ch.is_whitespace() || "\"'<>()[]{}".contains(ch))
                    .unwrap_or(rest.len());
            }
            out.push_str(&mask_word(&rest[..end]));
            prev = rest[..end].chars().next_back();
            rest = &rest[end..];
            continue;
        }
        if c == '%' && out.ends_with("<IP>") {
            // An IPv6 zone (`fe80::1%eth0`) belongs to the address.
            let zone = rest[1..]
                .find(|ch: char| !ch.is_alphanumeric())
                .map_or(rest.len(), |i| i + 1);
            rest = &rest[zone..];
            continue;
        }
        out.push(c);
        prev = Some(c);
        rest = &rest[c.len_utf8()..];
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

/// If `s` starts with a quote `q` that closes on this line, the byte length through the
/// closing quote. A backslash escapes the next character.
fn quoted_len(s: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == q {
            return Some(i + c.len_utf8());
        }
    }
    None
}

/// Replaces each UUID (8-4-4-4-12 hex digits, not inside a longer word) with `<UUID>`.
fn mask_uuids(line: &str) -> String {
    const LEN: usize = 36;
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    let mut copied = 0;
    while i + LEN <= b.len() {
        let before_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        let after_ok = b.get(i + LEN).is_none_or(|c| !c.is_ascii_alphanumeric());
        let shape = b[i..i + LEN].iter().enumerate().all(|(k, c)| match k {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
        if before_ok && after_ok && shape {
            out.push_str(&line[copied..i]);
            out.push_str("<UUID>");
            i += LEN;
            copied = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&line[copied..]);
    out
}

/// Masks one word (a run of [`is_word_char`]). Trailing `.` and `:` are punctuation of the
/// sentence, not of the word, and are kept as they are.
fn mask_word(word: &str) -> String {
    let core = word.trim_end_matches(['.', ':']);
    let tail = &word[core.len()..];
    if core.is_empty()
        || !core
            .chars()
            .any(|c| c.is_ascii_digit() || c == '/' || c == '\\')
    {
        return word.to_owned();
    }
    let whole = if core.contains("://") {
        Some("<URL>")
    } else if is_path(core) {
        Some("<PATH>")
    } else if is_timestamp(core) {
        Some("<TS>")
    } else if is_ipv4(core) || is_ipv6(core) {
        Some("<IP>")
    } else if is_prefixed_hex(core) {
        Some("<HEX>")
    } else if is_number(core) {
        Some("<NUM>")
    } else {
        None
    };
    match whole {
        Some(mask) => format!("{mask}{tail}"),
        None => {
            let mut out = String::with_capacity(word.len());
            let mut part_start = 0;
            for (i, c) in core.char_indices() {
                if matches!(c, '.' | '_' | '-' | ':' | '/' | '\\' | '@' | '~') {
                    out.push_str(&mask_part(&core[part_start..i]));
                    out.push(c);
                    part_start = i + c.len_utf8();
                }
            }
            out.push_str(&mask_part(&core[part_start..]));
            out.push_str(tail);
            out
        }
    }
}

/// Masks one part of a word between separators.
fn mask_part(part: &str) -> String {
    if !part.chars().any(|c| c.is_ascii_digit()) {
        return part.to_owned();
    }
    if part.chars().all(|c| c.is_ascii_digit()) {
        return "<NUM>".to_owned();
    }
    if part.len() >= 6 && part.chars().all(|c| c.is_ascii_hexdigit()) {
        return "<HEX>".to_owned();
    }
    // A number with a short unit: 120ms, 64KiB, 3s.
    let digits = part.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    let unit = &part[digits..];
    if digits > 0 && unit.len() <= 3 && unit.chars().all(|c| c.is_ascii_alphabetic()) {
        return format!("<NUM>{unit}");
    }
    "<ID>".to_owned()
}

fn is_path(s: &str) -> bool {
    let absolute = s.len() > 1 && s.starts_with('/') && s[1..].chars().any(char::is_alphanumeric);
    let anchored = ["./", "../", "~/"].iter().any(|p| s.starts_with(p));
    let windows = s.len() > 2 && s.as_bytes()[1] == b':' && s.as_bytes()[2] == b'\\';
    // Relative: a/b where some later segment looks like a file (has a letter and a dot or a
    // digit), so "src/main.rs" is a path and "read/write" or "HTTP/1.1" are not.
    let relative = s.contains('/')
        && s.split('/').skip(1).any(|seg| {
            seg.chars().any(char::is_alphabetic)
                && seg.chars().any(|c| c == '.' || c.is_ascii_digit())
        });
    absolute || anchored || windows || relative || s.contains('\\')
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DD` optionally followed by a time, or a time of day `H:MM[:SS[.frac]]`.
fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    let date = b.len() >= 10
        && all_digits(&s[..4])
        && b[4] == b'-'
        && all_digits(&s[5..7])
        && b[7] == b'-'
        && all_digits(&s[8..10]);
    if date {
        return true;
    }
    let mut parts = s.split(':');
    let hour = parts.next().unwrap_or("");
    let rest: Vec<&str> = parts.collect();
    !rest.is_empty()
        && rest.len() <= 2
        && all_digits(hour)
        && hour.len() <= 2
        && rest.iter().enumerate().all(|(i, p)| {
            let p = if i == rest.len() - 1 {
                p.split(['.', ',']).next().unwrap_or("")
            } else {
                p
            };
            p.len() == 2 && all_digits(p)
        })
}

fn is_ipv4(s: &str) -> bool {
    let addr = s.split([':', '/']).next().unwrap_or("");
    let suffix_ok = s[addr.len()..].get(1..).is_none_or(all_digits);
    let octets: Vec<&str> = addr.split('.').collect();
    suffix_ok
        && octets.len() == 4
        && octets
            .iter()
            .all(|o| all_digits(o) && o.len() <= 3 && o.parse::<u16>().is_ok_and(|v| v <= 255))
}

fn is_ipv6(s: &str) -> bool {
    let addr = s.split('%').next().unwrap_or("");
    let colons = addr.matches(':').count();
    (addr.contains("::") || colons == 7)
        && addr
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        && addr.chars().any(|c| c.is_ascii_hexdigit())
}

fn is_prefixed_hex(s: &str) -> bool {
    let body = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"));
    body.is_some_and(|b| !b.is_empty() && b.chars().all(|c| c.is_ascii_hexdigit()))
}

/// An optionally negative number, with dots allowed between digit runs (`3.5`, `1.2.3`).
fn is_number(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    !s.is_empty() && s.split('.').all(all_digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString as _;
    use expect_test::expect;

    /// One line per masking rule, and lines that must keep their words.
    #[test]
    fn templates() {
        let lines = [
            "connection to 10.0.3.7:8883 refused after 3 retries",
            "connect to [fe80::1%eth0]:8883 failed",
            "2027-03-01T12:00:00.123Z ERROR worker-3 panicked at 'index out of bounds', src/queue.rs:88:14",
            "job 550e8400-e29b-41d4-a716-446655440000 failed: timeout after 120ms",
            "segfault at 0x7ffd3a2c ip 00007f3a2b1c sp 00007ffd3a2c error 4 in libc.so.6",
            "open(\"/var/lib/swell/slots/b.img\") failed: No such file or directory",
            "GET https://cdn.example.com/a/b?c=1 returned 503",
            "disk /dev/sda1 usage 93.5% above threshold 90%",
            "user 'alice' can't write /home/alice/.cache/x",
            "pod-7f9c5d-xk2lp restarted (exit code -11) at 12:00:01",
            "HTTP/1.1 upstream said \"bad \\\"gateway\\\"\" for request #4411",
            "eth0: link is down",
            "   lots    of     space   ",
            "deadbeef42 checksum mismatch in C:\\data\\app.db, v1.2.3 expected",
        ];
        let out: Vec<String> = lines.iter().map(|l| template(l)).collect();
        expect![[r#"
            [
                "connection to <IP> refused after <NUM> retries",
                "connect to [<IP>]:<NUM> failed",
                "<TS> ERROR worker-<NUM> panicked at '<STR>', <PATH>",
                "job <UUID> failed: timeout after <NUM>ms",
                "segfault at <HEX> ip <HEX> sp <HEX> error <NUM> in libc.so.<NUM>",
                "open(\"<STR>\") failed: No such file or directory",
                "GET <URL> returned <NUM>",
                "disk <PATH> usage <NUM>% above threshold <NUM>%",
                "user '<STR>' can't write <PATH>",
                "pod-<HEX>-<ID> restarted (exit code <NUM>) at <TS>",
                "HTTP/<NUM>.<NUM> upstream said \"<STR>\" for request #<NUM>",
                "<ID>: link is down",
                "lots of space",
                "<HEX> checksum mismatch in <PATH>, <ID>.<NUM>.<NUM> expected",
            ]
        "#]]
        .assert_debug_eq(&out);
    }

    /// Lines that differ only in their variable parts share an id; a different message
    /// does not.
    #[test]
    fn same_error_same_id() {
        let a = Signature::of_line("worker-3 failed to read /var/x/1.db after 120ms (errno 5)");
        let b = Signature::of_line("worker-12 failed to read /var/y/22.db after 9ms (errno 5)");
        let c = Signature::of_line("worker-3 failed to write /var/x/1.db after 120ms (errno 5)");
        assert_eq!(a.id, b.id);
        assert_eq!(a.template, b.template);
        assert_ne!(a.id, c.id);
        assert_eq!(
            a.example,
            "worker-3 failed to read /var/x/1.db after 120ms (errno 5)"
        );
    }

    /// The id is the first 8 bytes of SHA-256 of the template: sha256("") starts e3b0c442…
    #[test]
    fn id_is_truncated_sha256() {
        assert_eq!(SignatureId::of_template("").to_string(), "e3b0c44298fc1c14");
        let id = SignatureId::of_template("x <NUM>");
        assert_eq!(SignatureId::from_hex(&id.to_string()), Some(id));
        assert_eq!(SignatureId::from_hex("e3b0"), None);
        assert_eq!(SignatureId::from_hex("zzb0c44298fc1c14"), None);
    }

    /// On the wire an id is its 16 lowercase hex digits, and no other spelling parses.
    #[test]
    fn ids_serialize_as_lowercase_hex() {
        let id = SignatureId::of_template("");
        let text = serde_json::to_string(&id).unwrap();
        assert_eq!(text, "\"e3b0c44298fc1c14\"");
        assert_eq!(serde_json::from_str::<SignatureId>(&text).unwrap(), id);
        for bad in [
            "\"E3B0C44298FC1C14\"",
            "\"e3b0\"",
            "\"e3b0c44298fc1c14aa\"",
            "7",
        ] {
            assert!(serde_json::from_str::<SignatureId>(bad).is_err(), "{bad}");
        }
    }

    /// Long lines are cut on a character boundary, for the template and the example.
    #[test]
    fn long_lines_are_cut() {
        let line = "é".repeat(5000);
        let s = Signature::of_line(&line);
        assert!(s.example.len() <= MAX_EXAMPLE_BYTES);
        assert!(s.template.len() <= MAX_LINE_BYTES);
        assert!(s.example.chars().all(|c| c == 'é'));
    }
}
