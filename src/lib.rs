//! aurore drains JSON business events from Kafka into PostgreSQL with binary COPY, exactly
//! once, and tells its operators everything through Prometheus.
//!
//! A consumer-group member takes messages from Kafka in bursts on one thread, decodes and
//! validates each message and encodes it straight into the open batch of the flush worker that
//! owns its partition. A flush worker persists a batch in one transaction: the fenced offset
//! update, the COPY of the rows, the dead letters and the hourly counts, and reports back. Only
//! then does the poll thread commit the offsets to Kafka and free the buffer space.
//! PostgreSQL's `consumer_offsets` decides where every partition resumes, so crashes, restarts
//! and rebalances neither lose nor duplicate an event.
//!
//! # Layout
//! Arrows point down only; [`kafka`] and [`sink`] never import each other, and [`pipeline`] and
//! [`event`] import neither (`tests/layering.rs` checks it).
//! - `main.rs` parses the command line and calls [`app::main`]; [`config`]: the command line and
//!   environment, defaults with units, validation; [`check`]: `aurore check`, what `run` needs,
//!   tried before a deploy.
//! - [`app`]: wiring (the poll thread, the flush workers, HTTP, the ticker) and the shutdown
//!   order; [`shutdown`]: the one shutdown signal.
//! - [`kafka`]: [`kafka::client`] (configuration, callbacks, the rebalance handshake),
//!   [`kafka::poller`] (the poll loop) around [`kafka::state`] (the pure `PollerState`: events in,
//!   commands out), [`kafka::commits`] (the one owner of a partition's progress),
//!   [`kafka::core`] (the state and its channels, executing commands), [`kafka::queue`] (the burst
//!   queue), [`kafka::starts`] (where partitions start: the poll thread's only waits on PostgreSQL),
//!   [`kafka::topic_ids`] (Kafka's topic ids, which tell a topic created again),
//!   [`kafka::liveness`] (a consumer stuck out of its group is recreated).
//! - [`sink`]: [`sink::worker`] (retries, breaker, abort, reports) apart from
//!   [`sink::transaction`] (fence, COPY or bisection, dead letters, counts, asynchronous COMMIT)
//!   and [`sink::durability`] (one WAL flush confirms what the workers committed meanwhile; only
//!   then is a batch reported), with every SQL text in [`sink::sql`].
//! - [`pipeline`], the vocabulary both sides speak (pure): [`pipeline::offsets`] (fences, epochs,
//!   starts), [`pipeline::batch`] (units, batches, reused row buffers), [`pipeline::handoff`] (the
//!   one return path), [`pipeline::progress`] (each worker's last finished batch),
//!   [`pipeline::buffer`] (accounting, back-pressure), [`pipeline::breaker`].
//! - [`event`]: the wire format, decoded and validated (pure), with [`event::fastpath`] for the
//!   common case; [`ids`]: derived ids of a burst (pure); [`copy`]: the binary COPY row encoder
//!   (pure).
//! - [`db`]: the pool, migrations, queries outside the batch transaction and [`db::classify`],
//!   the one function that decides what is retried; [`partitions`]: the time partitions of
//!   `events` and `dead_letters`, created ahead and dropped by retention.
//! - [`metrics`], [`health`], [`http`], [`logging`] (text or JSON lines, lists as JSON arrays):
//!   what operators see; [`produce`]: the load generator.

pub mod app;
pub mod check;
pub mod config;
pub mod copy;
pub mod db;
pub mod dead_letters;
pub mod event;
pub mod health;
pub mod http;
pub mod ids;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod partitions;
pub mod pipeline;
pub mod produce;
pub mod shutdown;
pub mod sink;
