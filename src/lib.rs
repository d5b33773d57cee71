//! aurore drains JSON business events from Kafka into PostgreSQL with binary COPY, exactly
//! once, and tells its operators everything through Prometheus.
//!
//! A consumer-group member takes messages from Kafka in bursts on one thread, decodes and
//! validates each message and encodes it straight into the open batch of the flush worker that
//! owns its partition. A flush
//! worker persists a batch in one transaction: the fenced offset update, the COPY of the rows,
//! the dead letters and the hourly counts. Only after COMMIT are the offsets committed to Kafka
//! and the buffer space freed. PostgreSQL's `consumer_offsets` decides where every partition
//! resumes, so crashes, restarts and rebalances neither lose nor duplicate an event.
//!
//! # Layout
//! - [`config`]: the command line and environment, defaults with units, validation.
//! - [`app`]: wiring and the shutdown order; [`shutdown`]: the one shutdown signal.
//! - [`kafka::consumer`]: the consumer, its rebalance handshake and the poll loop;
//!   [`kafka::queue`]: the poll loop's own librdkafka queue, read in bursts;
//!   [`kafka::offsets`]: per-partition fences and epochs (pure); [`kafka::handoff`]: what
//!   workers report back.
//! - [`event`]: the wire format, decoded and validated (pure), with [`event::fastpath`] for the
//!   common case and [`ids`] for the derived ids of a burst (pure); [`copy`]: the binary COPY
//!   row encoder (pure); [`batch`]: batches of per-partition units and the reused row buffers
//!   (pure); [`buffer`]: the bounded buffer's accounting.
//! - [`sink::worker`]: the batch transaction, poison-row isolation, retries;
//!   [`sink::breaker`]: the circuit breaker (pure, on tokio's clock).
//! - [`db`]: the pool, migrations, queries and the error classification.
//! - [`metrics`], [`health`], [`http`]: what operators see.
//! - [`produce`]: the load generator behind `aurore produce`.

pub mod app;
pub mod batch;
pub mod buffer;
pub mod config;
pub mod copy;
pub mod db;
pub mod event;
pub mod health;
pub mod http;
pub mod ids;
pub mod kafka;
pub mod metrics;
pub mod produce;
pub mod shutdown;
pub mod sink;
