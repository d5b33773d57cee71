//! Storability: what jsonb refuses although it is valid JSON, checked on the general decoder's
//! payload and unknown fields (the fast path enforces the same rules as it scans).

use super::{Invalid, MAX_DEPTH, Reject};

/// What jsonb refuses although it is valid JSON: the `\u0000` escape (PostgreSQL text cannot
/// hold NUL), escapes of lone surrogates, numbers outside PostgreSQL's numeric range, and
/// nesting deeper than [`MAX_DEPTH`] (PostgreSQL's parser recurses).
/// One pass over the bytes, no allocation; strings are skipped except for their escapes.
pub(super) fn json_storable(field: &str, json: &str) -> Result<(), Invalid> {
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
                // The text may be invalid JSON (see `general::classify`): every index is checked.
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

/// Whether PostgreSQL's numeric input takes a JSON number (`numeric.c`, `set_var_from_str` and
/// `make_result`): an exponent of magnitude below `INT_MAX / 2`; a display scale (digits after
/// the point as written, less the exponent) of at most 16,383 (`NUMERIC_DSCALE_MAX`), zero
/// included; and, unless zero, a leading digit below 10^131072 (a base-10000 weight within
/// `int16`).
fn number_storable(field: &str, n: &str) -> Result<(), Invalid> {
    let refuse = || {
        Err(Invalid::new(
            Reject::NumberOutOfRange,
            format!("`{field}` holds a number outside PostgreSQL's numeric range: {n:.40}"),
        ))
    };
    let (mantissa, exp) = match n.find(['e', 'E']) {
        // strtol clamps an overflow, which then fails the bound as well.
        Some(p) => (&n[..p], n[p + 1..].parse::<i64>().unwrap_or(i64::MAX)),
        None => (n, 0),
    };
    if exp.unsigned_abs() >= (i32::MAX / 2) as u64 {
        return refuse();
    }
    let mantissa = mantissa.trim_start_matches('-');
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (frac.len() as i64 - exp).max(0) > 16_383 {
        return refuse();
    }
    let int = int.trim_start_matches('0');
    // The power of ten of the leading digit.
    let lead = if !int.is_empty() {
        int.len() as i64 - 1 + exp
    } else {
        match frac.bytes().position(|c| c != b'0') {
            Some(k) => -(k as i64) - 1 + exp,
            None => return Ok(()), // zero
        }
    };
    if lead >= 131_072 {
        return refuse();
    }
    Ok(())
}

#[cfg(test)]
#[path = "storable_tests.rs"]
mod tests;
