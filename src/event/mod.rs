//! The wire format: decode and validate one Kafka message into a borrowed [`Event`], or say
//! why it is a dead letter. Pure: no I/O, no allocation for a well-formed event whose strings
//! carry no escapes. Most events take [`fastpath`]; this module's general decoder decides
//! the rest and explains every rejection.
//!
//! ```text
//! {"id": "<uuid, optional>", "service": "<1..128 chars>", "event_type": "<1..128 chars>" ("type" is an alias),
//!  "timestamp": "<RFC 3339, optional>", "payload": <any JSON, optional, default {}>, ...unknown fields → extra}
//! ```

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use chrono::DateTime;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

pub mod fastpath;

/// Longest `service` / `event_type`, in characters.
pub const MAX_NAME_CHARS: usize = 128;
/// Deepest nesting of arrays and objects accepted in a payload (serde_json's own limit for the
/// fields it decodes; it does not apply to the payload, which is passed through undecoded).
pub const MAX_DEPTH: usize = 128;
/// Accepted event times, in microseconds since the Unix epoch: 1900-01-01T00:00:00Z ..
/// 9999-12-31T23:59:59.999999Z. Wider than any business event, narrower than PostgreSQL's range.
pub const MIN_TIMESTAMP_MICROS: i64 = -2_208_988_800_000_000;
pub const MAX_TIMESTAMP_MICROS: i64 = 253_402_300_799_999_999;

/// A valid event, borrowing from the message it came from.
#[derive(Debug, PartialEq)]
pub struct Event<'a> {
    pub id: Option<Uuid>,
    pub service: Cow<'a, str>,
    pub event_type: Cow<'a, str>,
    /// Microseconds since the Unix epoch, when the message carried a timestamp.
    pub timestamp_micros: Option<i64>,
    /// The payload's JSON text exactly as sent; `None` means `{}`.
    pub payload: Option<&'a str>,
    /// Unknown top-level fields and their JSON text as it came; stored in the `extra` jsonb column.
    pub extra: Vec<(Cow<'a, str>, &'a str)>,
}

/// Why a message is a dead letter. [`Reject::label`] is the bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    Tombstone,
    Empty,
    Oversized,
    NotUtf8,
    ByteOrderMark,
    InvalidJson,
    NotObject,
    MissingField,
    EmptyField,
    FieldTooLong,
    WrongType,
    DuplicateKey,
    InvalidId,
    InvalidTimestamp,
    TimestampOutOfRange,
    NulCharacter,
    LoneSurrogate,
    NumberOutOfRange,
    TooDeep,
    /// Passed validation, but PostgreSQL refused the row (found by bisecting a failed COPY).
    PostgresRejected,
}

impl Reject {
    pub const ALL: [Reject; 20] = [
        Reject::Tombstone,
        Reject::Empty,
        Reject::Oversized,
        Reject::NotUtf8,
        Reject::ByteOrderMark,
        Reject::InvalidJson,
        Reject::NotObject,
        Reject::MissingField,
        Reject::EmptyField,
        Reject::FieldTooLong,
        Reject::WrongType,
        Reject::DuplicateKey,
        Reject::InvalidId,
        Reject::InvalidTimestamp,
        Reject::TimestampOutOfRange,
        Reject::NulCharacter,
        Reject::LoneSurrogate,
        Reject::NumberOutOfRange,
        Reject::TooDeep,
        Reject::PostgresRejected,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::Tombstone => "tombstone",
            Reject::Empty => "empty",
            Reject::Oversized => "oversized",
            Reject::NotUtf8 => "not_utf8",
            Reject::ByteOrderMark => "byte_order_mark",
            Reject::InvalidJson => "invalid_json",
            Reject::NotObject => "not_object",
            Reject::MissingField => "missing_field",
            Reject::EmptyField => "empty_field",
            Reject::FieldTooLong => "field_too_long",
            Reject::WrongType => "wrong_type",
            Reject::DuplicateKey => "duplicate_key",
            Reject::InvalidId => "invalid_id",
            Reject::InvalidTimestamp => "invalid_timestamp",
            Reject::TimestampOutOfRange => "timestamp_out_of_range",
            Reject::NulCharacter => "nul_character",
            Reject::LoneSurrogate => "lone_surrogate",
            Reject::NumberOutOfRange => "number_out_of_range",
            Reject::TooDeep => "too_deep",
            Reject::PostgresRejected => "postgres_rejected",
        }
    }
}

/// A rejected message: the kind, and a sentence for the dead-letter row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: Reject,
    pub detail: String,
}

impl Invalid {
    fn new(reason: Reject, detail: impl Into<String>) -> Self {
        Invalid { reason, detail: detail.into() }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.label(), self.detail)
    }
}

