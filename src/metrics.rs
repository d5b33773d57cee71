//! Every metric aurore exports, in one registry owned by the app.
//!
//! Names follow Prometheus conventions, and keep the original design's names exactly
//! (`buffer_size`, `events_throughput_per_second`, `business_events_by_service`, ...). Of those,
//! only `business_events_total` (a gauge ending in `_total`) draws a `promtool check metrics`
//! complaint; `integration-tests/tests/metric_names.rs` allows that one and fails on any other.
//! Hot-path updates are atomic adds; derived gauges are computed by
//! [`Health::report`](crate::health::Health::report) (buffer fill, health) and by the 5-second ticker (throughput, business counts).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::event::Reject;

pub struct Metrics {
    registry: Registry,

    pub buffer_size: IntGauge,
    pub buffer_size_bytes: IntGauge,
    pub buffer_capacity: IntGauge,
    pub buffer_capacity_bytes: IntGauge,
    pub buffer_utilization_percent: Gauge,
    pub buffer_events_enqueued_total: IntCounter,
    pub buffer_events_dropped_total: IntCounter,
    pub kafka_fetch_paused: IntGauge,

    pub events_throughput_per_second: Gauge,
    pub events_processed_total: IntCounter,
    pub events_dead_lettered_total: IntCounterVec,
    pub events_replayed_skipped_total: IntCounter,

    pub worker_batches_processed_total: IntCounter,
    pub worker_batch_processing_seconds: Histogram,
    pub worker_batch_size: Histogram,
    pub worker_flush_errors_total: IntCounterVec,
    pub worker_busy: IntGauge,
    pub offset_fence_conflicts_total: IntCounter,
    pub worker_batches_not_durable_total: IntCounter,
    pub worker_partition_moves_total: IntCounter,

    pub app_health_status: Gauge,
    pub circuit_breaker_state: IntGauge,
    pub database_connection_up: IntGauge,

    pub business_events_total: IntGauge,
    pub dead_letters_stored: IntGaugeVec,
    pub dead_letters_replayed_total: IntCounterVec,
    pub dead_letters_purged_total: IntCounterVec,
    pub business_events_by_service: IntGaugeVec,
    pub business_events_last_24h: IntGauge,
    pub business_events_last_24h_by_service: IntGaugeVec,

    pub kafka_consumer_lag: IntGaugeVec,
    pub kafka_consumer_lag_messages: IntGauge,
    pub kafka_assigned_partitions: IntGauge,
    pub kafka_rebalances_total: IntCounter,
    pub kafka_partitions_refused: IntGauge,
    pub kafka_consumer_recreated_total: IntCounter,
    pub kafka_offsets_lost_total: IntCounterVec,

    pub event_end_to_end_latency_seconds: Histogram,
    pub event_ingest_latency_seconds: Histogram,

    pub table_partitions: IntGaugeVec,
    pub table_partitions_bytes: IntGaugeVec,
    pub table_partition_oldest_timestamp_seconds: GaugeVec,
    pub table_partitions_ahead_seconds: GaugeVec,
    pub table_partitions_created_total: IntCounterVec,
    pub table_partitions_dropped_total: IntCounterVec,
    pub table_partition_interval_seconds: Gauge,
    pub table_partition_retention_seconds: Gauge,
    pub table_partition_maintenance_errors_total: IntCounter,
    pub table_partition_missing_total: IntCounter,
    pub table_partition_maintenance_seconds: Histogram,
}

