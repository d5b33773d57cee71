//! aurore: drains JSON business events from Kafka into PostgreSQL.
pub mod event;
