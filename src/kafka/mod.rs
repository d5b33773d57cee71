//! Everything that speaks to Kafka.
pub mod consumer;
pub mod handoff;
pub mod offsets;
pub mod queue;
