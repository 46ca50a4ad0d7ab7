//! The phone-like number that names a user; it cannot hold anything else.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A phone-like number: an optional leading `+` and 3 to 15 ASCII digits (E.164 allows 15).
///
/// Held inline, not on the heap: a directory decodes, compares and copies numbers on every
/// request, and sixteen bytes hold them all. It compares, orders, hashes, prints and encodes as
/// its text.
#[derive(Clone)]
pub struct Number {
    len: u8,
    text: [u8; Number::MAX_LEN],
}

/// Why a string is not a [`Number`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Fewer than [`Number::MIN_DIGITS`] or more than [`Number::MAX_DIGITS`] digits.
    #[error("a number has {min} to {max} digits, got {got}", min = Number::MIN_DIGITS, max = Number::MAX_DIGITS)]
    Length {
        /// How many characters were given.
        got: usize,
    },
    /// A character other than a digit (or a leading `+`).
    #[error("a number holds only digits, with an optional leading '+'")]
    NotDigits,
}

impl Number {
    /// Fewest digits a number may have.
    pub const MIN_DIGITS: usize = 3;
    /// Most digits a number may have.
    pub const MAX_DIGITS: usize = 15;
    /// Its longest text: the digits and a `+`.
    const MAX_LEN: usize = Self::MAX_DIGITS + 1;

    /// Checks `s` (surrounding whitespace ignored) and wraps it.
    pub fn new(s: &str) -> Result<Self, NumberError> {
        Self::exact(s.trim().as_bytes())
    }

    /// Checks `s`, all of it, and wraps it.
    fn exact(s: &[u8]) -> Result<Self, NumberError> {
        let digits = s.strip_prefix(b"+").unwrap_or(s);
        if !(Self::MIN_DIGITS..=Self::MAX_DIGITS).contains(&digits.len()) {
            return Err(NumberError::Length { got: digits.len() });
        }
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(NumberError::NotDigits);
        }
        let mut text = [0u8; Self::MAX_LEN];
        text[..s.len()].copy_from_slice(s);
        Ok(Self { len: s.len() as u8, text })
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and '+' are ever stored (see `new`).
        std::str::from_utf8(self.bytes()).unwrap_or_default()
    }

    /// The text's bytes: what comparing and hashing look at (as they would at the text's, without
    /// checking again that it is text).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes()
    }

    fn bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len)]
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        // Bytes order as the text does.
        self.bytes().cmp(other.bytes())
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Number").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ser_text(self.as_bytes(), s)
    }
}

impl FromStr for Number {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A number as a request carries it: any text, checked only when the server turns it into a
/// [`Number`]. Kept apart from [`Number`] so that a request naming a bad number still decodes and
/// gets an error of its own, instead of being malformed (which drops the session).
///
/// Text that is a number in its one wire form is held as a [`Number`], checked once and off the
/// heap: what nearly every request carries.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WireNumber(Wire);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Wire {
    Number(Number),
    /// Anything else, exactly as received.
    Other(Box<str>),
}

impl WireNumber {
    /// Any text, unchecked (what a client with a bug, or a newer client, might send).
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        Self::read(text.as_bytes()).unwrap_or_else(|| Self(Wire::Other(text.into_boxed_str())))
    }

    /// The text as a number in its wire form, if it is one.
    fn read(text: &[u8]) -> Option<Self> {
        Number::exact(text).ok().map(|n| Self(Wire::Number(n)))
    }

    /// The text as received.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Wire::Number(n) => n.as_str(),
            Wire::Other(text) => text,
        }
    }

    /// At most `max` characters of the text, for an error message that names it.
    pub fn excerpt(&self, max: usize) -> String {
        let text = self.as_str();
        let mut s: String = text.chars().take(max).collect();
        if s.len() < text.len() {
            s.push('…');
        }
        s
    }
}

impl fmt::Debug for WireNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WireNumber").field(&self.as_str()).finish()
    }
}

impl From<Number> for WireNumber {
    fn from(n: Number) -> Self {
        Self(Wire::Number(n))
    }
}

impl From<&Number> for WireNumber {
    fn from(n: &Number) -> Self {
        Self(Wire::Number(n.clone()))
    }
}

impl TryFrom<&WireNumber> for Number {
    type Error = NumberError;

    /// Exact: unlike [`Number::new`], which reads what a person typed, spaces around the digits
    /// are refused, so a number has one form on the wire.
    fn try_from(w: &WireNumber) -> Result<Self, NumberError> {
        match &w.0 {
            Wire::Number(n) => Ok(n.clone()),
            // Not a number: which rule it breaks, for the error. Spaces around digits are refused
            // as characters that are not digits.
            Wire::Other(text) => match Number::new(text) {
                Ok(_) => Err(NumberError::NotDigits),
                Err(e) => Err(e),
            },
        }
    }
}

impl Serialize for WireNumber {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Wire::Number(n) => n.serialize(s),
            Wire::Other(text) => s.serialize_str(text),
        }
    }
}

/// Writes `text` (ASCII) as text: as bytes to a binary format, which writes both alike (see
/// [`de_text`]), so the ASCII is not checked again on its way out.
fn ser_text<S: Serializer>(text: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(std::str::from_utf8(text).map_err(serde::ser::Error::custom)?)
    } else {
        s.serialize_bytes(text)
    }
}

