use clap::Parser;

use super::*;
use crate::config::{Cli, Command};
use crate::event::decode_general;

/// The fast path's whole contract: when it decides, it decides as the general decoder does.
fn agrees(text: &str) -> Option<bool> {
    let fast = decode(text)?;
    match decode_general(text) {
        Ok(general) => assert_eq!(fast, general, "fast and general decoders differ on {text:?}"),
        Err(e) => panic!("fast path accepted what the general decoder rejects ({e}): {text:?}"),
    }
    Some(true)
}

#[test]
fn the_events_aurore_produce_makes_take_the_fast_path() {
    let Command::Produce(args) = Cli::parse_from(["aurore", "produce", "--invalid-ratio", "0.2"]).command else { unreachable!() };
    let mut synthetic = crate::produce::Synthetic::new(&args);
    let (mut buf, mut fast, mut valid) = (Vec::new(), 0, 0);
    for _ in 0..2_000 {
        synthetic.next(&mut buf);
        let Ok(text) = std::str::from_utf8(&buf) else { continue };
        valid += usize::from(decode_general(text).is_ok());
        fast += usize::from(agrees(text).is_some());
    }
    assert!(valid > 1_400, "{valid} valid of 2,000");
    assert_eq!(fast, valid, "every valid synthetic event is decoded by the fast path");
}

