//! `--dead-letter-topic`: each dead letter also goes to a Kafka topic, value and key as they
//! came, with Kafka Connect's dead-letter-queue headers (`__connect.errors.topic`, `.partition`,
//! `.offset`, `.exception.class.name` = aurore's reason, `.exception.message` = the detail;
//! Connect's `DeadLetterQueueReporter`), and the original message's timestamp.
//!
//! The copies are produced, and their delivery awaited, *before* the batch's transaction
//! commits: a crash between the two leaves the copy produced and the batch not committed, so
//! the message is read again, dead-lettered again and produced again. The topic gets every dead
//! letter at least once (the headers name the original coordinates, to drop repeats), and
//! PostgreSQL exactly once. A topic that cannot be written holds the pipeline, as PostgreSQL
//! does: nothing is lost.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::config::{KafkaSetting, RunArgs};

/// Delivery of one batch's copies, at most.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// `--kafka-config` keys a producer takes too (connection and security); the others are the
/// consumer's.
const SHARED_PREFIXES: &[&str] =
    &["security.", "sasl.", "ssl.", "ssl_", "socket.", "broker.", "reconnect.", "client.", "enable.ssl"];

/// One dead letter's copy.
pub struct Copy<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub value: Option<&'a [u8]>,
    pub key: Option<&'a [u8]>,
    pub reason: &'a str,
    pub detail: &'a str,
    /// The original message's timestamp, Unix microseconds (`None`: not a time; the copy gets
    /// the time it is produced).
    pub timestamp_micros: Option<i64>,
}

pub struct DeadLetterTopic {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterTopic {
    /// A producer for `args.dead_letter_topic` (idempotent, acks=all).
    pub fn new(args: &RunArgs, topic: &str) -> Result<Self, KafkaError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &args.kafka_brokers)
            .set("client.id", "aurore-dead-letters")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string());
        for KafkaSetting { key: k, value: v } in &args.kafka_config {
            if SHARED_PREFIXES.iter().any(|p| k.starts_with(p)) {
                c.set(k, v);
            }
        }
        Ok(DeadLetterTopic { producer: c.create()?, topic: topic.to_owned() })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces every copy and waits until each is delivered: the first error if one is not.
    pub async fn send_all(&self, copies: &[Copy<'_>]) -> Result<usize, KafkaError> {
        let mut pending = Vec::with_capacity(copies.len());
        for c in copies {
            let (p, o) = (c.partition.to_string(), c.offset.to_string());
            let headers = OwnedHeaders::new()
                .insert(Header { key: "__connect.errors.topic", value: Some(c.topic) })
                .insert(Header { key: "__connect.errors.partition", value: Some(&p) })
                .insert(Header { key: "__connect.errors.offset", value: Some(&o) })
                .insert(Header { key: "__connect.errors.connector.name", value: Some("aurore") })
                .insert(Header { key: "__connect.errors.exception.class.name", value: Some(c.reason) })
                .insert(Header { key: "__connect.errors.exception.message", value: Some(c.detail) });
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
            if let Some(t) = c.timestamp_micros {
                record = record.timestamp(t.div_euclid(1000));
            }
            if let Some(v) = c.value {
                record = record.payload(v);
            }
            if let Some(k) = c.key {
                record = record.key(k);
            }
            pending.push(self.producer.send(record, DELIVERY_TIMEOUT));
        }
        let n = pending.len();
        for result in futures_util::future::join_all(pending).await {
            result.map_err(|(e, _)| e)?;
        }
        Ok(n)
    }

    /// Waits for what is in flight (at shutdown).
    pub fn flush(&self) {
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