const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("valid metric definition");
                registry.register(Box::new(m.clone())).expect("unique metric name");
                m
            }};
        }
        let gauge = |name: &str, help: &str| reg!(IntGauge::new(name, help));
        let fgauge = |name: &str, help: &str| reg!(Gauge::new(name, help));
        let counter = |name: &str, help: &str| reg!(IntCounter::new(name, help));
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            reg!(Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)))
        };

        let m = Metrics {
            buffer_size: gauge(
                "buffer_size",
                "Events fetched from Kafka and not yet persisted (rows and dead letters), in events.",
            ),
            buffer_size_bytes: gauge("buffer_size_bytes", "Bytes of message values fetched from Kafka and not yet persisted."),
            buffer_capacity: gauge(
                "buffer_capacity",
                "Buffer capacity in events (--buffer-capacity); fetching pauses when it is reached.",
            ),
            buffer_capacity_bytes: gauge(
                "buffer_capacity_bytes",
                "Buffer capacity in bytes: --buffer-capacity-bytes less librdkafka's prefetch share.",
            ),
            buffer_utilization_percent: fgauge(
                "buffer_utilization_percent",
                "Buffer fill, in percent of the fuller of its two capacities (events, bytes).",
            ),
            buffer_events_enqueued_total: counter(
                "buffer_events_enqueued_total",
                "Events taken from Kafka into the buffer, in events.",
            ),
            buffer_events_dropped_total: counter(
                "buffer_events_dropped_total",
                "Events dropped by the buffer: always 0, a full buffer pauses fetching instead.",
            ),
            kafka_fetch_paused: gauge(
                "kafka_fetch_paused",
                "1 while no messages are taken from Kafka (buffer full: held, then paused after 1 s; or circuit breaker open), else 0.",
            ),

            events_throughput_per_second: fgauge(
                "events_throughput_per_second",
                "Events persisted per second (rows and dead letters), averaged over the last 5 s.",
            ),
            events_processed_total: counter("events_processed_total", "Events persisted as rows of the events table, in events."),
            events_dead_lettered_total: reg!(IntCounterVec::new(
                Opts::new("events_dead_lettered_total", "Messages persisted as dead letters, by reason, in messages."),
                &["reason"]
            )),
            events_replayed_skipped_total: counter(
                "events_replayed_skipped_total",
                "Messages below a partition's persisted offset, skipped as already stored.",
            ),

            worker_batches_processed_total: counter(
                "worker_batches_processed_total",
                "Batches committed to PostgreSQL by the flush workers.",
            ),
            worker_batch_processing_seconds: histogram(
                "worker_batch_processing_seconds",
                "Time from a batch reaching its flush worker to its commit, retries included, in seconds.",
                prometheus::exponential_buckets(0.001, 2.0, 16).expect("buckets"),
            ),
            worker_batch_size: histogram(
                "worker_batch_size",
                "Events (rows and dead letters) per committed batch.",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0],
            ),
            worker_flush_errors_total: reg!(IntCounterVec::new(
                Opts::new(
                    "worker_flush_errors_total",
                    "Failed attempts to persist a batch, by kind: transient (retried), data (rows isolated), fence (partition owned elsewhere), fatal."
                ),
                &["kind"]
            )),
            worker_busy: gauge("worker_busy", "Flush workers currently persisting a batch."),
            offset_fence_conflicts_total: counter(
                "offset_fence_conflicts_total",
                "Units rolled back because consumer_offsets had moved on: another instance owns the partition.",
            ),
            worker_batches_not_durable_total: counter(
                "worker_batches_not_durable_total",
                "Committed batches not confirmed durable (PostgreSQL restarted, or the confirming connection was lost, before a flush past them): their partitions are read again from PostgreSQL, and what it lost from Kafka.",
            ),
            worker_partition_moves_total: counter(
                "worker_partition_moves_total",
                "Partitions moved from a flush worker with a backlog to an idle one, while units of them were still at the first.",
            ),

            app_health_status: fgauge("app_health_status", "Overall health: 1 healthy, 0.5 degraded, 0 down."),
            circuit_breaker_state: gauge("circuit_breaker_state", "PostgreSQL circuit breaker: 0 closed, 1 half-open, 2 open."),
            database_connection_up: gauge("database_connection_up", "1 if the last PostgreSQL operation succeeded, else 0."),

            business_events_total: gauge(
                "business_events_total",
                "Events persisted since the table began, from event_counts, in events.",
            ),
            dead_letters_stored: reg!(IntGaugeVec::new(
                Opts::new(
                    "dead_letters_stored",
                    "Dead letters in the table now, by topic and reason, from dead_letter_counts (kept in the transactions that store, replay and purge them), in messages."
                ),
                &["topic", "reason"]
            )),
            dead_letters_replayed_total: reg!(IntCounterVec::new(
                Opts::new(
                    "dead_letters_replayed_total",
                    "Dead letters that became events through aurore dead-letters replay (any process) since this one started, by topic and the reason they had, from dead_letter_counts, in messages."
                ),
                &["topic", "reason"]
            )),
            dead_letters_purged_total: reg!(IntCounterVec::new(
                Opts::new(
                    "dead_letters_purged_total",
                    "Dead letters deleted by aurore dead-letters purge (any process) since this one started, by topic and reason, from dead_letter_counts, in messages."
                ),
                &["topic", "reason"]
            )),
            business_events_by_service: reg!(IntGaugeVec::new(
                Opts::new(
                    "business_events_by_service",
                    "Events persisted per service, from event_counts, in events (services beyond --max-service-labels are summed as \"other\")."
                ),
                &["service"]
            )),
            business_events_last_24h: gauge(
                "business_events_last_24h",
                "Events whose event time falls in the last 24 hours (hour-granular), from event_counts.",
            ),
            business_events_last_24h_by_service: reg!(IntGaugeVec::new(
                Opts::new(
                    "business_events_last_24h_by_service",
                    "Events in the last 24 hours of event time per service, from event_counts."
                ),
                &["service"]
            )),

            kafka_consumer_lag: reg!(IntGaugeVec::new(
                Opts::new(
                    "kafka_consumer_lag",
                    "Messages between the partition's high watermark and this group's committed offset, from librdkafka statistics."
                ),
                &["topic", "partition"]
            )),
            kafka_consumer_lag_messages: gauge(
                "kafka_consumer_lag_messages",
                "Sum of kafka_consumer_lag over the partitions assigned to this instance, in messages.",
            ),
            kafka_assigned_partitions: gauge("kafka_assigned_partitions", "Partitions currently assigned to this instance."),
            kafka_rebalances_total: counter(
                "kafka_rebalances_total",
                "Rebalance callbacks (assignments and revocations) received from the group.",
            ),
            kafka_partitions_refused: gauge(
                "kafka_partitions_refused",
                "Partitions not read because the position stored in PostgreSQL lies beyond their log end (the topic was created again); see aurore archive-topic.",
            ),
            kafka_consumer_recreated_total: counter(
                "kafka_consumer_recreated_total",
                "Kafka consumers recreated because they stayed out of their group while a broker answered (--group-liveness-timeout).",
            ),
            kafka_offsets_lost_total: reg!(IntCounterVec::new(
                Opts::new(
                    "kafka_offsets_lost_total",
                    "Offsets Kafka deleted (retention) before aurore stored them, by partition, in offsets."
                ),
                &["topic", "partition"]
            )),

            event_end_to_end_latency_seconds: histogram(
                "event_end_to_end_latency_seconds",
                "Persist time minus the event's timestamp, in seconds.",
                LATENCY_BUCKETS.to_vec(),
            ),
            event_ingest_latency_seconds: histogram(
                "event_ingest_latency_seconds",
                "Persist time minus the Kafka message timestamp (append or create time), in seconds.",
                LATENCY_BUCKETS.to_vec(),
            ),

            table_partitions: reg!(IntGaugeVec::new(
                Opts::new("table_partitions", "Time partitions attached to the table (events, dead_letters)."),
                &["table"]
            )),
            table_partitions_bytes: reg!(IntGaugeVec::new(
                Opts::new("table_partitions_bytes", "On-disk size of the table's partitions (heap, indexes, TOAST), in bytes."),
                &["table"]
            )),
            table_partition_oldest_timestamp_seconds: reg!(GaugeVec::new(
                Opts::new(
                    "table_partition_oldest_timestamp_seconds",
                    "Start of the oldest partition's range of received_at (what --retention drops next; the old table attached by migration V8 counts from its end), in Unix seconds."
                ),
                &["table"]
            )),
            table_partitions_ahead_seconds: reg!(GaugeVec::new(
                Opts::new(
                    "table_partitions_ahead_seconds",
                    "How far past now (the database's clock) the table's partitions reach without a gap, in seconds; below --partition-interval the next partition is missing."
                ),
                &["table"]
            )),
            table_partitions_created_total: reg!(IntCounterVec::new(
                Opts::new("table_partitions_created_total", "Partitions created by this process, by table."),
                &["table"]
            )),
            table_partitions_dropped_total: reg!(IntCounterVec::new(
                Opts::new("table_partitions_dropped_total", "Partitions dropped by this process for --retention, by table."),
                &["table"]
            )),
            table_partition_interval_seconds: fgauge(
                "table_partition_interval_seconds",
                "Length of a new partition (--partition-interval), in seconds.",
            ),
            table_partition_retention_seconds: fgauge(
                "table_partition_retention_seconds",
                "Partitions whose range ended longer ago than this are dropped (--retention), in seconds; 0 keeps everything.",
            ),
            table_partition_maintenance_errors_total: counter(
                "table_partition_maintenance_errors_total",
                "Partition maintenance passes that failed (tried again at the next pass).",
            ),
            table_partition_missing_total: counter(
                "table_partition_missing_total",
                "Flush attempts that found no partition for their rows' received_at; the batch is retried, never lost, and a maintenance pass runs at once.",
            ),
            table_partition_maintenance_seconds: histogram(
                "table_partition_maintenance_seconds",
                "Duration of a partition maintenance pass (create ahead, retention drops, sizes), in seconds.",
                prometheus::exponential_buckets(0.001, 4.0, 10).expect("buckets"),
            ),
            registry,
        };
        for table in crate::db::PARTITIONED_TABLES {
            m.table_partitions_created_total.with_label_values(&[table]);
            m.table_partitions_dropped_total.with_label_values(&[table]);
        }
        for reason in Reject::ALL {
            m.events_dead_lettered_total.with_label_values(&[reason.label()]);
        }
        for kind in ["transient", "data", "fence", "fatal"] {
            m.worker_flush_errors_total.with_label_values(&[kind]);
        }
        m
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
