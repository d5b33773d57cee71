//! Persisting batches: the flush workers' loop ([`worker`]: retries, breaker, abort, reports)
//! apart from the transaction itself ([`transaction`]), and every SQL text it runs ([`sql`]).
pub mod sql;
pub mod transaction;
pub mod worker;