impl<'de> Deserialize<'de> for WireNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the text where it lies: a number needs no copy on the heap.
        struct Text;

        impl serde::de::Visitor<'_> for Text {
            type Value = WireNumber;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<WireNumber, E> {
                Ok(WireNumber::read(s.as_bytes()).unwrap_or_else(|| WireNumber(Wire::Other(s.into()))))
            }

            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<WireNumber, E> {
                match WireNumber::read(b) {
                    Some(n) => Ok(n),
                    None => self.visit_str(text(b)?),
                }
            }
        }

        de_text(d, Text)
    }
}

/// Asks `d` for text. A binary format is asked for bytes, which it writes as it writes text
/// (postcard: a varint length, then the bytes): a number, plain ASCII, is then read without a pass
/// to check that it is UTF-8, and anything else is checked by [`text`].
fn de_text<'de, D: Deserializer<'de>, V: serde::de::Visitor<'de>>(d: D, v: V) -> Result<V::Value, D::Error> {
    if d.is_human_readable() {
        d.deserialize_str(v)
    } else {
        d.deserialize_bytes(v)
    }
}

/// Bytes that must be text.
fn text<E: serde::de::Error>(b: &[u8]) -> Result<&str, E> {
    std::str::from_utf8(b).map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(b), &"text"))
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Reads the text where it lies (borrowed or not): no copy of it on the heap.
        struct Text;

        impl serde::de::Visitor<'_> for Text {
            type Value = Number;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a phone-like number")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Number, E> {
                Number::new(s).map_err(E::custom)
            }

            fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Number, E> {
                match Number::exact(b) {
                    Ok(n) => Ok(n),
                    // What `new` forgives (spaces around it) decodes, as it always has; the
                    // canonical check refuses it on the wire.
                    Err(_) => self.visit_str(text(b)?),
                }
            }
        }

        de_text(d, Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_phone_like_input_then_accepted() {
        for ok in ["123", "+5511987654321", " 456 ", "123456789012345"] {
            assert!(Number::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(Number::new(" 456 ").map(|n| n.to_string()), Ok("456".to_owned()));
    }

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    #[test]
    fn given_numbers_then_they_compare_order_print_and_encode_as_their_text() {
        let texts = ["999", "1000", "+5511987654321", "123456789012345", "+123456789012345"];
        let mut numbers: Vec<Number> = texts.iter().map(|t| n(t)).collect();
        numbers.sort();
        let mut sorted = texts.to_vec();
        sorted.sort();
        assert_eq!(numbers.iter().map(Number::as_str).collect::<Vec<_>>(), sorted);
        for t in texts {
            let number = n(t);
            assert_eq!(format!("{number:?}"), format!("Number({t:?})"));
            assert_eq!(number.to_string(), t);
            assert_eq!(crate::encode(&number).expect("encodes"), crate::encode(&t).expect("encodes"));
            assert_eq!(serde_json::to_string(&number).expect("json"), format!("{t:?}"));
            assert_eq!(serde_json::from_str::<Number>(&format!("{t:?}")).expect("json"), number);
            assert_eq!(number, n(&format!(" {t} ")));
        }
        assert_ne!(n("123"), n("1234"));
    }

    #[test]
    fn given_anything_else_then_refused() {
        for bad in ["", "12", "abc", "12a4", "+", "++123", "1234567890123456", "12 34", "../1"] {
            assert!(Number::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn given_wire_text_then_only_an_exact_number_converts() {
        assert_eq!(Number::try_from(&WireNumber::new("+123")), Number::new("+123"));
        assert_eq!(Number::try_from(&WireNumber::new(" 123")), Err(NumberError::NotDigits));
        assert_eq!(Number::try_from(&WireNumber::new("12x")), Err(NumberError::NotDigits));
        assert_eq!(Number::try_from(&WireNumber::new("12")), Err(NumberError::Length { got: 2 }));
        assert_eq!(WireNumber::from(Number::new("456").expect("n")).as_str(), "456");
        assert_eq!(WireNumber::new("1234567890").excerpt(4), "1234…");
        assert_eq!(WireNumber::new("1234").excerpt(4), "1234");
    }

    #[test]
    fn given_any_text_on_the_wire_then_it_decodes_as_sent() {
        for text in ["5550001", "+5550001", " 123", "12x", "", "1234567890123456", "é"] {
            let bytes = postcard::to_allocvec(text).expect("encode");
            let wire: WireNumber = postcard::from_bytes(&bytes).expect(text);
            assert_eq!(wire.as_str(), text);
            assert_eq!(wire, WireNumber::new(text));
            assert_eq!(postcard::to_allocvec(&wire).expect("encode"), bytes);
            assert_eq!(Number::try_from(&wire).ok(), Number::new(text).ok().filter(|n| n.as_str() == text));
        }
    }

    #[test]
    fn given_invalid_number_on_the_wire_then_decoding_fails() {
        let bytes = postcard::to_allocvec("12x").expect("encode");
        assert!(postcard::from_bytes::<Number>(&bytes).is_err());
    }
}
