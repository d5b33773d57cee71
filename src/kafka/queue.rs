//! The poll thread's own librdkafka queue, read in batches.
//!
//! Every partition is forwarded here when it is assigned, and the poll loop takes up to a burst
//! of messages with one `rd_kafka_consume_batch_queue` call. `BaseConsumer::poll` hands out one
//! message per call, and each call pays two clock reads, a mutex-guarded telemetry average, a
//! partition lock and an allocation; a batch pays them once. Events (rebalances, commit results,
//! statistics, errors) stay on the consumer's queue and are served by `BaseConsumer::poll`.
//!
//! librdkafka keeps a forward set by the application across fetch (re)starts, drops messages of
//! an older fetch version (after a seek, pause or revoke) inside the batch call as `poll` does,
//! and moves the application position past every message returned.

use std::ffi::{CStr, CString};
use std::os::raw::c_int;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;

/// The most messages taken in one call.
pub const BURST: usize = 256;

/// Owns the queue; destroy it (drop) before the consumer it was made from.
pub struct MessageQueue {
    queue: *mut rd::rd_kafka_queue_t,
}

// SAFETY: librdkafka's queues are locked internally; the handle may move between threads.
unsafe impl Send for MessageQueue {}

impl MessageQueue {
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Self {
        // SAFETY: the client pointer is valid for the consumer's life, which outlives the queue.
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        assert!(!queue.is_null(), "rd_kafka_queue_new returned null");
        MessageQueue { queue }
    }

    /// Moves up to `max` (at most [`BURST`]) messages into `into`, waiting up to `timeout` for
    /// the first one only: it never waits with messages in hand.
    pub fn take(&self, timeout: Duration, max: usize, into: &mut Messages) {
        debug_assert_eq!(into.len, 0);
        let max = max.min(BURST);
        if max == 0 {
            return;
        }
        // The batch call waits until it has `max` messages or the timeout expires, so wait for
        // one message at most, then take what else is there without waiting.
        let mut n = self.consume(0, max, &mut into.ptrs);
        if n == 0 && !timeout.is_zero() {
            n = self.consume(timeout.as_millis().min(c_int::MAX as u128) as c_int, 1, &mut into.ptrs);
            if n == 1 && max > 1 {
                n += self.consume(0, max - 1, &mut into.ptrs[1..]);
            }
        }
        into.len = n;
    }

    fn consume(&self, timeout_ms: c_int, max: usize, ptrs: &mut [*mut rd::rd_kafka_message_t]) -> usize {
        debug_assert!(max <= ptrs.len());
        // SAFETY: `ptrs` has room for `max` pointers; the queue is alive.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(self.queue, timeout_ms, ptrs.as_mut_ptr(), max) };
        usize::try_from(n).unwrap_or(0)
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_queue_new and destroyed once. Partitions still forwarded
        // here drop their messages from now on (the queue is disabled, not freed, while they
        // hold it).
        unsafe { rd::rd_kafka_queue_destroy(self.queue) }
    }
}

/// What the rebalance callback uses to forward newly assigned partitions to the queue.
pub struct Forwarder {
    queue: AtomicPtr<rd::rd_kafka_queue_t>,
}

impl Forwarder {
    /// No queue: partitions keep delivering to the consumer's queue.
    pub fn none() -> Self {
        Forwarder { queue: AtomicPtr::new(ptr::null_mut()) }
    }

    pub fn set(&self, queue: &MessageQueue) {
        self.queue.store(queue.queue, Ordering::Release);
    }

    /// Call before the queue is destroyed.
    pub fn clear(&self) {
        self.queue.store(ptr::null_mut(), Ordering::Release);
    }

    /// Forwards the partition's messages to the queue; call before assigning it. On failure
    /// (false) its messages come through `BaseConsumer::poll` instead, which also works.
    pub fn forward<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, topic: &str, partition: i32) -> bool {
        let queue = self.queue.load(Ordering::Acquire);
        if queue.is_null() {
            return false;
        }
        let Ok(name) = CString::new(topic) else { return false };
        // SAFETY: the client and `queue` are alive (cleared before destruction); the partition
        // queue handle is released right after setting the forward, which stays.
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(consumer.client().native_ptr(), name.as_ptr(), partition);
            if pq.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(pq, queue);
            rd::rd_kafka_queue_destroy(pq);
        }
        true
    }
}

/// Up to [`BURST`] messages taken from the queue, destroyed by [`Messages::clear`] or drop.
pub struct Messages {
    ptrs: [*mut rd::rd_kafka_message_t; BURST],
    len: usize,
}

impl Default for Messages {
    fn default() -> Self {
        Messages { ptrs: [ptr::null_mut(); BURST], len: 0 }
    }
}

impl Messages {
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Message<'_>> {
        // SAFETY: the first `len` pointers are live messages owned by self.
        self.ptrs[..self.len].iter().map(|&p| Message(unsafe { &*p }))
    }

    pub fn clear(&mut self) {
        for p in &self.ptrs[..self.len] {
            // SAFETY: each was returned by rd_kafka_consume_batch_queue and is destroyed once.
            unsafe { rd::rd_kafka_message_destroy(*p) }
        }
        self.len = 0;
    }
}

impl Drop for Messages {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A message (or a consumer error) borrowed from [`Messages`].
#[derive(Clone, Copy)]
pub struct Message<'a>(&'a rd::rd_kafka_message_t);

impl<'a> Message<'a> {
    pub fn error(&self) -> Option<KafkaError> {
        let err = self.0.err;
        (err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR).then(|| KafkaError::MessageConsumption(err.into()))
    }

    /// Empty for an error not about a topic.
    pub fn topic(&self) -> &'a str {
        if self.0.rkt.is_null() {
            return "";
        }
        // SAFETY: the topic handle lives as long as the message.
        unsafe { CStr::from_ptr(rd::rd_kafka_topic_name(self.0.rkt)) }.to_str().expect("Kafka topic names are ASCII")
    }

    pub fn partition(&self) -> i32 {
        self.0.partition
    }

    pub fn offset(&self) -> i64 {
        self.0.offset
    }

    pub fn payload(&self) -> Option<&'a [u8]> {
        // SAFETY: librdkafka owns `len` bytes at `payload` for the message's life.
        (!self.0.payload.is_null()).then(|| unsafe { std::slice::from_raw_parts(self.0.payload as *const u8, self.0.len) })
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        // SAFETY: librdkafka owns `key_len` bytes at `key` for the message's life.
        (!self.0.key.is_null()).then(|| unsafe { std::slice::from_raw_parts(self.0.key as *const u8, self.0.key_len) })
    }

    /// The message's timestamp in milliseconds, if it has one.
    pub fn timestamp_millis(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is alive.
        let ts = unsafe { rd::rd_kafka_message_timestamp(self.0, &mut kind) };
        (ts != -1 && kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE).then_some(ts)
    }
}
