//! Kafka's topic ids (KIP-516): a topic deleted and created again under the same name gets a new
//! id, which is how a stored position is known to belong to an older generation of a topic even
//! when the new log has already grown past it.
//!
//! rust-rdkafka does not wrap librdkafka's `DescribeTopics` admin call, so this does, on the
//! consumer's own client: one request, answered on a queue of its own, within a timeout.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::ptr;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// Each topic's id (base64, as Kafka's tools print it). A topic the broker does not know, or
/// will not describe, is left out. An error if the request itself failed (timeout, a broker
/// older than 2.8).
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<HashMap<String, String>, String> {
    if topics.is_empty() {
        return Ok(HashMap::new());
    }
    let names: Vec<CString> =
        topics.iter().map(|t| CString::new(*t).map_err(|_| format!("topic {t:?} has a NUL"))).collect::<Result<_, _>>()?;
    let mut pointers: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let timeout_ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: every handle made here is destroyed here, once; `names` outlives the call that
    // copies them; the event is destroyed after the last read of its result.
    unsafe {
        let rk = client.native_ptr();
        let queue = rd::rd_kafka_queue_new(rk);
        let collection = rd::rd_kafka_TopicCollection_of_topic_names(pointers.as_mut_ptr(), pointers.len());
        rd::rd_kafka_DescribeTopics(rk, collection, ptr::null(), queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms);
        rd::rd_kafka_TopicCollection_destroy(collection);
        let out = if event.is_null() {
            Err(format!("no answer within {} ms", timeout.as_millis()))
        } else if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Err(CStr::from_ptr(rd::rd_kafka_event_error_string(event)).to_string_lossy().into_owned())
        } else {
            let result = rd::rd_kafka_event_DescribeTopics_result(event);
            let mut n = 0;
            let described = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
            let mut ids = HashMap::with_capacity(n);
            for i in 0..n {
                let d = *described.add(i);
                if !rd::rd_kafka_TopicDescription_error(d).is_null()
                    && rd::rd_kafka_error_code(rd::rd_kafka_TopicDescription_error(d))
                        != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                {
                    continue;
                }
                let id = rd::rd_kafka_TopicDescription_topic_id(d);
                // All zeros: the broker has no id for it (older than 2.8).
                if id.is_null()
                    || (rd::rd_kafka_Uuid_most_significant_bits(id) == 0 && rd::rd_kafka_Uuid_least_significant_bits(id) == 0)
                {
                    continue;
                }
                let text = rd::rd_kafka_Uuid_base64str(id);
                if text.is_null() {
                    continue;
                }
                let name = CStr::from_ptr(rd::rd_kafka_TopicDescription_name(d)).to_string_lossy().into_owned();
                ids.insert(name, CStr::from_ptr(text).to_string_lossy().into_owned());
            }
            Ok(ids)
        };
        if !event.is_null() {
            rd::rd_kafka_event_destroy(event);
        }
        rd::rd_kafka_queue_destroy(queue);
        out
    }
}
