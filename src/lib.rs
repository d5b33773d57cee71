//! aurore: drains JSON business events from Kafka into PostgreSQL.
pub mod batch;
pub mod copy;
pub mod event;
pub mod kafka;
