//! The state /health reports, and how it adds up to healthy, degraded or down (pure).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::metrics::Metrics;
use crate::pipeline::breaker::{Breaker, State as BreakerState};
use crate::pipeline::buffer::Buffer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum KafkaState {
    Unknown = 0,
    Ok = 1,
    BrokersDown = 2,
    TopicMissing = 3,
    /// A partition is refused: its stored position lies beyond its log end.
    Refused = 4,
    /// Out of the group while a broker answers, longer than `--group-liveness-timeout`: the
    /// consumer is being recreated.
    NotInGroup = 5,
    /// The poll thread has not come back for `--group-liveness-timeout` plus 10 s: the process
    /// is stopping.
    PollStalled = 6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Degraded,
    Down,
}

impl Status {
    pub fn value(self) -> f64 {
        match self {
            Status::Healthy => 1.0,
            Status::Degraded => 0.5,
            Status::Down => 0.0,
        }
    }
}

pub struct Health {
    started: Instant,
    pub migrated: AtomicBool,
    /// The consumer has received its first assignment from the group.
    pub joined: AtomicBool,
    kafka: AtomicU8,
    pub metrics: Arc<Metrics>,
    pub breaker: Arc<Breaker>,
    pub buffer: Arc<Buffer>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub status: Status,
    pub kafka: KafkaReport,
    pub database: DatabaseReport,
    pub circuit_breaker: &'static str,
    pub buffer: BufferReport,
    /// Seconds since start.
    pub uptime: u64,
}

#[derive(Debug, Serialize)]
pub struct KafkaReport {
    pub state: KafkaState,
    pub joined: bool,
    pub assigned_partitions: i64,
    pub fetch_paused: bool,
    pub lag: i64,
}

#[derive(Debug, Serialize)]
pub struct DatabaseReport {
    pub up: bool,
    pub migrated: bool,
}

#[derive(Debug, Serialize)]
pub struct BufferReport {
    pub size: usize,
    pub capacity: usize,
    pub bytes: usize,
    pub capacity_bytes: usize,
    pub utilization_percent: f64,
}

impl Health {
    pub fn new(metrics: Arc<Metrics>, breaker: Arc<Breaker>, buffer: Arc<Buffer>) -> Self {
        Health {
            started: Instant::now(),
            migrated: AtomicBool::new(false),
            joined: AtomicBool::new(false),
            kafka: AtomicU8::new(KafkaState::Unknown as u8),
            metrics,
            breaker,
            buffer,
        }
    }

    pub fn set_kafka(&self, s: KafkaState) {
        self.kafka.store(s as u8, Ordering::Relaxed);
    }

    /// What /health says of Kafka: a refused partition outranks the connection's state.
    pub fn kafka_reported(&self) -> KafkaState {
        if self.metrics.kafka_partitions_refused.get() > 0 {
            return KafkaState::Refused;
        }
        self.kafka()
    }

    /// The connection's state, as the poll thread last set it.
    pub fn kafka(&self) -> KafkaState {
        match self.kafka.load(Ordering::Relaxed) {
            1 => KafkaState::Ok,
            2 => KafkaState::BrokersDown,
            3 => KafkaState::TopicMissing,
            4 => KafkaState::Refused,
            5 => KafkaState::NotInGroup,
            6 => KafkaState::PollStalled,
            _ => KafkaState::Unknown,
        }
    }

    pub fn db_up(&self) -> bool {
        self.metrics.database_connection_up.get() == 1
    }

    /// Ready for traffic: migrated, in the group, and the database answers.
    pub fn ready(&self) -> bool {
        self.migrated.load(Ordering::Relaxed) && self.joined.load(Ordering::Relaxed) && self.db_up()
    }

    /// Also refreshes the gauges derived from the same state.
    pub fn report(&self) -> Report {
        let breaker = self.breaker.state();
        let m = &self.metrics;
        m.buffer_size.set(self.buffer.events() as i64);
        m.buffer_size_bytes.set(self.buffer.bytes() as i64);
        m.buffer_utilization_percent.set(self.buffer.utilization_percent());
        m.circuit_breaker_state.set(breaker as i64);
        let status = status(self.db_up(), breaker, self.kafka_reported(), self.buffer.is_full());
        m.app_health_status.set(status.value());
        Report {
            status,
            kafka: KafkaReport {
                state: self.kafka_reported(),
                joined: self.joined.load(Ordering::Relaxed),
                assigned_partitions: m.kafka_assigned_partitions.get(),
                fetch_paused: m.kafka_fetch_paused.get() == 1,
                lag: m.kafka_consumer_lag_messages.get(),
            },
            database: DatabaseReport { up: self.db_up(), migrated: self.migrated.load(Ordering::Relaxed) },
            circuit_breaker: breaker.label(),
            buffer: BufferReport {
                size: self.buffer.events(),
                capacity: self.buffer.capacity_events,
                bytes: self.buffer.bytes(),
                capacity_bytes: self.buffer.capacity_bytes,
                utilization_percent: self.buffer.utilization_percent(),
            },
            uptime: self.started.elapsed().as_secs(),
        }
    }
}

/// Down: events cannot reach PostgreSQL (circuit open) or cannot be read (no broker, topic
/// missing, a partition refused). Degraded: it works, but not fully (database errors being
/// retried, breaker probing, buffer full so fetching is paused).
pub fn status(db_up: bool, breaker: BreakerState, kafka: KafkaState, buffer_full: bool) -> Status {
    let kafka_down = matches!(
        kafka,
        KafkaState::BrokersDown
            | KafkaState::TopicMissing
            | KafkaState::Refused
            | KafkaState::NotInGroup
            | KafkaState::PollStalled
    );
    if breaker == BreakerState::Open || kafka_down {
        Status::Down
    } else if !db_up || breaker == BreakerState::HalfOpen || buffer_full {
        Status::Degraded
    } else {
        Status::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rules() {
        use BreakerState::*;
        assert_eq!(status(true, Closed, KafkaState::Ok, false), Status::Healthy);
        assert_eq!(status(true, Closed, KafkaState::Unknown, false), Status::Healthy);
        assert_eq!(status(false, Closed, KafkaState::Ok, false), Status::Degraded);
        assert_eq!(status(true, HalfOpen, KafkaState::Ok, false), Status::Degraded);
        assert_eq!(status(true, Closed, KafkaState::Ok, true), Status::Degraded);
        assert_eq!(status(false, Open, KafkaState::Ok, false), Status::Down);
        assert_eq!(status(true, Closed, KafkaState::TopicMissing, false), Status::Down);
        assert_eq!(status(true, Closed, KafkaState::BrokersDown, false), Status::Down);
        assert_eq!(status(true, Closed, KafkaState::Refused, false), Status::Down);
        assert_eq!(status(true, Closed, KafkaState::NotInGroup, false), Status::Down);
    }
}
