use super::*;
use crate::event::tests::{bad, ok};

#[test]
fn storable_json_passes() {
    // A paired surrogate, an escaped backslash before u0000 text, big-but-legal numbers.
    ok(
        r#"{"service":"s","event_type":"t","payload":{"e":"\ud83d\ude00","b":"\\u0000","n":[1e300,-0.5,0e999999,12345678901234567890]}}"#,
    );
}

#[test]
fn the_fast_storability_check_sends_every_doubtful_value_to_the_full_scan() {
    let nest = |n: usize| format!(r#"{{"service":"s","event_type":"t","payload":{}1{}}}"#, "[".repeat(n), "]".repeat(n));
    ok(&nest(MAX_DEPTH));
    assert_eq!(bad(nest(MAX_DEPTH + 1).as_bytes()), Reject::TooDeep, "129 brackets: short, but too deep");
    assert_eq!(bad(br#"{"service":"s","event_type":"t","payload":[1E200000]}"#), Reject::NumberOutOfRange);
    let long_fraction = format!(r#"{{"service":"s","event_type":"t","payload":0.{}1}}"#, "0".repeat(16_400));
    assert_eq!(bad(long_fraction.as_bytes()), Reject::NumberOutOfRange, "no exponent, but 16,401 decimals");
    // An "e" after a digit inside a string takes the full scan, which finds nothing wrong.
    ok(r#"{"service":"s","event_type":"t","payload":{"sku":"4e5","v":"x.e"}}"#);
    assert!(!obviously_storable(br#"{"a":"\u0000"}"#) && !obviously_storable(b"[2e9]"));
    assert!(obviously_storable(br#"{"note":"free text, every letter","n":[1,2.5,-3]}"#));
}