/// Namespace of the ids aurore derives for events that carry none (UUID v5).
pub(crate) const DERIVED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a0d_4f2e_8c1b_5e7a_9d34_2b6f_a1c0_e583);

/// The id of an event that carries none: a UUID v5 of "topic/partition/offset", so that a
/// replay of the same message maps to the same id.
pub fn derived_id(topic: &str, partition: i32, offset: i64) -> Uuid {
    let mut name = [0u8; 320];
    let len = derived_id_name(topic, partition, offset, &mut name).expect("Kafka topic names are at most 249 bytes");
    Uuid::new_v5(&DERIVED_ID_NAMESPACE, &name[..len])
}

/// Writes the name a derived id hashes, "topic/partition/offset", at the start of `out`:
/// its length, or `None` if it does not fit.
pub(crate) fn derived_id_name(topic: &str, partition: i32, offset: i64, out: &mut [u8]) -> Option<usize> {
    let (mut p, mut o) = (itoa::Buffer::new(), itoa::Buffer::new());
    let parts = [topic.as_bytes(), b"/", p.format(partition).as_bytes(), b"/", o.format(offset).as_bytes()];
    let len = parts.iter().map(|part| part.len()).sum();
    let mut out = out.get_mut(..len)?;
    for part in parts {
        let (head, rest) = out.split_at_mut(part.len());
        head.copy_from_slice(part);
        out = rest;
    }
    Some(len)
}

/// Decodes and validates one message value. `None` is a tombstone.
pub fn decode(value: Option<&[u8]>, max_bytes: usize) -> Result<Event<'_>, Invalid> {
    let bytes = value.ok_or_else(|| Invalid::new(Reject::Tombstone, "message has no value (tombstone)"))?;
    if bytes.is_empty() {
        return Err(Invalid::new(Reject::Empty, "message value is empty"));
    }
    if bytes.len() > max_bytes {
        return Err(Invalid::new(
            Reject::Oversized,
            format!("message is {} bytes, over the limit of {max_bytes} bytes", bytes.len()),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Invalid::new(Reject::NotUtf8, format!("message is not UTF-8: invalid byte at position {}", e.valid_up_to()))
    })?;
    if let Some(event) = fastpath::decode(text) {
        return Ok(event);
    }
    decode_general(text)
}

/// Decodes and validates a UTF-8 message without the fast path: every case, every reason.
pub fn decode_general(text: &str) -> Result<Event<'_>, Invalid> {
    if text.starts_with('\u{feff}') {
        return Err(Invalid::new(Reject::ByteOrderMark, "message starts with a byte order mark (U+FEFF)"));
    }
    let first = text.trim_start_matches([' ', '\t', '\n', '\r']).as_bytes().first().copied();
    if first.is_some_and(|b| b != b'{') && serde_json::from_str::<de::IgnoredAny>(text).is_ok() {
        return Err(Invalid::new(Reject::NotObject, "top-level JSON value is not an object"));
    }
    let kind = Cell::new(Reject::InvalidJson);
    let mut de = serde_json::Deserializer::from_str(text);
    let event = de
        .deserialize_map(EventVisitor { kind: &kind })
        .and_then(|event| de.end().map(|()| event))
        .map_err(|e| classify(e, kind.get(), text))?;
    event.validate()
}

fn classify(e: serde_json::Error, kind: Reject, text: &str) -> Invalid {
    if e.is_data() {
        return Invalid::new(kind, e.to_string());
    }
    // serde_json calls an unpaired surrogate in a decoded string a bad hex escape; say what it is.
    match json_storable("message", text) {
        Err(lone) if lone.reason == Reject::LoneSurrogate => lone,
        _ => Invalid::new(Reject::InvalidJson, e.to_string()),
    }
}

impl<'a> Event<'a> {
    fn validate(self) -> Result<Self, Invalid> {
        name("service", &self.service)?;
        name("event_type", &self.event_type)?;
        if let Some(t) = self.timestamp_micros
            && !(MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS).contains(&t)
        {
            return Err(Invalid::new(
                Reject::TimestampOutOfRange,
                "timestamp is outside 1900-01-01T00:00:00Z .. 9999-12-31T23:59:59Z",
            ));
        }
        if let Some(p) = self.payload {
            json_storable("payload", p)?;
        }
        for (key, value) in &self.extra {
            if key.contains('\0') {
                return Err(Invalid::new(Reject::NulCharacter, "a top-level key contains the NUL character"));
            }
            json_storable(key, value)?;
        }
        Ok(self)
    }
}

