//! Everything that speaks to Kafka: the client and its callbacks ([`client`]), the poll loop
//! ([`poller`]) around a pure state machine ([`state`]) that owns every partition's fences,
//! open batches and progress ([`commits`]), executed through [`core`]; the burst queue
//! ([`queue`]); where partitions start ([`starts`], the poll thread's only waits on
//! PostgreSQL), with Kafka's topic ids ([`topic_ids`]); and whether the consumer is alive in its
//! group ([`liveness`]).
pub mod client;
pub mod commits;
pub mod core;
pub mod liveness;
pub mod poller;
pub mod queue;
pub mod starts;
pub mod state;
pub mod topic_ids;
