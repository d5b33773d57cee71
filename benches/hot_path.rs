//! The per-event hot path on one core: decode + validate, COPY row encoding, and both, for a
//! typical ~420-byte event (as `aurore produce` makes them), and for the same event carrying
//! its own id (`aurore produce --id-ratio`), which needs no derived id; and the routing of a
//! message to its flush worker among many partitions. Throughput is in events/s.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aurore::copy::{Row, encode_row};
use aurore::event::{decode, decode_general, derived_id};
use aurore::ids::derive_ids;
use aurore::pipeline::batch::Batcher;
use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENT: &[u8] = br#"{"service":"checkout","event_type":"event.completed","timestamp":"2026-11-27T20:07:54.182461Z","payload":{"seq":27,"order_id":"ord-25ff8a08","customer":{"id":425582,"tier":"pro","country":"DE"},"items":[{"sku":"SKU-04411","qty":3,"price":112.50},{"sku":"SKU-99120","qty":1,"price":7.99}],"note":"qwhxcbzlqpuvkalsdjfhgqowieuryt bvnmxcaslkdjfhgpqowieurytzmxncbvalskdjfhgqpwoeiruty zmxncbvalskdjfhgqpwoeirutyzmxncbvalskdjfhgqpwoeiruty"}}"#;
/// [`EVENT`] with an `"id"` of its own, as `aurore produce --id-ratio` makes them.
const EVENT_WITH_ID: &[u8] = br#"{"id":"0b6e3f2a-9c41-4d7e-8f15-3a2c6d9e7b40","service":"checkout","event_type":"event.completed","timestamp":"2026-11-27T20:07:54.182461Z","payload":{"seq":27,"order_id":"ord-25ff8a08","customer":{"id":425582,"tier":"pro","country":"DE"},"items":[{"sku":"SKU-04411","qty":3,"price":112.50},{"sku":"SKU-99120","qty":1,"price":7.99}],"note":"qwhxcbzlqpuvkalsdjfhgqowieuryt bvnmxcaslkdjfhgpqowieurytzmxncbvalskdjfhgqpwoeiruty zmxncbvalskdjfhgqpwoeirutyzmxncbvalskdjfhgqpwoeiruty"}}"#;

fn hot_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(5));

    g.bench_function("decode_validate", |b| b.iter(|| decode(black_box(Some(EVENT)), 1 << 20).unwrap()));
    g.bench_function("decode_validate_with_id", |b| b.iter(|| decode(black_box(Some(EVENT_WITH_ID)), 1 << 20).unwrap()));
    // The general decoder alone (serde_json, then the storability scan): what the fast path saves.
    let text = std::str::from_utf8(EVENT).unwrap();
    g.bench_function("decode_validate_general", |b| b.iter(|| decode_general(black_box(text)).unwrap()));

    let event = decode(Some(EVENT), 1 << 20).unwrap();
    let mut buf = BytesMut::with_capacity(64 << 20);
    g.bench_function("encode_row", |b| {
        b.iter(|| {
            if buf.len() > (60 << 20) {
                buf.clear();
            }
            encode_row(
                &mut buf,
                black_box(&Row {
                    topic: "events",
                    partition: 3,
                    offset: 42,
                    id: derived_id("events", 3, 42),
                    service: &event.service,
                    event_type: &event.event_type,
                    occurred_at: event.timestamp_micros.unwrap(),
                    payload: event.payload,
                    extra: &event.extra,
                }),
            )
        })
    });

    // The derived id of an event without one: one SHA-1 at a time, and a burst of 256 at once
    // (eight AVX2 lanes, as the poll loop does it); per event.
    let mut offset = 0i64;
    g.bench_function("derived_id", |b| {
        b.iter(|| {
            offset += 1;
            derived_id(black_box("events"), 3, offset)
        })
    });
    g.throughput(Throughput::Elements(256));
    let mut ids = [uuid::Uuid::nil(); 256];
    g.bench_function("derived_ids_burst", |b| {
        b.iter(|| {
            offset += 256;
            derive_ids((0..256u32).map(|i| (black_box("events"), 3, offset + i64::from(i))), &mut ids);
            black_box(&ids);
        })
    });
    g.throughput(Throughput::Elements(1));

    // What the poll thread does per message: decode, validate, derive the id, encode into the
    // open unit with its counts; a batch is taken every 5,000 events, as in production.
    let topic: Arc<str> = Arc::from("events");
    let mut batcher = Batcher::new(1, 5_000, Duration::from_secs(3600));
    let mut offset = 0i64;
    g.bench_function("decode_validate_encode_batch", |b| {
        b.iter(|| {
            let ev = decode(black_box(Some(EVENT)), 1 << 20).unwrap();
            let id = ev.id.unwrap_or_else(|| derived_id("events", 0, offset));
            batcher.unit(0, &topic, 0, 1).push_event(&ev, offset, 1_764_000_000_000_000, id, EVENT.len());
            offset += 1;
            if batcher.is_full(0) {
                black_box(batcher.take(0, |_| Some(aurore::pipeline::offsets::Fence::Absent)));
            }
        })
    });
    // The same for an event that carries its own id: no id to derive.
    let mut batcher = Batcher::new(1, 5_000, Duration::from_secs(3600));
    let mut offset = 0i64;
    g.bench_function("decode_validate_encode_batch_with_id", |b| {
        b.iter(|| {
            let ev = decode(black_box(Some(EVENT_WITH_ID)), 1 << 20).unwrap();
            let id = ev.id.unwrap_or_else(|| derived_id("events", 0, offset));
            batcher.unit(0, &topic, 0, 1).push_event(&ev, offset, 1_764_000_000_000_000, id, EVENT_WITH_ID.len());
            offset += 1;
            if batcher.is_full(0) {
                black_box(batcher.take(0, |_| Some(aurore::pipeline::offsets::Fence::Absent)));
            }
        })
    });
    // The worker of each message's partition, when every message comes from another of 1,000
    // partitions (a topic of many partitions, each at a low rate): a lookup by partition, not a
    // search through every partition seen.
    let mut batcher = Batcher::new(2, 5_000, Duration::from_secs(3600));
    let mut i = 0i32;
    g.bench_function("route_1000_partitions", |b| {
        b.iter(|| {
            i = (i + 1) % 1000;
            batcher.route(black_box(&topic), i)
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
