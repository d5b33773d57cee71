//! The decoder on arbitrary bytes: it never panics, and where the fast path decides, it decides
//! as the general decoder does (the fast path's whole contract). Run by `scripts/fuzz`.
#![no_main]

use aurore::event::{self, decode_general, fastpath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = event::decode(Some(data), 1 << 20);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(fast) = fastpath::decode(text) {
            match decode_general(text) {
                Ok(general) => assert_eq!(fast, general, "fast and general decoders differ on {text:?}"),
                Err(e) => panic!("the fast path accepted what the general decoder rejects ({e}): {text:?}"),
            }
        }
    }
});