fn name(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(Reject::EmptyField, format!("`{field}` is empty")));
    }
    // Byte length bounds the char count from above: most names skip the count.
    if value.len() > MAX_NAME_CHARS && value.chars().count() > MAX_NAME_CHARS {
        return Err(Invalid::new(
            Reject::FieldTooLong,
            format!("`{field}` is {} characters, over {MAX_NAME_CHARS}", value.chars().count()),
        ));
    }
    if value.contains('\0') {
        return Err(Invalid::new(Reject::NulCharacter, format!("`{field}` contains the NUL character")));
    }
    Ok(())
}

/// What jsonb refuses although it is valid JSON: the `\u0000` escape (PostgreSQL text cannot
/// hold NUL), escapes of lone surrogates, numbers outside PostgreSQL's numeric range, and
/// nesting deeper than [`MAX_DEPTH`] (PostgreSQL's parser recurses).
/// One pass over the bytes, no allocation; strings are skipped except for their escapes.
fn json_storable(field: &str, json: &str) -> Result<(), Invalid> {
    if obviously_storable(json.as_bytes()) {
        return Ok(());
    }
    let b = json.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Invalid::new(
                        Reject::TooDeep,
                        format!("`{field}` nests arrays and objects deeper than {MAX_DEPTH} levels"),
                    ));
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                i += 1;
                // Only quotes and escapes matter inside a string: jump to them.
                // The text may be invalid JSON (see `classify`): every index is checked.
                while let Some(k) = b.get(i..).and_then(|rest| memchr::memchr2(b'"', b'\\', rest)) {
                    i += k;
                    if b[i] == b'"' {
                        break;
                    }
                    if b.get(i + 1) != Some(&b'u') {
                        i += 2;
                        continue;
                    }
                    let Some(cp) = b.get(i + 2..i + 6).and_then(hex4) else {
                        i += 2;
                        continue;
                    };
                    if cp == 0 {
                        return Err(Invalid::new(
                            Reject::NulCharacter,
                            format!("`{field}` contains the \\u0000 escape, which jsonb cannot store"),
                        ));
                    }
                    if (0xD800..0xDC00).contains(&cp) {
                        let low = (b.get(i + 6) == Some(&b'\\') && b.get(i + 7) == Some(&b'u'))
                            .then(|| b.get(i + 8..i + 12).and_then(hex4))
                            .flatten();
                        if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                            return Err(lone_surrogate(field));
                        }
                        i += 12;
                        continue;
                    }
                    if (0xDC00..0xE000).contains(&cp) {
                        return Err(lone_surrogate(field));
                    }
                    i += 6;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent = false;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    exponent |= (b[i] | 0x20) == b'e';
                    i += 1;
                }
                // Without an exponent only a number of thousands of digits can be out of range.
                if exponent || i - start > 16_000 {
                    number_storable(field, &json[start..i])?;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Most values cannot fail [`json_storable`]'s checks, and a few vectorised searches prove it:
/// no backslash (so no `\u` escape), no more brackets than [`MAX_DEPTH`] (so not too deep),
/// no exponent and not thousands of bytes (so every number fits numeric). An `e` after a digit
/// inside a string only sends the value to the full scan.
fn obviously_storable(b: &[u8]) -> bool {
    b.len() < 16_000
        && memchr::memchr(b'\\', b).is_none()
        && memchr::memchr2_iter(b'[', b'{', b).count() <= MAX_DEPTH
        && memchr::memchr2_iter(b'e', b'E', b).all(|i| i == 0 || !matches!(b[i - 1], b'0'..=b'9' | b'.'))
}

fn lone_surrogate(field: &str) -> Invalid {
    Invalid::new(Reject::LoneSurrogate, format!("`{field}` contains an unpaired UTF-16 surrogate escape"))
}

/// The code unit of a `\u` escape's four hex digits.
fn hex4(h: &[u8]) -> Option<u32> {
    h.iter().try_fold(0, |acc, &c| Some(acc * 16 + (c as char).to_digit(16)?))
}

/// PostgreSQL numeric: at most 131,072 digits before the point and 16,383 after.
fn number_storable(field: &str, n: &str) -> Result<(), Invalid> {
    let (mantissa, exp) = match n.find(['e', 'E']) {
        Some(p) => (&n[..p], n[p + 1..].parse::<i64>().unwrap_or(i64::MAX)),
        None => (n, 0),
    };
    let mantissa = mantissa.trim_start_matches('-');
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let int_digits = int.trim_start_matches('0').len() as i64;
    let frac_digits = frac.len() as i64;
    let before = int_digits.saturating_add(exp);
    let after = frac_digits.saturating_sub(exp);
    let is_zero = int.bytes().chain(frac.bytes()).all(|c| c == b'0');
    if !is_zero && (before > 131_072 || after > 16_383) {
        return Err(Invalid::new(
            Reject::NumberOutOfRange,
            format!("`{field}` holds a number outside PostgreSQL's numeric range"),
        ));
    }
    Ok(())
}

/// Which known field a value is being read for: a data error there is that field's fault.
struct EventVisitor<'k> {
    kind: &'k Cell<Reject>,
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = Event<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event<'de>, A::Error> {
        let mut id = None;
        let mut service = None;
        let mut event_type = None;
        let mut type_alias = None;
        let mut timestamp = None;
        let mut payload = None;
        let mut extra: Vec<(Cow<'de, str>, &'de str)> = Vec::new();
        let dup = |k: &str| de::Error::custom(format_args!("duplicate key `{k}`"));
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let key = key.0;
            self.kind.set(Reject::WrongType);
            match key.as_ref() {
                "id" => {
                    self.kind.set(Reject::InvalidId);
                    if id.is_some() {
                        self.kind.set(Reject::DuplicateKey);
                        return Err(dup("id"));
                    }
                    id = Some(map.next_value_seed(IdField)?);
                }
                "service" => set_once(&mut service, &mut map, "service", self.kind)?,
                "event_type" => set_once(&mut event_type, &mut map, "event_type", self.kind)?,
                "type" => set_once(&mut type_alias, &mut map, "type", self.kind)?,
                "timestamp" => {
                    self.kind.set(Reject::InvalidTimestamp);
                    if timestamp.is_some() {
                        self.kind.set(Reject::DuplicateKey);
                        return Err(dup("timestamp"));
                    }
                    timestamp = Some(map.next_value_seed(TimestampField)?);
                }
                "payload" => {
                    if payload.is_some() {
                        self.kind.set(Reject::DuplicateKey);
                        return Err(dup("payload"));
                    }
                    payload = Some(map.next_value::<&'de RawValue>()?.get());
                }
                _ => {
                    if extra.iter().any(|(k, _)| *k == key) {
                        self.kind.set(Reject::DuplicateKey);
                        return Err(dup(&key));
                    }
                    let value = map.next_value::<&'de RawValue>()?;
                    extra.push((key, value.get()));
                }
            }
            self.kind.set(Reject::InvalidJson);
        }
        self.kind.set(Reject::MissingField);
        let service = service.ok_or_else(|| de::Error::missing_field("service"))?;
        let event_type = match (event_type, type_alias) {
            (Some(_), Some(_)) => {
                self.kind.set(Reject::DuplicateKey);
                return Err(de::Error::custom("both `event_type` and its alias `type` are present"));
            }
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => return Err(de::Error::missing_field("event_type")),
        };
        self.kind.set(Reject::InvalidJson);
        Ok(Event {
            id: id.flatten(),
            service,
            event_type,
            timestamp_micros: timestamp.flatten(),
            payload: payload.filter(|&p| p != "null"),
            extra,
        })
    }
}

