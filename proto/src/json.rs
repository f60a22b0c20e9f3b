//! Strict JSON parsing and RFC 8785 (JCS) canonical serialization.
//!
//! Signed documents are verified over the canonical form of their `signed` value, so the
//! parser must never accept two texts that mean different things to different readers.
//! It therefore refuses what RFC 8259 leaves open and what I-JSON (RFC 7493) forbids:
//! duplicate object keys, numbers that are not integers, integers outside the range a
//! double represents exactly (±(2^53 − 1)), lone surrogates, and nesting deeper than
//! [`MAX_DEPTH`]. Everything else is plain RFC 8259.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Largest integer magnitude accepted: RFC 8785 serializes numbers as IEEE 754 doubles, and
/// beyond 2^53 − 1 two different integers would share one canonical form.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Deepest nesting of arrays and objects accepted. Swell's documents nest at most five
/// levels; the bound keeps the recursive parser's stack use small and fixed.
pub const MAX_DEPTH: usize = 32;

/// A JSON value restricted to what Swell's signed formats allow (integers only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` or `false`
    Bool(bool),
    /// An integer within ±[`MAX_SAFE_INTEGER`].
    Int(i64),
    /// A string (any Unicode scalar values).
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object; keys are unique.
    Object(BTreeMap<String, Value>),
}

/// Why a text is not strict JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// What is wrong.
    pub kind: JsonErrorKind,
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
}

/// The kinds of [`JsonError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonErrorKind {
    /// The text ended inside a value.
    UnexpectedEnd,
    /// A byte that cannot start or continue the value here.
    UnexpectedByte(u8),
    /// An object repeats a key.
    DuplicateKey(String),
    /// A number with a fraction or an exponent.
    NonInteger,
    /// An integer outside ±(2^53 − 1), or with a leading zero or a minus zero.
    BadInteger,
    /// A backslash escape that JSON does not define, or a lone surrogate.
    BadEscape,
    /// A raw control character inside a string.
    ControlCharacter,
    /// The text is not UTF-8.
    InvalidUtf8,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Something other than white space follows the value.
    TrailingData,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            JsonErrorKind::UnexpectedEnd => write!(f, "unexpected end of JSON")?,
            JsonErrorKind::UnexpectedByte(b) if b.is_ascii_graphic() => {
                write!(f, "unexpected character '{}'", char::from(*b))?;
            }
            JsonErrorKind::UnexpectedByte(b) => write!(f, "unexpected byte 0x{b:02x}")?,
            JsonErrorKind::DuplicateKey(k) => write!(f, "duplicate key \"{k}\"")?,
            JsonErrorKind::NonInteger => write!(f, "number is not an integer")?,
            JsonErrorKind::BadInteger => {
                write!(f, "integer has a leading zero, is -0, or exceeds ±(2^53-1)")?;
            }
            JsonErrorKind::BadEscape => write!(f, "invalid escape or lone surrogate")?,
            JsonErrorKind::ControlCharacter => write!(f, "unescaped control character")?,
            JsonErrorKind::InvalidUtf8 => write!(f, "invalid UTF-8")?,
            JsonErrorKind::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels")?,
            JsonErrorKind::TrailingData => write!(f, "data after the JSON value")?,
        }
        write!(f, " at byte {}", self.offset)
    }
}

impl core::error::Error for JsonError {}

