//! Persisting batches: the flush workers and the circuit breaker they share.
pub mod breaker;
pub mod worker;
