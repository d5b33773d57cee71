//! PostgreSQL binary COPY encoding of `events` rows, written straight into a batch's buffer.
//!
//! Format (PostgreSQL docs, "COPY ... BINARY"): an 19-byte header, then per row a 16-bit field
//! count and per field a 32-bit length (-1 for NULL) followed by the value in its binary send
//! format, then a 16-bit -1 trailer. Values used here: text is UTF-8 bytes, int4/int8 are
//! big-endian, uuid is 16 bytes, timestamptz is microseconds since 2000-01-01 UTC, and jsonb is
//! a version byte (1) followed by the JSON text, so payloads go in without re-serialising.

use bytes::{BufMut, BytesMut};
use std::borrow::Cow;
use uuid::Uuid;

/// The COPY statement that matches [`encode_row`]'s field order. `received_at` takes its
/// default, now(): the time of the transaction that persists the row.
pub const COPY_EVENTS: &str = "COPY events (topic, partition, \"offset\", id, service, event_type, \
                               occurred_at, payload, extra) FROM STDIN (FORMAT binary)";

/// Signature, flags (no OIDs), header extension length 0.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the data.
pub const TRAILER: &[u8] = &[0xff, 0xff];

const FIELDS: i16 = 9;
/// 2000-01-01T00:00:00Z in Unix microseconds: PostgreSQL's timestamp epoch.
const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// One row of `events`, borrowing everything it can.
pub struct Row<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub id: Uuid,
    pub service: &'a str,
    pub event_type: &'a str,
    /// Unix microseconds.
    pub occurred_at: i64,
    /// JSON text; `None` stores `{}`.
    pub payload: Option<&'a str>,
    /// Unknown top-level fields; empty stores NULL.
    pub extra: &'a [(Cow<'a, str>, &'a str)],
}

/// Appends one row to `buf`. The caller has validated the values (see `event::decode`).
pub fn encode_row(buf: &mut BytesMut, row: &Row<'_>) {
    let payload = row.payload.unwrap_or("{}");
    buf.reserve(2 + 9 * 4 + row.topic.len() + 4 + 8 + 16 + row.service.len() + row.event_type.len() + 8 + 1 + payload.len());
    buf.put_i16(FIELDS);
    text(buf, row.topic);
    buf.put_i32(4);
    buf.put_i32(row.partition);
    buf.put_i32(8);
    buf.put_i64(row.offset);
    buf.put_i32(16);
    buf.put_slice(row.id.as_bytes());
    text(buf, row.service);
    text(buf, row.event_type);
    buf.put_i32(8);
    buf.put_i64(row.occurred_at - PG_EPOCH_UNIX_MICROS);
    jsonb(buf, payload);
    if row.extra.is_empty() {
        buf.put_i32(-1);
    } else {
        let len_at = buf.len();
        buf.put_i32(0);
        buf.put_u8(1);
        buf.put_u8(b'{');
        for (i, (key, value)) in row.extra.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            // Writing a str into a BytesMut cannot fail.
            let _ = serde_json::to_writer((&mut *buf).writer(), key.as_ref());
            buf.put_u8(b':');
            buf.put_slice(value.as_bytes());
        }
        buf.put_u8(b'}');
        let len = (buf.len() - len_at - 4) as i32;
        buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn text(buf: &mut BytesMut, s: &str) {
    buf.put_i32(s.len() as i32);
    buf.put_slice(s.as_bytes());
}

fn jsonb(buf: &mut BytesMut, json: &str) {
    buf.put_i32(json.len() as i32 + 1);
    buf.put_u8(1);
    buf.put_slice(json.as_bytes());
}

/// The fields of one encoded row, read back: what a dead letter records of a row that
/// PostgreSQL refused after it was encoded.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedRow<'a> {
    pub offset: i64,
    pub id: Uuid,
    pub service: &'a str,
    pub event_type: &'a str,
    /// Unix microseconds.
    pub occurred_at: i64,
    pub payload: &'a str,
    /// The `extra` object's JSON text, when there was one.
    pub extra: Option<&'a str>,
}

impl DecodedRow<'_> {
    /// A message that decodes to this very row: the id and time made explicit, the payload and
    /// the unknown fields as they were. A row PostgreSQL refused is kept in its dead letter as
    /// this, so that a replay stores what would have been stored.
    pub fn to_event_json(&self) -> Vec<u8> {
        let timestamp = chrono::DateTime::from_timestamp_micros(self.occurred_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_default();
        let head = serde_json::json!({
            "id": self.id.to_string(),
            "service": self.service,
            "event_type": self.event_type,
            "timestamp": timestamp,
        })
        .to_string();
        let mut out = Vec::with_capacity(head.len() + self.payload.len() + self.extra.map_or(0, str::len) + 16);
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"payload\":");
        out.extend_from_slice(self.payload.as_bytes());
        // The encoder writes `extra` as `{` fields `}`, with at least one field.
        if let Some(fields) = self.extra.and_then(|e| e.strip_prefix('{')).and_then(|e| e.strip_suffix('}')) {
            out.push(b',');
            out.extend_from_slice(fields.as_bytes());
        }
        out.push(b'}');
        out
    }
}

/// Reads back a row written by [`encode_row`]. `None` if `row` is not one.
pub fn decode_row(row: &[u8]) -> Option<DecodedRow<'_>> {
    let mut fields: [&[u8]; FIELDS as usize] = [&[]; FIELDS as usize];
    let mut at = 2;
    for field in fields.iter_mut() {
        let len = i32::from_be_bytes(row.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len >= 0 {
            *field = row.get(at..at + len as usize)?;
            at += len as usize;
        }
    }
    Some(DecodedRow {
        offset: i64::from_be_bytes(fields[2].try_into().ok()?),
        id: Uuid::from_slice(fields[3]).ok()?,
        service: std::str::from_utf8(fields[4]).ok()?,
        event_type: std::str::from_utf8(fields[5]).ok()?,
        occurred_at: i64::from_be_bytes(fields[6].try_into().ok()?) + PG_EPOCH_UNIX_MICROS,
        payload: std::str::from_utf8(fields[7].get(1..)?).ok()?,
        extra: match fields[8] {
            [] => None,
            e => Some(std::str::from_utf8(e.get(1..)?).ok()?),
        },
    })
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
