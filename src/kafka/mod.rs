//! Everything that speaks to Kafka.
pub mod offsets;