/// Parses `input` as one strict JSON value (see the module documentation).
pub fn parse(input: &[u8]) -> Result<Value, JsonError> {
    let mut p = Parser { input, pos: 0 };
    p.skip_ws();
    let value = p.value(0)?;
    p.skip_ws();
    if p.pos != input.len() {
        return Err(p.err(JsonErrorKind::TrailingData));
    }
    Ok(value)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, kind: JsonErrorKind) -> JsonError {
        JsonError {
            kind,
            offset: self.pos,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, JsonError> {
        let b = self
            .peek()
            .ok_or_else(|| self.err(JsonErrorKind::UnexpectedEnd))?;
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), JsonError> {
        match self.peek() {
            Some(b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(self.err(JsonErrorKind::UnexpectedByte(b))),
            None => Err(self.err(JsonErrorKind::UnexpectedEnd)),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Result<Value, JsonError> {
        for &want in word {
            self.expect(want)?;
        }
        Ok(value)
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        match self.peek() {
            None => Err(self.err(JsonErrorKind::UnexpectedEnd)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.integer().map(Value::Int),
            Some(b'[') => self.array(depth + 1),
            Some(b'{') => self.object(depth + 1),
            Some(b) => Err(self.err(JsonErrorKind::UnexpectedByte(b))),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err(JsonErrorKind::TooDeep));
        }
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b']' => return Ok(Value::Array(items)),
                b => {
                    self.pos -= 1;
                    return Err(self.err(JsonErrorKind::UnexpectedByte(b)));
                }
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err(JsonErrorKind::TooDeep));
        }
        self.expect(b'{')?;
        let mut map = BTreeMap::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            let key_at = self.pos;
            if self.peek() != Some(b'"') {
                return Err(match self.peek() {
                    Some(b) => self.err(JsonErrorKind::UnexpectedByte(b)),
                    None => self.err(JsonErrorKind::UnexpectedEnd),
                });
            }
            let key = self.string()?;
            self.skip_ws();
            self.expect(b':')?;
            self.skip_ws();
            let value = self.value(depth)?;
            if map.contains_key(&key) {
                return Err(JsonError {
                    kind: JsonErrorKind::DuplicateKey(key),
                    offset: key_at,
                });
            }
            map.insert(key, value);
            self.skip_ws();
            match self.next()? {
                b',' => {}
                b'}' => return Ok(Value::Object(map)),
                b => {
                    self.pos -= 1;
                    return Err(self.err(JsonErrorKind::UnexpectedByte(b)));
                }
            }
        }
    }

    fn integer(&mut self) -> Result<i64, JsonError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_at = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        let digits = &self.input[digits_at..self.pos];
        if digits.is_empty() {
            return Err(match self.peek() {
                Some(b) => self.err(JsonErrorKind::UnexpectedByte(b)),
                None => self.err(JsonErrorKind::UnexpectedEnd),
            });
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return Err(JsonError {
                kind: JsonErrorKind::NonInteger,
                offset: start,
            });
        }
        let bad = JsonError {
            kind: JsonErrorKind::BadInteger,
            offset: start,
        };
        if (digits.len() > 1 && digits[0] == b'0') || (negative && digits == b"0") {
            return Err(bad);
        }
        // 16 digits already exceed 2^53 - 1 (a 16-digit number), so stop before overflow.
        if digits.len() > 16 {
            return Err(bad);
        }
        let magnitude = digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        if magnitude > MAX_SAFE_INTEGER {
            return Err(bad);
        }
        Ok(if negative { -magnitude } else { magnitude })
    }

    fn hex4(&mut self) -> Result<u16, JsonError> {
        let mut v = 0u16;
        for _ in 0..4 {
            let b = self.next()?;
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => {
                    self.pos -= 1;
                    return Err(self.err(JsonErrorKind::BadEscape));
                }
            };
            v = (v << 4) | u16::from(d);
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            let run = &self.input[run_start..self.pos];
            match core::str::from_utf8(run) {
                Ok(s) => out.push_str(s),
                Err(e) => {
                    return Err(JsonError {
                        kind: JsonErrorKind::InvalidUtf8,
                        offset: run_start + e.valid_up_to(),
                    });
                }
            }
            let escape_at = self.pos;
            match self.next()? {
                b'"' => return Ok(out),
                b'\\' => {}
                _ => {
                    self.pos -= 1;
                    return Err(self.err(JsonErrorKind::ControlCharacter));
                }
            }
            let c = match self.next()? {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode_escape(escape_at)?,
                _ => {
                    return Err(JsonError {
                        kind: JsonErrorKind::BadEscape,
                        offset: escape_at,
                    });
                }
            };
            out.push(c);
        }
    }

    fn unicode_escape(&mut self, escape_at: usize) -> Result<char, JsonError> {
        let bad = JsonError {
            kind: JsonErrorKind::BadEscape,
            offset: escape_at,
        };
        let high = self.hex4()?;
        let code = match high {
            0xD800..=0xDBFF => {
                if self.next()? != b'\\' || self.next()? != b'u' {
                    return Err(bad);
                }
                let low = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&low) {
                    return Err(bad);
                }
                0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(low) - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(bad),
            _ => u32::from(high),
        };
        char::from_u32(code).ok_or(bad)
    }
}

impl Value {
    /// The RFC 8785 canonical form: no white space, object members sorted by the UTF-16 code
    /// units of their keys, strings with the minimal escapes, integers in plain decimal.
    pub fn to_canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(n) => {
                let mut buf = itoa_buf(*n);
                out.append(&mut buf);
            }
            Value::String(s) => write_string(s, out),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                // BTreeMap orders keys by UTF-8 bytes; RFC 8785 orders them by UTF-16 code
                // units. The two differ only for keys with characters above U+FFFF.
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                out.push(b'{');
                for (i, (key, value)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(key, out);
                    out.push(b':');
                    value.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The member `key` of an object, if this is an object that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(map) => map.get(key),
            _ => None,
        }
    }
}

