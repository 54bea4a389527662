//! Bytes in the handover's JSON (`corral upgrade`) as one hex string, not
//! an array of numbers: a third of the size, and readable. For
//! `#[serde(with = "hex_bytes")]` on a `Vec<u8>` field.

use serde::{de::Error, Deserialize, Deserializer, Serializer};

/// Writes `bytes` as lowercase hex.
pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let text: String = bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect();
    serializer.serialize_str(&text)
}

/// Reads bytes written by [`serialize`]; anything but pairs of hex
/// digits is an error.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    decode(&String::deserialize(deserializer)?).map_err(D::Error::custom)
}

/// The bytes of a hex string.
fn decode(text: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("{:?} is not a hex digit", char::from(c)))
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [high, low] => Ok(digit(*high)? << 4 | digit(*low)?),
            _ => Err("an odd number of hex digits".to_string()),
        })
        .collect()
}

/// The same for an `Option<Vec<u8>>` field: `None` is `null`.
pub mod optional {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// Writes `bytes` as lowercase hex, or `null`.
    pub fn serialize<S: Serializer>(
        bytes: &Option<Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => super::serialize(bytes, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Reads what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|text| super::decode(&text).map_err(D::Error::custom))
            .transpose()
    }
}
