use super::*;

const MAX: usize = 1 << 20;

/// Decodes `s`, which must be accepted (shared with the other tests of `event`).
pub(super) fn ok(s: &str) -> Event<'_> {
    decode(Some(s.as_bytes()), MAX).unwrap_or_else(|e| panic!("{s} rejected: {e}"))
}

/// The reason `bytes` is refused with, which must come with a detail.
pub(super) fn bad(bytes: &[u8]) -> Reject {
    match decode(Some(bytes), MAX) {
        Ok(_) => panic!("{:.200} accepted", String::from_utf8_lossy(bytes)),
        Err(e) => {
            assert!(!e.detail.is_empty());
            e.reason
        }
    }
}

#[test]
fn minimal_event_borrows_its_strings() {
    let e = ok(r#"{"service":"billing","event_type":"invoice.paid"}"#);
    assert!(matches!(e.service, Cow::Borrowed("billing")));
    assert!(matches!(e.event_type, Cow::Borrowed("invoice.paid")));
    assert_eq!((e.id, e.timestamp_micros, e.payload.is_none(), e.extra.len()), (None, None, true, 0));
}

#[test]
fn full_event() {
    let e = ok(r#"{"id":"6f1c1c9e-54b2-4a53-9d0c-6f2b8f1b6a10","service":"s","type":"t",
        "timestamp":"2024-05-01T12:00:00.5+02:00","payload":{"a":[1,2,{"b":null}]},"tenant":"x","n":1}"#);
    assert_eq!(e.id.unwrap().to_string(), "6f1c1c9e-54b2-4a53-9d0c-6f2b8f1b6a10");
    assert_eq!(e.event_type, "t");
    assert_eq!(e.timestamp_micros, Some(1_714_557_600_500_000));
    assert_eq!(e.payload.unwrap(), r#"{"a":[1,2,{"b":null}]}"#);
    let extra: Vec<_> = e.extra.iter().map(|(k, v)| (k.as_ref(), *v)).collect();
    assert_eq!(extra, [("tenant", r#""x""#), ("n", "1")]);
}

#[test]
fn null_id_and_timestamp_mean_absent_and_a_null_payload_is_kept() {
    let e = ok(r#"{"service":"s","event_type":"t","id":null,"timestamp":null,"payload":null}"#);
    assert_eq!((e.id, e.timestamp_micros, e.payload), (None, None, Some("null")));
    assert_eq!(ok(r#"{"service":"s","event_type":"t"}"#).payload, None, "absent: stored as {{}}");
}

#[test]
fn escaped_strings_are_decoded() {
    let e = ok(r#"{"service":"caf\u00e9","event_type":"a\"b"}"#);
    assert_eq!(e.service, "café");
    assert_eq!(e.event_type, "a\"b");
}

#[test]
fn every_kind_of_bad_input_has_its_reason() {
    let huge = format!(r#"{{"service":"{}","event_type":"t"}}"#, "x".repeat(129));
    let deep = format!(r#"{{"service":"s","event_type":"t","payload":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&[u8], Reject)> = vec![
        (b"", Reject::Empty),
        (b"\xff\xfe{}", Reject::NotUtf8),
        (b"{\"service\":\"\xc3\x28\",\"event_type\":\"t\"}", Reject::NotUtf8),
        ("\u{feff}{\"service\":\"s\",\"event_type\":\"t\"}".as_bytes(), Reject::ByteOrderMark),
        (br#"{"service":"s","event_type":"#, Reject::InvalidJson),
        (b"not json", Reject::InvalidJson),
        (br#"[1,2]"#, Reject::NotObject),
        (b"42", Reject::NotObject),
        (br#""str""#, Reject::NotObject),
        (br#"{"event_type":"t"}"#, Reject::MissingField),
        (br#"{"service":"s"}"#, Reject::MissingField),
        (br#"{"service":"","event_type":"t"}"#, Reject::EmptyField),
        (huge.as_bytes(), Reject::FieldTooLong),
        (br#"{"service":5,"event_type":"t"}"#, Reject::WrongType),
        (br#"{"service":"s","event_type":["t"]}"#, Reject::WrongType),
        (br#"{"service":"s","event_type":"t","id":"nope"}"#, Reject::InvalidId),
        (br#"{"service":"s","event_type":"t","id":7}"#, Reject::InvalidId),
        (br#"{"service":"s","event_type":"t","timestamp":"yesterday"}"#, Reject::InvalidTimestamp),
        (br#"{"service":"s","event_type":"t","timestamp":"+300000-01-01T00:00:00Z"}"#, Reject::InvalidTimestamp),
        (br#"{"service":"s","event_type":"t","timestamp":"0000-01-01T00:00:00Z"}"#, Reject::TimestampOutOfRange),
        (br#"{"service":"s","event_type":"t","payload":{"a":"x\u0000y"}}"#, Reject::NulCharacter),
        (br#"{"service":"s\u0000","event_type":"t"}"#, Reject::NulCharacter),
        (br#"{"service":"s","event_type":"t","payload":"\ud800"}"#, Reject::LoneSurrogate),
        (br#"{"service":"s","event_type":"t","payload":"\udc00x"}"#, Reject::LoneSurrogate),
        (br#"{"service":"\ud800","event_type":"t"}"#, Reject::LoneSurrogate),
        (br#"{"service":"s","event_type":"t","payload":1e200000}"#, Reject::NumberOutOfRange),
        (deep.as_bytes(), Reject::TooDeep),
        (br#"{"service":"s","service":"s","event_type":"t"}"#, Reject::DuplicateKey),
        (br#"{"service":"s","event_type":"t","x":1,"x":2}"#, Reject::DuplicateKey),
        (br#"{"service":"s","event_type":"t","type":"t"}"#, Reject::DuplicateKey),
        (br#"{"service":"s","event_type":"t"} trailing"#, Reject::InvalidJson),
        // Cut inside an escape: the lone-surrogate probe of invalid JSON must not read past the end.
        (br#"{"service":"s","event_type":"t","payload":"\"#, Reject::InvalidJson),
        (br#"{"service":"s","event_type":"t","payload":"\ud8"#, Reject::InvalidJson),
        (br#"{"service":"s","event_type":"t","payload":"\ud800\u"#, Reject::LoneSurrogate),
    ];
    for (input, want) in cases {
        assert_eq!(bad(input), want, "input {:.200}", String::from_utf8_lossy(input));
    }
}

#[test]
fn tombstone_and_oversized() {
    assert_eq!(decode(None, MAX).unwrap_err().reason, Reject::Tombstone);
    let e = decode(Some(br#"{"service":"s","event_type":"t"}"#), 10).unwrap_err();
    assert_eq!(e.reason, Reject::Oversized);
    assert!(e.detail.contains("32 bytes"), "{}", e.detail);
}

#[test]
fn derived_ids_are_stable_and_distinct() {
    let a = derived_id("events", 0, 42);
    assert_eq!(a, derived_id("events", 0, 42));
    assert_eq!(a.get_version_num(), 5);
    assert_ne!(a, derived_id("events", 0, 43));
    assert_ne!(a, derived_id("events", 1, 42));
    assert_ne!(a, derived_id("other", 0, 42));
}

#[test]
fn short_fractions_take_the_integer_path_with_the_same_result() {
    let mut rng = fastrand::Rng::with_seed(16);
    for _ in 0..100_000 {
        let n = rng.usize(1..=6);
        let digits: String = (0..n).map(|_| char::from(b'0' + rng.u8(..10))).collect();
        let fraction = format!(".{digits}");
        let float = (fraction.parse::<f64>().unwrap() * 1_000_000.0).round_ties_even() as i64;
        assert_eq!(fraction_micros(&fraction), Some(float), "{fraction}");
    }
}

/// A timestamp out of range is named in the detail as read (after rounding: 9999-12-31T23:59:59.9999995Z
/// rounds into the year 10000), so that the producer sees what its value meant.
#[test]
fn timestamp_out_of_range_names_the_instant_read() {
    let detail = |ts: &str| {
        decode(Some(format!(r#"{{"service":"s","event_type":"t","timestamp":"{ts}"}}"#).as_bytes()), MAX).unwrap_err().detail
    };
    assert_eq!(
        detail("1899-12-31T23:59:59Z"),
        "timestamp 1899-12-31T23:59:59Z is outside 1900-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999Z"
    );
    assert!(detail("9999-12-31T23:59:59.9999995Z").starts_with("timestamp +10000-01-01T00:00:00Z is outside"));
}
