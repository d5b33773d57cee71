//! The ids of events that carry none ([`event::derived_id`]), for a whole burst of messages at
//! once: SHA-1 of eight names side by side in AVX2 lanes when the CPU has it. One SHA-1 per
//! event was the largest single cost of the poll thread after decoding. The ids are the same
//! as [`event::derived_id`]'s (`ids_tests.rs` compares them), which stays the reference and
//! takes the names that do not fit in one SHA-1 block (topics over 15 bytes or so).
//!
//! Pure: no I/O, no allocation.

use uuid::Uuid;

use crate::event::{self, DERIVED_ID_NAMESPACE};

/// Writes the derived id of each `(topic, partition, offset)` into `out`, in order.
pub fn derive_ids<'a>(keys: impl ExactSizeIterator<Item = (&'a str, i32, i64)>, out: &mut [Uuid]) {
    assert!(keys.len() <= out.len(), "{} keys, room for {} ids", keys.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let mut keys = keys.enumerate();
        loop {
            let mut blocks = [[0u32; 16]; LANES];
            let mut lanes = [usize::MAX; LANES];
            let mut filled = 0;
            for (i, (topic, partition, offset)) in keys.by_ref() {
                if let Some(block) = one_block(topic, partition, offset) {
                    blocks[filled] = block;
                    lanes[filled] = i;
                    filled += 1;
                    if filled == LANES {
                        break;
                    }
                } else {
                    out[i] = event::derived_id(topic, partition, offset);
                }
            }
            if filled == 0 {
                return;
            }
            // SAFETY: AVX2 was detected above.
            let digests = unsafe { sha1_x8(&blocks) };
            for (lane, &i) in lanes[..filled].iter().enumerate() {
                out[i] = uuid_v5(&digests[lane]);
            }
        }
    }
    for (slot, (topic, partition, offset)) in out.iter_mut().zip(keys) {
        *slot = event::derived_id(topic, partition, offset);
    }
}

const LANES: usize = 8;

/// The one padded SHA-1 block of namespace ‖ "topic/partition/offset", as big-endian words;
/// `None` if the name needs two blocks.
fn one_block(topic: &str, partition: i32, offset: i64) -> Option<[u32; 16]> {
    let mut bytes = [0u8; 64];
    bytes[..16].copy_from_slice(DERIVED_ID_NAMESPACE.as_bytes());
    // The 0x80 terminator and the 8-byte bit length must fit after the message.
    let len = 16 + event::derived_id_name(topic, partition, offset, &mut bytes[16..64 - 9])?;
    bytes[len] = 0x80;
    bytes[56..].copy_from_slice(&(len as u64 * 8).to_be_bytes());
    let mut words = [0u32; 16];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_be_bytes(chunk.try_into().expect("4 bytes"));
    }
    Some(words)
}

/// A SHA-1 digest as a version 5 UUID, as `Uuid::new_v5` makes it.
fn uuid_v5(digest: &[u32; 5]) -> Uuid {
    let mut bytes = [0u8; 16];
    for (chunk, w) in bytes.chunks_exact_mut(4).zip(digest) {
        chunk.copy_from_slice(&w.to_be_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// SHA-1 of eight single-block messages at once, one per 32-bit lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn sha1_x8(blocks: &[[u32; 16]; LANES]) -> [[u32; 5]; LANES] {
    use std::arch::x86_64::*;

    #[inline(always)]
    fn rotl<const L: i32, const R: i32>(x: __m256i) -> __m256i {
        // SAFETY: only called from sha1_x8, which requires AVX2.
        unsafe { _mm256_or_si256(_mm256_slli_epi32::<L>(x), _mm256_srli_epi32::<R>(x)) }
    }

    const IV: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut w = [_mm256_setzero_si256(); 16];
    for (t, word) in w.iter_mut().enumerate() {
        let lane = |l: usize| blocks[l][t] as i32;
        *word = _mm256_setr_epi32(lane(0), lane(1), lane(2), lane(3), lane(4), lane(5), lane(6), lane(7));
    }
    let [mut a, mut b, mut c, mut d, mut e] = IV.map(|h| _mm256_set1_epi32(h as i32));
    // Four stretches of 20 rounds, each with its own function and constant, so that the
    // compiler sees both as fixed.
    macro_rules! rounds {
        ($range:expr, $k:expr, |$b:ident, $c:ident, $d:ident| $f:expr) => {
            for t in $range {
                let wt = if t < 16 {
                    w[t]
                } else {
                    let x = _mm256_xor_si256(
                        _mm256_xor_si256(w[(t - 3) & 15], w[(t - 8) & 15]),
                        _mm256_xor_si256(w[(t - 14) & 15], w[t & 15]),
                    );
                    w[t & 15] = rotl::<1, 31>(x);
                    w[t & 15]
                };
                let f = {
                    let ($b, $c, $d) = (b, c, d);
                    $f
                };
                let sum = _mm256_add_epi32(
                    _mm256_add_epi32(rotl::<5, 27>(a), f),
                    _mm256_add_epi32(_mm256_add_epi32(e, wt), _mm256_set1_epi32($k as i32)),
                );
                e = d;
                d = c;
                c = rotl::<30, 2>(b);
                b = a;
                a = sum;
            }
        };
    }
    rounds!(0..20, 0x5A82_7999u32, |b, c, d| _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d))));
    rounds!(20..40, 0x6ED9_EBA1u32, |b, c, d| _mm256_xor_si256(_mm256_xor_si256(b, c), d));
    rounds!(40..60, 0x8F1B_BCDCu32, |b, c, d| _mm256_or_si256(
        _mm256_and_si256(b, c),
        _mm256_and_si256(d, _mm256_or_si256(b, c))
    ));
    rounds!(60..80, 0xCA62_C1D6u32, |b, c, d| _mm256_xor_si256(_mm256_xor_si256(b, c), d));
    let mut out = [[0u32; 5]; LANES];
    for (i, (v, h)) in [a, b, c, d, e].into_iter().zip(IV).enumerate() {
        let mut lanes = [0u32; LANES];
        // SAFETY: `lanes` is 32 bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), _mm256_add_epi32(v, _mm256_set1_epi32(h as i32))) };
        for (digest, lane) in out.iter_mut().zip(lanes) {
            digest[i] = lane;
        }
    }
    out
}

#[cfg(test)]
#[path = "ids_tests.rs"]
mod tests;