fn itoa_buf(n: i64) -> Vec<u8> {
    let mut digits = Vec::with_capacity(20);
    let mut m = n.unsigned_abs();
    loop {
        // `m % 10` is a single decimal digit, so the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        digits.push(b'0' + (m % 10) as u8);
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        digits.push(b'-');
    }
    digits.reverse();
    digits
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if u32::from(c) < 0x20 => {
                let b = u32::from(c);
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 0xf) as usize]);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn canon(text: &str) -> String {
        String::from_utf8(parse(text.as_bytes()).unwrap().to_canonical()).unwrap()
    }

    fn kind(text: &str) -> JsonErrorKind {
        parse(text.as_bytes()).unwrap_err().kind
    }

    #[test]
    fn sorts_keys_and_drops_white_space() {
        assert_eq!(
            canon(" { \"b\" : [ 1 , 2 ] ,\n\"a\":null }"),
            r#"{"a":null,"b":[1,2]}"#
        );
    }

    /// RFC 8785 §3.2.3: keys sort by UTF-16 code units, so U+1F600 (a surrogate pair
    /// starting 0xD83D) sorts before U+FB33 although its UTF-8 form sorts after.
    #[test]
    fn sorts_keys_by_utf16_code_units() {
        assert_eq!(
            canon("{\"\u{fb33}\":1,\"\u{1f600}\":2}"),
            "{\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
        assert_eq!(
            canon(r#"{"\u20ac":1,"\r":2,"1":3,"\u00f6":4}"#),
            "{\"\\r\":2,\"1\":3,\"\u{f6}\":4,\"\u{20ac}\":1}"
        );
    }

    #[test]
    fn escapes_minimally() {
        assert_eq!(
            canon(r#""\u0041\/\u001f\u007f\u2028\t""#),
            "\"A/\\u001f\u{7f}\u{2028}\\t\""
        );
        assert_eq!(canon(r#""\ud83d\ude00""#), "\"\u{1f600}\"");
    }

    #[test]
    fn integers_are_plain_decimal() {
        assert_eq!(
            canon("[0,-1,9007199254740991,-9007199254740991]"),
            "[0,-1,9007199254740991,-9007199254740991]"
        );
    }

    #[test]
    fn refuses_what_is_ambiguous() {
        assert_eq!(
            kind(r#"{"a":1,"a":1}"#),
            JsonErrorKind::DuplicateKey("a".to_string())
        );
        assert_eq!(kind(r#"{"a":1.0}"#), JsonErrorKind::NonInteger);
        assert_eq!(kind("1e3"), JsonErrorKind::NonInteger);
        assert_eq!(kind("9007199254740992"), JsonErrorKind::BadInteger);
        assert_eq!(kind("012"), JsonErrorKind::BadInteger);
        assert_eq!(kind("-0"), JsonErrorKind::BadInteger);
        assert_eq!(kind(r#""\ud800""#), JsonErrorKind::BadEscape);
        assert_eq!(kind(r#""\udc00""#), JsonErrorKind::BadEscape);
        assert_eq!(kind(r#""\x""#), JsonErrorKind::BadEscape);
        assert_eq!(kind("\"a\nb\""), JsonErrorKind::ControlCharacter);
        assert_eq!(kind("[1] x"), JsonErrorKind::TrailingData);
        assert_eq!(kind("[1,]"), JsonErrorKind::UnexpectedByte(b']'));
        assert_eq!(kind("{\"a\" 1}"), JsonErrorKind::UnexpectedByte(b'1'));
        assert_eq!(kind("[1"), JsonErrorKind::UnexpectedEnd);
        assert_eq!(kind("\u{feff}{}"), JsonErrorKind::UnexpectedByte(0xef));
        assert_eq!(
            parse(b"\"\xff\"").unwrap_err(),
            JsonError {
                kind: JsonErrorKind::InvalidUtf8,
                offset: 1
            }
        );
    }

    #[test]
    fn bounds_nesting() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(kind(&deep), JsonErrorKind::TooDeep);
    }

    #[test]
    fn error_names_the_offset() {
        let e = parse(br#"{"a":1,"a":2}"#).unwrap_err();
        assert_eq!(e.to_string(), "duplicate key \"a\" at byte 7");
    }
}
