//! The wire format: decode and validate one Kafka message into a borrowed [`Event`], or say
//! why it is a dead letter. Pure: no I/O, no allocation for a well-formed event whose strings
//! carry no escapes. Most events take [`fastpath`]; the general decoder ([`decode_general`])
//! decides the rest and explains every rejection.
//!
//! This file holds the types, [`decode`] and the derived ids of events that carry none;
//! `general.rs` the serde decoder, `storable.rs` what jsonb refuses although it is valid JSON,
//! `reason.rs` the list of rejection reasons and their metric labels.
//!
//! ```text
//! {"id": "<uuid, optional>", "service": "<1..128 chars>", "event_type": "<1..128 chars>" ("type" is an alias),
//!  "timestamp": "<RFC 3339, optional>", "payload": <any JSON, optional, default {}>, ...unknown fields → extra}
//! ```

use std::borrow::Cow;
use std::fmt;

use uuid::Uuid;

pub mod fastpath;
mod general;
mod keys;
mod reason;
mod storable;

pub use general::decode_general;
pub use reason::Reject;

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
    /// The payload's JSON text exactly as sent (`null` too: jsonb holds it); `None`, absent,
    /// means `{}`.
    pub payload: Option<&'a str>,
    /// Unknown top-level fields and their JSON text as it came; stored in the `extra` jsonb column.
    pub extra: Vec<(Cow<'a, str>, &'a str)>,
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

impl Invalid {
    /// An event without `timestamp` takes its Kafka message's, which must then be a time aurore
    /// accepts: a producer writing microseconds or nanoseconds into a field meant for
    /// milliseconds (older brokers and mirrors accept them) gives times tens of thousands of
    /// years away. `millis` as Kafka gave it.
    pub fn kafka_timestamp_out_of_range(millis: i64) -> Self {
        Invalid::new(
            Reject::TimestampOutOfRange,
            format!(
                "the event has no `timestamp` and its Kafka message timestamp, {millis} ms since the epoch, is outside \
                 1900-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z (was it written in microseconds or nanoseconds?)"
            ),
        )
    }
}

/// The microseconds of a fraction of a second written `.ddd…` (the dot included), rounded as
/// PostgreSQL's timestamp input rounds them (`ParseFractionalSecond`: `strtod`, then `rint`
/// of it times 10⁶, ties to even): 0 ..= 1,000,000, the last a carry into the next second.
/// `None` if `fraction` is not a dot and digits.
pub fn fraction_micros(fraction: &str) -> Option<i64> {
    let digits = fraction.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // Up to six digits nothing rounds: the integer is the double's rint (the common case, kept
    // off the float parser).
    if digits.len() <= 6 {
        let n = digits.bytes().fold(0i64, |n, c| n * 10 + i64::from(c - b'0'));
        return Some(n * 10i64.pow(6 - digits.len() as u32));
    }
    // Rust's parse rounds correctly, as glibc's strtod does; the product is the same IEEE
    // operation as PostgreSQL's.
    let f: f64 = fraction.parse().ok()?;
    Some((f * 1_000_000.0).round_ties_even() as i64)
}

/// A Kafka message timestamp (Unix milliseconds) as Unix microseconds, if it is a time aurore
/// accepts ([`MIN_TIMESTAMP_MICROS`] ..= [`MAX_TIMESTAMP_MICROS`]); never overflows.
pub fn kafka_micros(millis: i64) -> Option<i64> {
    millis.checked_mul(1000).filter(|t| (MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS).contains(t))
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.label(), self.detail)
    }
}

/// The largest UTC offset PostgreSQL's timestamp input takes, in seconds: 15:59
/// (`datetime.c`: `MAX_TZDISP_HOUR` 15). RFC 3339 allows 23:59; PostgreSQL refuses the rest
/// ("time zone displacement out of range"), and so does aurore.
pub const MAX_UTC_OFFSET_SECS: i64 = 15 * 3600 + 59 * 60;

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

#[cfg(test)]
#[path = "event_tests.rs"]
mod tests;
