//! The vocabulary the Kafka side and the PostgreSQL side both speak, pure and unit-tested: it
//! imports neither of them.
//!
//! - [`offsets`]: per-partition fences, positions and epochs, and where a partition [`Start`]s.
//! - [`batch`]: units and batches as the poll thread builds them, and their reused row buffers.
//! - [`handoff`]: the one return path, worker → poll thread ([`Report`]).
//! - [`progress`]: how far each flush worker has got, which lets partitions move between them.
//! - [`buffer`]: the bounded buffer's accounting and back-pressure (hold, then pause).
//! - [`breaker`]: the circuit breaker around PostgreSQL.
//!
//! [`Start`]: offsets::Start
//! [`Report`]: handoff::Report

pub mod batch;
pub mod breaker;
pub mod buffer;
pub mod handoff;
pub mod offsets;
pub mod progress;

/// The wall clock in Unix microseconds (0 before 1970), the unit of every event time here.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}
