use super::*;

fn row<'a>(extra: &'a [(Cow<'a, str>, &'a str)], payload: Option<&'a str>) -> Row<'a> {
    Row {
        topic: "events",
        partition: 3,
        offset: 42,
        id: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
        service: "billing",
        event_type: "paid",
        occurred_at: PG_EPOCH_UNIX_MICROS + 1_500_000,
        payload,
        extra,
    }
}

#[test]
fn header_is_the_binary_copy_signature() {
    assert_eq!(HEADER.len(), 19);
    assert_eq!(&HEADER[..11], b"PGCOPY\n\xff\r\n\0");
}

#[test]
fn row_layout_is_exact() {
    let mut buf = BytesMut::new();
    encode_row(&mut buf, &row(&[], Some(r#"{"a":1}"#)));
    let mut want = Vec::new();
    want.extend_from_slice(&9i16.to_be_bytes());
    want.extend_from_slice(&6i32.to_be_bytes());
    want.extend_from_slice(b"events");
    want.extend_from_slice(&4i32.to_be_bytes());
    want.extend_from_slice(&3i32.to_be_bytes());
    want.extend_from_slice(&8i32.to_be_bytes());
    want.extend_from_slice(&42i64.to_be_bytes());
    want.extend_from_slice(&16i32.to_be_bytes());
    want.extend_from_slice(&(1u8..=16).collect::<Vec<_>>());
    want.extend_from_slice(&7i32.to_be_bytes());
    want.extend_from_slice(b"billing");
    want.extend_from_slice(&4i32.to_be_bytes());
    want.extend_from_slice(b"paid");
    want.extend_from_slice(&8i32.to_be_bytes());
    want.extend_from_slice(&1_500_000i64.to_be_bytes());
    want.extend_from_slice(&8i32.to_be_bytes());
    want.push(1);
    want.extend_from_slice(br#"{"a":1}"#);
    want.extend_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(&buf[..], &want[..]);
}

#[test]
fn missing_payload_is_an_empty_object_and_extra_is_an_object() {
    let extra = [(Cow::Borrowed("tenant"), "\"x\""), (Cow::Borrowed("we\"ird"), "[1, 2]")];
    let mut buf = BytesMut::new();
    encode_row(&mut buf, &row(&extra, None));
    let text = String::from_utf8_lossy(&buf);
    assert!(text.contains("\u{1}{}"), "payload {{}}: {text:?}");
    let want = r#"{"tenant":"x","we\"ird":[1, 2]}"#;
    assert!(buf.ends_with(want.as_bytes()));
    let len_at = buf.len() - want.len() - 5;
    assert_eq!(i32::from_be_bytes(buf[len_at..len_at + 4].try_into().unwrap()), want.len() as i32 + 1);
}

#[test]
fn rows_decode_back() {
    let mut buf = BytesMut::new();
    encode_row(&mut buf, &row(&[], Some("[true]")));
    let d = decode_row(&buf).unwrap();
    assert_eq!(
        d,
        DecodedRow {
            offset: 42,
            id: Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            service: "billing",
            event_type: "paid",
            occurred_at: PG_EPOCH_UNIX_MICROS + 1_500_000,
            payload: "[true]",
            extra: None,
        }
    );
    assert_eq!(decode_row(&buf[..10]), None);
}

#[test]
fn a_decoded_row_becomes_a_message_that_encodes_to_the_same_row() {
    let extra = [(Cow::Borrowed("region"), "\"eu\""), (Cow::Borrowed("n"), "[1, 2.50]")];
    for (extra, payload) in [(&extra[..], Some("{\"a\": 1e400}")), (&[][..], None)] {
        let mut original = BytesMut::new();
        let r = row(extra, payload);
        encode_row(&mut original, &Row { occurred_at: -2_208_988_800_000_000 + 7, ..r });
        let json = decode_row(&original).unwrap().to_event_json();
        let event =
            crate::event::decode(Some(&json), 1 << 20).unwrap_or_else(|e| panic!("{e:?}: {}", String::from_utf8_lossy(&json)));
        let mut again = BytesMut::new();
        encode_row(
            &mut again,
            &Row {
                topic: "events",
                partition: 3,
                offset: 42,
                id: event.id.unwrap(),
                service: &event.service,
                event_type: &event.event_type,
                occurred_at: event.timestamp_micros.unwrap(),
                payload: event.payload,
                extra: &event.extra,
            },
        );
        assert_eq!(again, original, "{}", String::from_utf8_lossy(&json));
    }
}