fn set_once<'de, A: MapAccess<'de>>(
    slot: &mut Option<Cow<'de, str>>,
    map: &mut A,
    field: &'static str,
    kind: &Cell<Reject>,
) -> Result<(), A::Error> {
    if slot.is_some() {
        kind.set(Reject::DuplicateKey);
        return Err(de::Error::custom(format_args!("duplicate key `{field}`")));
    }
    *slot = Some(map.next_value_seed(StrField(field))?.0);
    Ok(())
}

/// A string that borrows from the input when it has no escapes.
struct Str<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrField("key"))
    }
}

struct StrField(&'static str);

impl<'de> DeserializeSeed<'de> for StrField {
    type Value = Str<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Str<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrField {
    type Value = Str<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "`{}` to be a string", self.0)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(v.to_owned())))
    }
}

/// `"id"`: a UUID string, or null for "derive one".
struct IdField;

impl<'de> DeserializeSeed<'de> for IdField {
    type Value = Option<Uuid>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Uuid>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdField {
    type Value = Option<Uuid>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`id` to be a UUID string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Uuid>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<Uuid>, E> {
        Uuid::try_parse(v).map(Some).map_err(|e| E::custom(format_args!("`id` is not a UUID: {e}")))
    }
}

/// `"timestamp"`: RFC 3339, or null for "use the Kafka timestamp". Yields Unix microseconds.
struct TimestampField;

impl<'de> DeserializeSeed<'de> for TimestampField {
    type Value = Option<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<i64>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TimestampField {
    type Value = Option<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`timestamp` to be an RFC 3339 string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<i64>, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i64>, E> {
        DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.timestamp_micros()))
            .map_err(|e| E::custom(format_args!("`timestamp` is not RFC 3339 ({e}): {:.64}", v)))
    }
}

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
