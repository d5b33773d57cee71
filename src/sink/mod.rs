//! Persisting batches: the flush workers' loop ([`worker`]: retries, breaker, abort, reports)
//! apart from the transaction itself ([`transaction`]), every SQL text it runs ([`sql`]), the
//! confirmation that committed batches are durable before they are acknowledged
//! ([`durability`]), and
//! the optional copy of each dead letter to a Kafka topic ([`dead_letter_topic`]).
pub mod dead_letter_topic;
pub mod durability;
pub mod sql;
pub mod transaction;
pub mod worker;
