//! The general decoder: serde_json into borrowed fields, then validation. It decides every
//! message the fast path leaves to it and names the reason of each rejection: a data error is
//! the fault of the field being read, and an unpaired surrogate, which serde_json calls a bad
//! escape, is said to be one.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use chrono::DateTime;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::keys::no_duplicate_keys;
use super::storable::json_storable;
use super::{Event, Invalid, MAX_NAME_CHARS, MAX_TIMESTAMP_MICROS, MIN_TIMESTAMP_MICROS, Reject};

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
            // The instant as read (after rounding), which says what the producer's value meant.
            let read = chrono::DateTime::from_timestamp_micros(t)
                .map_or_else(|| format!("{t} µs since the epoch"), |d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
            return Err(Invalid::new(
                Reject::TimestampOutOfRange,
                format!("timestamp {read} is outside 1900-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z"),
            ));
        }
        if let Some(p) = self.payload {
            json_storable("payload", p)?;
            no_duplicate_keys("payload", p)?;
        }
        for (key, value) in &self.extra {
            if key.contains('\0') {
                return Err(Invalid::new(Reject::NulCharacter, "a top-level key contains the NUL character"));
            }
            json_storable(key, value)?;
            no_duplicate_keys(key, value)?;
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
        Ok(Event { id: id.flatten(), service, event_type, timestamp_micros: timestamp.flatten(), payload, extra })
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
        let t = DateTime::parse_from_rfc3339(v)
            .map_err(|e| E::custom(format_args!("`timestamp` is not RFC 3339 ({e}): {:.64}", v)))?;
        if i64::from(t.offset().local_minus_utc().abs()) > super::MAX_UTC_OFFSET_SECS {
            return Err(E::custom(format_args!(
                "`timestamp` has a UTC offset beyond ±15:59, which PostgreSQL refuses: {:.64}",
                v
            )));
        }
        // chrono keeps nanoseconds and truncates beyond; PostgreSQL rounds every digit to the
        // microsecond: the whole second from chrono (a leap second is the next one, as in
        // PostgreSQL), the fraction as PostgreSQL reads it. RFC 3339's seconds end at byte 19.
        let leap = i64::from(t.timestamp_subsec_nanos() >= 1_000_000_000);
        let fraction = v.get(19..).filter(|f| f.starts_with('.')).map(|f| {
            let end = f[1..].find(|c: char| !c.is_ascii_digit()).map_or(f.len(), |k| k + 1);
            &f[..end]
        });
        let micros = fraction.and_then(super::fraction_micros).unwrap_or(0);
        Ok(Some((t.timestamp() + leap) * 1_000_000 + micros))
    }
}
