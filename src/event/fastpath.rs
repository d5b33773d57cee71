//! The fast path of [`event::decode`](crate::event::decode): one pass over the bytes that
//! validates the JSON grammar and the storability rules together and yields the [`Event`], for
//! the common case only. Whatever it is not sure about (an escape in a key, a `\u` escape, an
//! exponent, deep nesting, a duplicate key, any error) it leaves to the general decoder, which
//! classifies and explains it. So it may only ever accept what the general decoder accepts, with
//! the same result; `fastpath_tests.rs` checks this on a large corpus of generated inputs.
//!
//! Pure: no I/O, no allocation unless the event has unknown top-level fields.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use uuid::Uuid;

use super::{Event, MAX_NAME_CHARS, MAX_TIMESTAMP_MICROS, MIN_TIMESTAMP_MICROS};

/// Nesting the fast path follows; deeper values go to the general decoder. 64 fits a `u64` of
/// "is this level an object" bits and is half of [`crate::event::MAX_DEPTH`].
const MAX_FAST_DEPTH: u32 = 64;
/// Longest number the fast path takes: without an exponent, only numbers of thousands of
/// digits can fall outside PostgreSQL's numeric range.
const MAX_FAST_NUMBER: usize = 1_000;

/// Decodes a message already known to be UTF-8, or `None` when the general decoder must decide.
pub fn decode(text: &str) -> Option<Event<'_>> {
    let mut s = Scanner { b: text.as_bytes(), i: 0 };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    let (mut id, mut service, mut event_type, mut timestamp, mut payload) = (None, None, None, None, None);
    let mut extra: Vec<(Cow<'_, str>, &str)> = Vec::new();
    if s.peek()? == b'}' {
        return None; // no fields: missing ones, for the general decoder to report
    }
    loop {
        let key = s.plain_string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            "id" => once(&mut id, if s.null() { None } else { Some(Uuid::try_parse(s.plain_string()?).ok()?) })?,
            "service" => once(&mut service, s.name()?)?,
            "event_type" | "type" => once(&mut event_type, s.name()?)?, // both present is an error
            "timestamp" => once(&mut timestamp, if s.null() { None } else { Some(rfc3339_micros(s.plain_string()?)?) })?,
            "payload" => {
                let start = s.i;
                s.value()?;
                once(&mut payload, &text[start..s.i])?;
            }
            _ => {
                if extra.iter().any(|(k, _)| k == key) {
                    return None;
                }
                let start = s.i;
                s.value()?;
                extra.push((Cow::Borrowed(key), &text[start..s.i]));
            }
        }
        s.ws();
        match s.next()? {
            b',' => s.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return None;
    }
    Some(Event {
        id: id.flatten(),
        service: Cow::Borrowed(service?),
        event_type: Cow::Borrowed(event_type?),
        timestamp_micros: timestamp.flatten(),
        payload,
        extra,
    })
}

fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    #[inline(always)]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn null(&mut self) -> bool {
        self.literal(b"null").is_some()
    }

    /// A non-empty `service` or `event_type` of at most [`MAX_NAME_CHARS`] bytes.
    fn name(&mut self) -> Option<&'a str> {
        Some(self.plain_string()?).filter(|n| !n.is_empty() && n.len() <= MAX_NAME_CHARS)
    }

    /// A string without escapes, borrowed.
    #[inline(always)]
    fn plain_string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let end = start + special_at(&self.b[start..])?;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        // Safety: the input is valid UTF-8 and `"` is ASCII, so both ends are char boundaries.
        Some(unsafe { std::str::from_utf8_unchecked(&self.b[start..end]) })
    }

    /// Skips a string whose escapes are all short (`\"`, `\n`...): a `\u` escape may encode NUL
    /// or a lone surrogate, which jsonb refuses, so it goes to the general decoder.
    #[inline(always)]
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.i += special_at(&self.b[self.i..])?;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => match self.b.get(self.i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    _ => return None,
                },
                _ => return None, // a control character: invalid JSON
            }
        }
    }

    /// Skips a number without exponent (`-`? int frac?), no longer than [`MAX_FAST_NUMBER`].
    #[inline(always)]
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let before = self.i;
            self.digits();
            if self.i == before {
                return None;
            }
        }
        // An exponent would need the range check; a digit after a leading 0 is invalid. Both are
        // caught by the caller, which accepts only a delimiter here.
        (self.i - start <= MAX_FAST_NUMBER).then_some(())
    }

    #[inline(always)]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b[self.i..].starts_with(word).then(|| self.i += word.len())
    }

    /// Skips one JSON value, validating it, without recursion.
    fn value(&mut self) -> Option<()> {
        let mut keys = Keys::new();
        let mut depth = 0u32;
        // Bit `d` says whether the container at depth `d + 1` is an object.
        let mut objects = 0u64;
        loop {
            // A value starts here.
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    self.ws();
                    let close = if open == b'{' { b'}' } else { b']' };
                    if self.peek()? == close {
                        self.i += 1;
                    } else {
                        if depth == MAX_FAST_DEPTH {
                            return None;
                        }
                        objects = objects & !(1 << depth) | (u64::from(open == b'{') << depth);
                        depth += 1;
                        if open == b'{' {
                            self.key(&mut keys, depth)?;
                        }
                        continue;
                    }
                }
                b'"' => self.string()?,
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return None,
            }
            // A value ended: close containers until one continues with `,`.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.ws();
                let object = objects >> (depth - 1) & 1 == 1;
                match (self.next()?, object) {
                    (b',', _) => {
                        self.ws();
                        if object {
                            self.key(&mut keys, depth)?;
                        }
                        break;
                    }
                    (b'}', true) => {
                        keys.close(depth);
                        depth -= 1;
                    }
                    (b']', false) => depth -= 1,
                    _ => return None,
                }
            }
        }
    }

    /// An object key (of the object at `depth`) and its colon, leaving the scanner at the
    /// value. `None` for a key the object already has, or one it cannot compare cheaply.
    #[inline(always)]
    fn key(&mut self, keys: &mut Keys<'a>, depth: u32) -> Option<()> {
        // A key with an escape compares decoded (`"a"` and `"\u0061"` are one key): the general
        // decoder's case.
        let key = self.plain_string()?;
        keys.add(key.as_bytes(), depth)?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }
}

