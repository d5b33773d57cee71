//! `aurore produce`: the load generator. Synthetic events (deterministic for a `--seed`) or
//! NDJSON lines from a file or stdin, published with an idempotent producer, asynchronous
//! delivery and a bounded number of messages in flight.
//!
//! It must never be the bench's bottleneck: each event is written into one reused buffer (no
//! allocation per event) and handed to librdkafka, which batches and compresses.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Statistics};

use crate::config::{KafkaSetting, ProduceArgs, redact_kafka_error};

#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
    pid_assigned: AtomicBool,
}

struct Delivery(Arc<Counts>);

impl ClientContext for Delivery {
    fn stats(&self, stats: Statistics) {
        if stats.eos.is_some_and(|e| e.idemp_state == "Assigned") {
            self.0.pid_assigned.store(true, Relaxed);
        }
    }
}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Relaxed),
            Err((e, _)) => {
                if self.0.failed.fetch_add(1, Relaxed) == 0 {
                    tracing::error!(error = %e, "delivery failed");
                }
                0
            }
        };
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// librdkafka's refusal, its values redacted ([`redact_kafka_error`]).
    #[error("invalid Kafka producer settings: {0}")]
    Config(String),
    #[error("cannot read {0}: {1}")]
    Input(String, std::io::Error),
    #[error("{0} of {1} messages were not delivered")]
    Undelivered(u64, u64),
    #[error("cannot publish to topic {0:?}: {1}")]
    Topic(String, String),
}

/// The summary printed at the end.
#[derive(Debug)]
pub struct Summary {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

pub fn run(args: ProduceArgs) -> Result<Summary, ProduceError> {
    let counts = Arc::new(Counts::default());
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.kafka_brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "10")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        // Bounded in flight: send() answers QueueFull beyond this many undelivered messages.
        .set("queue.buffering.max.messages", args.max_in_flight.to_string())
        .set("queue.buffering.max.kbytes", "1048576")
        // Statistics carry the idempotent producer's state (see below).
        .set("statistics.interval.ms", "100");
    for KafkaSetting { key: k, value: v } in &args.kafka_config {
        config.set(k, v);
    }
    let producer: ThreadedProducer<Delivery> = config
        .create_with_context(Delivery(counts.clone()))
        .map_err(|e| ProduceError::Config(redact_kafka_error(&args.kafka_config, &e)))?;
    // Connected, and the topic exists, before the first event is stamped: events must not wait
    // in the queue for the connection (that would count as end-to-end latency downstream), and
    // a missing topic is said at once instead of after message.timeout.ms.
    let metadata = producer
        .client()
        .fetch_metadata(Some(&args.topic), Duration::from_secs(30))
        .map_err(|e| ProduceError::Topic(args.topic.clone(), e.to_string()))?;
    if let Some(err) = metadata.topics().first().and_then(|t| t.error()) {
        return Err(ProduceError::Topic(args.topic.clone(), RDKafkaErrorCode::from(err).to_string()));
    }
    // The idempotent producer sends nothing before the broker gives it a producer id, which
    // takes 0.2 s or, when librdkafka's first try finds no broker up, 0.7 s (measured). The
    // statistics callback says when it has one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !counts.pid_assigned.load(Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    let mut out = Sender {
        producer: &producer,
        topic: &args.topic,
        counts: &counts,
        pacer: Pacer::new(args.rate),
        progress: Progress::new(args.count, counts.clone()),
        sent: 0,
    };
    match &args.input {
        Some(path) => {
            let mut reader: Box<dyn BufRead> = if path == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(|e| ProduceError::Input(path.clone(), e))?))
            };
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line).map_err(|e| ProduceError::Input(path.clone(), e))?;
                if n == 0 || (args.count > 0 && out.sent >= args.count) {
                    break;
                }
                let value = line.strip_suffix(b"\n").unwrap_or(&line);
                let value = value.strip_suffix(b"\r").unwrap_or(value);
                if !value.is_empty() {
                    out.send(value);
                }
            }
        }
        None => {
            let mut synth = Synthetic::new(&args);
            let mut buf = Vec::with_capacity(args.payload_bytes + 512);
            while args.count == 0 || out.sent < args.count {
                synth.next(&mut buf);
                out.send(&buf);
            }
        }
    }
    let (sent, progress) = (out.sent, out.progress);
    let _ = producer.flush(Duration::from_secs(120));
    let summary = Summary {
        sent,
        delivered: counts.delivered.load(Relaxed),
        failed: counts.failed.load(Relaxed),
        elapsed: started.elapsed(),
    };
    progress.finish(&summary);
    if summary.delivered < summary.sent {
        return Err(ProduceError::Undelivered(summary.sent - summary.delivered, summary.sent));
    }
    Ok(summary)
}