#[test]
fn the_fast_path_takes_common_json_and_leaves_the_rest() {
    let taken = [
        r#"{"service":"s","event_type":"t"}"#,
        " {\n\t\"service\" : \"s\" ,\r\n \"type\":\"t\" } \n",
        r#"{"service":"s","event_type":"t","id":"6f1c1c9e-54b2-4a53-9d0c-6f2b8f1b6a10","timestamp":"2024-05-01T12:00:00.5+02:00"}"#,
        r#"{"service":"s","event_type":"t","id":null,"timestamp":null,"payload":null}"#,
        r#"{"service":"s","event_type":"t","payload":{"a":[1,-2,0.5,-0.0,true,false,null,"x\"y\\z\n\/",{},[],{"b":[[]]}]},"n":3}"#,
        r#"{"service":"café","event_type":"t","payload":"ünï 😀","x":{"y":"z"},"w":[]}"#,
    ];
    for text in taken {
        assert_eq!(agrees(text), Some(true), "{text}");
    }
    let deep = |n: usize| format!(r#"{{"service":"s","event_type":"t","payload":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
    assert_eq!(agrees(&deep(64)), Some(true));
    let left = [
        deep(65),
        r#"{"service":"s","event_type":"t","payload":"\u0041"}"#.into(),
        r#"{"service":"s","event_type":"t","payload":1e5}"#.into(),
        r#"{"service":"s","event_type":"t","payload":01}"#.into(),
        r#"{"service":"s","event_type":"t","payload":1.}"#.into(),
        r#"{"service":"s","event_type":"t","payload":[1,]}"#.into(),
        r#"{"service":"s","event_type":"t","payload":{"a" 1}}"#.into(),
        r#"{"service":"s","event_type":"t","payload":"tab	inside"}"#.into(),
        r#"{"service":"s","event_type":"t","payload":tru}"#.into(),
        r#"{"service":"s","event_type":"t","x":1,"x":1}"#.into(),
        r#"{"service":"s","event_type":"t","type":"t"}"#.into(),
        r#"{"service":"s","service":"s","event_type":"t"}"#.into(),
        r#"{"service":"","event_type":"t"}"#.into(),
        r#"{"service":"s\"","event_type":"t"}"#.into(),
        r#"{"service":"s","event_type":"t","k\n":1}"#.into(),
        r#"{"service":"s","event_type":"t","id":"nope"}"#.into(),
        r#"{"service":"s","event_type":"t","timestamp":"2024-05-01t12:00:00Z"}"#.into(),
        r#"{"service":"s","event_type":"t"} x"#.into(),
        r#"{"service":"s","event_type":"t",}"#.into(),
        r#"{"service":"s"}"#.into(),
        "{}".into(),
        "[]".into(),
        format!(r#"{{"service":"{}","event_type":"t"}}"#, "x".repeat(MAX_NAME_CHARS + 1)),
    ];
    for text in left {
        assert!(decode(&text).is_none(), "fast path took {text:?}");
    }
}

/// Thousands of mutants of valid events, each one to four edits away: the fast path must never
/// accept what the general decoder rejects, nor decode anything differently.
#[test]
fn the_fast_path_never_disagrees_with_the_general_decoder() {
    const ROUNDS: usize = 60_000;
    const SEED: u64 = 7;
    let seeds = [
        r#"{"service":"checkout","event_type":"event.created","timestamp":"2026-11-27T23:42:41.259614Z","payload":{"seq":9008,"order_id":"ord-ce88c3c1","customer":{"id":559681,"tier":"enterprise","country":"FR"},"items":[{"sku":"SKU-11104","qty":1,"price":715.28}],"note":"abc"}}"#,
        r#"{"id":"6f1c1c9e-54b2-4a53-9d0c-6f2b8f1b6a10","service":"s","type":"t","timestamp":"2024-02-29T23:59:59.123456789-05:30","payload":[1,-2.5,0,true,false,null,"a\"b\\c\n\/"],"tenant":"x","n":-0.25}"#,
        r#"{ "service" : "s" , "event_type" : "t" , "payload" : { "a" : [ { } , [ ] , "\u00e9" , 1e3 , 1E-3 ] } , "extra" : null }"#,
        r#"{"service":"s","event_type":"t","payload":[[[[[[1]]]]]],"id":null,"timestamp":null}"#,
        // Keys that a mutation easily repeats, at several depths.
        r#"{"service":"s","event_type":"t","payload":{"a":1,"b":{"a":{"a":1},"c":[{"a":1},{"a":2,"b":3}]}},"x":{"a":1,"b":2}}"#,
    ];
    let alphabet: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "\\",
        "u",
        "0",
        "1",
        "9",
        ".",
        "e",
        "E",
        "+",
        "-",
        "t",
        "n",
        "null",
        "true",
        "\"a\":1,",
        "\"b\":{\"a\":2},",
        " ",
        "\n",
        "\t",
        "\u{1}",
        "é",
        "a",
        "\\u0000",
        "\\ud800",
        "\\n",
        "\"id\":",
        "\"service\":\"s\",",
        "\"type\":\"x\",",
        "Z",
        "T",
    ];
    let mut rng = fastrand::Rng::with_seed(SEED);
    let (mut fast, mut general) = (0, 0);
    for round in 0..ROUNDS {
        let mut text = seeds[round % seeds.len()].to_string();
        for _ in 0..rng.usize(1..=4) {
            let mut at = rng.usize(..=text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let mut end = (at + rng.usize(0..4)).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            match rng.u8(..4) {
                0 => text.insert_str(at, alphabet[rng.usize(..alphabet.len())]),
                1 => text.replace_range(at..end, alphabet[rng.usize(..alphabet.len())]),
                2 => text.replace_range(at..end, ""),
                _ => text.truncate(at),
            }
        }
        general += usize::from(decode_general(&text).is_ok());
        fast += usize::from(agrees(&text).is_some());
    }
    // Not vacuous: plenty of mutants are valid, and the fast path decides most of them.
    assert!(general > 3_000 && fast * 2 > general, "general accepted {general}, fast path {fast}");
}

/// Fast and general paths agree on every time; the sub-microsecond rounding against
/// PostgreSQL itself is the differential test's (`integration-tests/tests/differential.rs`).
#[test]
fn timestamps_match_the_general_decoder() {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut taken = 0;
    for _ in 0..50_000 {
        let year = [rng.i64(1899..=2100), rng.i64(0..=9999), 1900, 9999, 2000, 2024][rng.usize(..6)];
        let fraction = match rng.u8(..4) {
            0 => String::new(),
            _ => format!(".{}", (0..rng.usize(0..11)).map(|_| char::from(b'0' + rng.u8(..10))).collect::<String>()),
        };
        let zone = match rng.u8(..4) {
            0 => "Z".to_string(),
            1 => ["z", "+24:00", "+00:60", "-00:00", "+0100", ""][rng.usize(..6)].to_string(),
            _ => format!("{}{:02}:{:02}", ["+", "-"][rng.usize(..2)], rng.u8(..24), rng.u8(..60)),
        };
        let sep = if rng.u8(..10) == 0 { "t" } else { "T" };
        let s = format!(
            "{year:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}{fraction}{zone}",
            rng.u8(0..=13),
            rng.u8(0..=32),
            rng.u8(0..=24),
            rng.u8(0..=60),
            rng.u8(0..=61)
        );
        if let Some(t) = rfc3339_micros(&s) {
            taken += 1;
            let json = format!(r#"{{"service":"s","event_type":"t","timestamp":"{s}"}}"#);
            let want = crate::event::decode_general(&json).map(|e| e.timestamp_micros);
            assert_eq!(Ok(Some(t)), want.map_err(|e| e.to_string()), "{s}");
        }
    }
    assert!(taken > 10_000, "only {taken} timestamps took the fast path");
    assert_eq!(rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(rfc3339_micros("2000-03-01T00:00:00.000001+01:00"), Some(951_865_200_000_001));
    // Rounded as PostgreSQL rounds (ties to even on the double), with the carry.
    assert_eq!(rfc3339_micros("1970-01-01T00:00:00.0000005Z"), Some(0));
    assert_eq!(rfc3339_micros("1970-01-01T00:00:00.0000015Z"), Some(2));
    assert_eq!(rfc3339_micros("1970-01-01T00:00:00.0000019Z"), Some(2));
    assert_eq!(rfc3339_micros("1970-01-01T00:00:00.9999995Z"), Some(1_000_000));
    assert_eq!(rfc3339_micros("1899-12-31T23:59:59Z"), None, "out of range: the general decoder says so");
}

#[test]
fn special_bytes_are_found_at_every_position() {
    for len in 0..50 {
        for at in 0..len {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                let mut b = vec![b'a'; len];
                b.iter_mut().skip(at + 1).step_by(3).for_each(|c| *c = 0xc3); // non-ASCII after the hit
                b[at] = special;
                assert_eq!(special_at(&b), Some(at), "len {len} at {at} byte {special:#x}");
            }
        }
        // Neighbours of the special bytes, and bytes with the high bit set, are not special.
        for plain in [b'~', b' ', b'!', b'#', b'[', b']', 0x7f, 0x80, 0x9c, 0xa2, 0xdc, 0xff] {
            assert_eq!(special_at(&vec![plain; len]), None, "len {len} byte {plain:#x}");
        }
    }
}

#[test]
fn nested_duplicate_keys_go_to_the_general_decoder_which_names_them() {
    for (json, path) in [
        (r#"{"service":"s","event_type":"t","payload":{"a":1,"a":2}}"#, "$.payload.a"),
        (r#"{"service":"s","event_type":"t","payload":{"x":[{"k":1},{"k":1,"k":2}]}}"#, "$.payload.x[1].k"),
        (r#"{"service":"s","event_type":"t","extra":{"m":{"n":1,"n":1}}}"#, "$.extra.m.n"),
        (r#"{"service":"s","event_type":"t","payload":{"a":1,"\u0061":2}}"#, "$.payload.a"),
    ] {
        assert_eq!(decode(json), None, "{json}");
        let e = decode_general(json).unwrap_err();
        assert_eq!(e.reason, crate::event::Reject::DuplicateKey, "{json}");
        assert!(e.detail.starts_with(&format!("duplicate key at {path}:")), "{json}: {}", e.detail);
    }
    // The same key in sibling objects, and many keys, stay on the fast path.
    assert!(decode(r#"{"service":"s","event_type":"t","payload":[{"a":1,"b":2},{"a":1,"b":2}]}"#).is_some());
    let wide: Vec<String> = (0..40).map(|i| format!(r#""k{i}":{i}"#)).collect();
    assert!(decode(&format!(r#"{{"service":"s","event_type":"t","payload":{{{}}}}}"#, wide.join(","))).is_some());
}