/// The keys of the objects open in a value, to find a repeated one (jsonb would keep the last,
/// storing the event altered: the general decoder dead-letters it). On the stack and never
/// initialised beyond what is used (a value is scanned per payload and unknown field): a value
/// with more than [`Keys::MAX`] keys open at once goes to the general decoder.
struct Keys<'a> {
    /// (depth of the object, key) of each key, innermost object last; `..n` are written.
    at: [MaybeUninit<(u32, &'a [u8])>; Keys::MAX],
    n: usize,
}

impl<'a> Keys<'a> {
    const MAX: usize = 48;

    #[inline(always)]
    fn new() -> Self {
        Keys { at: [const { MaybeUninit::uninit() }; Keys::MAX], n: 0 }
    }

    /// The key of the object at `depth`; `None` if that object has it already.
    #[inline(always)]
    fn add(&mut self, key: &'a [u8], depth: u32) -> Option<()> {
        if self.n == Keys::MAX {
            return None;
        }
        for k in self.at[..self.n].iter().rev() {
            // SAFETY: `..n` are written.
            let &(d, seen) = unsafe { k.assume_init_ref() };
            if d != depth {
                break;
            }
            if seen == key {
                return None;
            }
        }
        self.at[self.n].write((depth, key));
        self.n += 1;
        Some(())
    }

    /// The object at `depth` closed.
    #[inline(always)]
    fn close(&mut self, depth: u32) {
        // SAFETY: `..n` are written.
        while self.n > 0 && unsafe { self.at[self.n - 1].assume_init_ref() }.0 == depth {
            self.n -= 1;
        }
    }
}

/// The index of the first `"`, `\` or control character: sixteen bytes at a time with SSE2
/// (part of every x86-64), then eight at a time.
#[inline(always)]
fn special_at(b: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
        };
        let mut at = 0;
        // SAFETY: SSE2 is always available on x86-64; each unaligned load reads 16 bytes
        // within `b`.
        unsafe {
            let (quote, backslash, control) = (_mm_set1_epi8(b'"' as i8), _mm_set1_epi8(b'\\' as i8), _mm_set1_epi8(0x1f));
            while at + 16 <= b.len() {
                let x = _mm_loadu_si128(b.as_ptr().add(at).cast::<__m128i>());
                // Unsigned x <= 0x1f exactly when min(x, 0x1f) == x.
                let hit = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(x, quote), _mm_cmpeq_epi8(x, backslash)),
                    _mm_cmpeq_epi8(_mm_min_epu8(x, control), x),
                );
                let mask = _mm_movemask_epi8(hit) as u32;
                if mask != 0 {
                    return Some(at + mask.trailing_zeros() as usize);
                }
                at += 16;
            }
        }
        special_at_swar(&b[at..]).map(|k| at + k)
    }
    #[cfg(not(target_arch = "x86_64"))]
    special_at_swar(b)
}

/// [`special_at`] eight bytes at a time.
#[inline(always)]
fn special_at_swar(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut at = 0;
    while let Some(chunk) = b.get(at..at + 8) {
        let x = u64::from_le_bytes(chunk.try_into().unwrap());
        let hit = has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            | (x.wrapping_sub(ONES * 0x20) & !x & HIGH); // some byte < 0x20
        if hit != 0 {
            // The lowest flagged byte is always a true hit; borrows only flag bytes above it.
            return Some(at + (hit.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|k| at + k)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, in Unix microseconds, the fraction rounded as
/// PostgreSQL rounds it ([`fraction_micros`](super::fraction_micros)); the shape almost every
/// producer sends. Anything else (lower-case letters, a leap second, more
/// than nine decimals) is left to chrono. `None` also when outside the accepted range.
pub fn rfc3339_micros(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        b.get(from..from + len)?.iter().try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
    };
    let sep = |at: usize, c: u8| (b.get(at) == Some(&c)).then_some(());
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    sep(4, b'-')?;
    sep(7, b'-')?;
    sep(10, b'T')?;
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    sep(13, b':')?;
    sep(16, b':')?;
    let mut at = 19;
    let mut micros = 0;
    if b.get(at) == Some(&b'.') {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=9).contains(&digits) {
            return None;
        }
        micros = super::fraction_micros(s.get(at..at + 1 + digits)?)?;
        at += 1 + digits;
    }
    let offset_secs = match *b.get(at)? {
        b'Z' if b.len() == at + 1 => 0,
        sign @ (b'+' | b'-') if b.len() == at + 6 => {
            sep(at + 3, b':')?;
            let (h, m) = (num(at + 1, 2)?, num(at + 4, 2)?);
            // Beyond PostgreSQL's 15:59: the general decoder refuses it and says why.
            if h * 3600 + m * 60 > super::MAX_UTC_OFFSET_SECS || m > 59 {
                return None;
            }
            (h * 3600 + m * 60) * if sign == b'+' { 1 } else { -1 }
        }
        _ => return None,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * 1_000_000 + micros).filter(|t| (MIN_TIMESTAMP_MICROS..=MAX_TIMESTAMP_MICROS).contains(t))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[path = "fastpath_tests.rs"]
mod tests;