struct Sender<'a> {
    producer: &'a ThreadedProducer<Delivery>,
    topic: &'a str,
    counts: &'a Counts,
    pacer: Pacer,
    progress: Progress,
    sent: u64,
}

impl Sender<'_> {
    /// Queues one message; waits while --max-in-flight messages are undelivered.
    fn send(&mut self, value: &[u8]) {
        loop {
            match self.producer.send(BaseRecord::<(), [u8]>::to(self.topic).payload(value)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err((e, _)) => {
                    tracing::error!(error = %e, "message not queued");
                    self.counts.failed.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
        self.sent += 1;
        self.pacer.wait(self.sent);
        self.progress.tick(self.sent);
    }
}

/// Holds the send rate at `--rate` events per second (0: unlimited), in 10 ms steps.
struct Pacer {
    rate: u64,
    start: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Pacer { rate, start: Instant::now() }
    }

    fn wait(&mut self, sent: u64) {
        if self.rate == 0 || !sent.is_multiple_of((self.rate / 100).max(1)) {
            return;
        }
        let due = self.start + Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

/// Synthetic events: `--services` services, `--event-types` types each, realistic nested
/// payloads padded to `--payload-bytes`, `--invalid-ratio` of bad messages, and `--id-ratio`
/// of the valid ones with their own id.
pub(crate) struct Synthetic {
    rng: fastrand::Rng,
    services: Vec<String>,
    types: Vec<String>,
    payload_bytes: usize,
    invalid_ratio: f64,
    id_ratio: f64,
    seq: u64,
}

const SERVICE_NAMES: &[&str] =
    &["checkout", "billing", "auth", "search", "catalog", "shipping", "payments", "reviews", "inventory", "notifications"];
const TYPE_NAMES: &[&str] = &["created", "updated", "completed", "failed", "viewed", "deleted", "retried", "expired"];

impl Synthetic {
    pub(crate) fn new(args: &ProduceArgs) -> Self {
        let name = |list: &[&str], i: usize| {
            if i < list.len() { list[i].to_string() } else { format!("{}-{}", list[i % list.len()], i / list.len()) }
        };
        Synthetic {
            rng: fastrand::Rng::with_seed(args.seed),
            services: (0..args.services).map(|i| name(SERVICE_NAMES, i)).collect(),
            types: (0..args.event_types).map(|i| format!("event.{}", name(TYPE_NAMES, i))).collect(),
            payload_bytes: args.payload_bytes,
            invalid_ratio: args.invalid_ratio,
            id_ratio: args.id_ratio,
            seq: 0,
        }
    }

    pub(crate) fn next(&mut self, buf: &mut Vec<u8>) {
        buf.clear();
        self.seq += 1;
        if self.invalid_ratio > 0.0 && self.rng.f64() < self.invalid_ratio {
            self.invalid(buf);
            return;
        }
        let r = &mut self.rng;
        let service = &self.services[r.usize(..self.services.len())];
        let event_type = &self.types[r.usize(..self.types.len())];
        buf.push(b'{');
        // Drawn only when asked for, so that a seed without --id-ratio gives the same events as before.
        if self.id_ratio > 0.0 && r.f64() < self.id_ratio {
            let id = uuid::Builder::from_random_bytes(r.u128(..).to_le_bytes()).into_uuid();
            let _ = write!(buf, r#""id":"{id}","#);
        }
        let id_bytes = buf.len() - 1;
        let now = chrono::Utc::now();
        let _ = write!(
            buf,
            r#""service":"{service}","event_type":"{event_type}","timestamp":"{}","payload":{{"seq":{},"order_id":"ord-{:08x}","customer":{{"id":{},"tier":"{}","country":"{}"}},"items":["#,
            now.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            self.seq,
            r.u32(..),
            r.u32(1..1_000_000),
            ["free", "pro", "enterprise"][r.usize(..3)],
            ["FR", "DE", "US", "JP", "BR"][r.usize(..5)],
        );
        for i in 0..r.usize(1..4) {
            if i > 0 {
                buf.push(b',');
            }
            let _ = write!(
                buf,
                r#"{{"sku":"SKU-{:05}","qty":{},"price":{}.{:02}}}"#,
                r.u32(..100_000),
                r.u8(1..10),
                r.u16(1..1000),
                r.u8(..100)
            );
        }
        buf.extend_from_slice(br#"],"note":""#);
        // Pad the payload to the requested size with text of the printable ASCII range.
        let target = self.payload_bytes + 120 + id_bytes;
        while buf.len() < target {
            buf.push(b'a' + r.u8(..26));
        }
        buf.extend_from_slice(b"\"}}");
    }

    fn invalid(&mut self, buf: &mut Vec<u8>) {
        let kinds: [&[u8]; 6] = [
            br#"{"service":"checkout","event_type":"#,
            br#"{"event_type":"orphan"}"#,
            br#"[1,2,3]"#,
            br#"{"service":"checkout","event_type":"x","payload":{"k":"a\u0000b"}}"#,
            br#"{"service":"checkout","event_type":"x","timestamp":"yesterday"}"#,
            b"\xff\xfe not utf-8",
        ];
        buf.extend_from_slice(kinds[self.rng.usize(..kinds.len())]);
    }
}

/// A progress bar with rate and ETA on a terminal; otherwise a log line every 2 s (`producing`).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    counts: Arc<Counts>,
    started: Instant,
    next_line: Instant,
}

impl Progress {
    fn new(total: u64, counts: Arc<Counts>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = if total > 0 { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::no_length() };
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress { bar, counts, started: Instant::now(), next_line: Instant::now() + Duration::from_secs(2) }
    }

    fn tick(&mut self, sent: u64) {
        if !sent.is_multiple_of(4096) {
            return;
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(sent);
                bar.set_message(format!("delivered {}", self.counts.delivered.load(Relaxed)));
            }
            None => {
                let now = Instant::now();
                if now >= self.next_line {
                    self.next_line = now + Duration::from_secs(2);
                    let rate = sent as f64 / self.started.elapsed().as_secs_f64();
                    // A log event, so that it is a JSON line under --log-format json.
                    tracing::info!(
                        sent,
                        delivered = self.counts.delivered.load(Relaxed),
                        failed = self.counts.failed.load(Relaxed),
                        events_per_second = rate.round() as u64,
                        "producing"
                    );
                }
            }
        }
    }

    fn finish(&self, s: &Summary) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let rate = s.sent as f64 / s.elapsed.as_secs_f64().max(1e-9);
        println!(
            "produced: sent {}, delivered {}, failed {}, in {:.2} s, {:.0} events/s",
            s.sent,
            s.delivered,
            s.failed,
            s.elapsed.as_secs_f64(),
            rate
        );
    }
}

#[cfg(test)]
#[path = "produce_tests.rs"]
mod tests;
