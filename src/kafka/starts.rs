//! Where assigned partitions start: PostgreSQL's `consumer_offsets`, read from the poll thread.
//!
//! This is where the poll thread waits on PostgreSQL, and the only place: in the rebalance
//! callback when partitions are assigned (so they are read from the right offset before any of
//! their messages is fetched), and when resolving a partition whose start was not known (the
//! database was unreachable at assignment, or a fence conflict showed that another consumer moved
//! it on). Each wait is bounded by a timeout; past it the partition stays paused and
//! [`Start::Unresolved`], and is asked about again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::runtime::Handle;

use rdkafka::client::{Client, ClientContext};

use crate::db;
use crate::kafka::topic_ids;
use crate::logging::Structured;
use crate::pipeline::offsets::Start;

pub struct StoredStarts {
    pub pool: Pool,
    /// `user@host:port/dbname`, for log lines.
    pub database: Arc<str>,
    pub runtime: Handle,
}

impl StoredStarts {
    /// [`StoredStarts::read`], with the topics' current ids asked of Kafka through `client`
    /// first (at most 5 s; without them, the id check is skipped).
    pub fn read_for<C: ClientContext>(&self, client: &Client<C>, partitions: &[(String, i32)], timeout: Duration) -> Vec<Start> {
        let mut topics: Vec<&str> = partitions.iter().map(|(t, _)| t.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        let ids = topic_ids::describe(client, &topics, Duration::from_secs(5)).unwrap_or_else(|e| {
            tracing::debug!(error = %e, "topic ids not read; a topic created again is then found by its offsets only");
            HashMap::new()
        });
        self.read(partitions, timeout, &ids)
    }

    /// Of the topics in `ids` (Kafka's ids, now), those created again since their id was
    /// recorded; empty if PostgreSQL does not answer within `timeout`.
    pub fn recreated(&self, ids: &HashMap<String, String>, timeout: Duration) -> Vec<String> {
        let topics: Vec<&str> = ids.keys().map(String::as_str).collect();
        // The timer is made inside the runtime: this thread is not one of its own.
        let found = self.runtime.block_on(async { tokio::time::timeout(timeout, self.recreated_among(&topics, ids)).await });
        found.unwrap_or_default().into_iter().map(str::to_owned).collect()
    }

    /// Those of `topics` whose id in `ids` differs from the one recorded (recorded now if there
    /// was none). Best effort: a role that may not write topic_ids still consumes.
    async fn recreated_among<'a>(&self, topics: &[&'a str], ids: &HashMap<String, String>) -> Vec<&'a str> {
        let mut recreated = Vec::new();
        for topic in topics {
            let Some(id) = ids.get(*topic) else { continue };
            match db::check_topic_id(&self.pool, topic, id).await {
                Ok(None) => {}
                Ok(Some(recorded)) => {
                    tracing::error!(
                        %topic,
                        recorded_id = %recorded,
                        topic_id = %id,
                        "the topic was deleted and created again (Kafka's topic id changed): its partitions are refused. \
                         Nothing is lost: its messages wait in Kafka. To store them, archive the old rows: \
                         aurore archive-topic --topic {topic}"
                    );
                    recreated.push(*topic);
                }
                Err(e) => tracing::warn!(%topic, error = %e, "topic id not checked"),
            }
        }
        recreated
    }

    /// The start of each of `partitions`, in order; [`Start::Unresolved`] for all of them if
    /// PostgreSQL did not answer within `timeout`, [`Start::Recreated`] for those of a topic
    /// whose id in `ids` (Kafka's, now) differs from the one recorded. Blocks the calling
    /// (non-async) thread.
    pub fn read(&self, partitions: &[(String, i32)], timeout: Duration, ids: &HashMap<String, String>) -> Vec<Start> {
        let mut by_topic: HashMap<&str, Vec<i32>> = HashMap::new();
        for (t, p) in partitions {
            by_topic.entry(t).or_default().push(*p);
        }
        let lookup = self.runtime.block_on(async {
            tokio::time::timeout(timeout, async {
                let mut found = HashMap::new();
                for (topic, ps) in &by_topic {
                    for (p, n) in db::load_offsets(&self.pool, topic, ps).await? {
                        found.insert((*topic, p), n);
                    }
                }
                let topics: Vec<&str> = by_topic.keys().copied().collect();
                let recreated = self.recreated_among(&topics, ids).await;
                Ok::<_, db::DbError>((found, recreated))
            })
            .await
        });
        match lookup {
            Ok(Ok((found, recreated))) => partitions
                .iter()
                .map(|(t, p)| match found.get(&(t.as_str(), *p)) {
                    _ if recreated.contains(&t.as_str()) => Start::Recreated,
                    Some(n) => Start::Stored(*n),
                    None => Start::Kafka,
                })
                .collect(),
            Ok(Err(e)) => {
                tracing::warn!(
                    database = %self.database,
                    error = %e,
                    "cannot read consumer_offsets; the partitions stay paused and it is read again"
                );
                vec![Start::Unresolved; partitions.len()]
            }
            Err(_) => {
                tracing::warn!(
                    database = %self.database,
                    timeout_ms = timeout.as_millis() as u64,
                    "reading consumer_offsets timed out; the partitions stay paused and it is read again"
                );
                vec![Start::Unresolved; partitions.len()]
            }
        }
    }
}

/// Where an assignment starts, for its log lines: per topic (in order of first appearance), the
/// partitions as a list of numbers, and where each one starts as a list of
/// `{"partition", "from": "postgresql" | "kafka" | "unknown", "offset"}` (`offset` only from
/// PostgreSQL); `p at start, …` in the text format.
pub fn describe(partitions: &[(String, i32)], starts: &[Start]) -> Vec<(String, Structured, Structured)> {
    let mut topics: Vec<(&str, Vec<(i32, Start)>)> = Vec::new();
    for ((t, p), start) in partitions.iter().zip(starts) {
        match topics.iter_mut().find(|(name, _)| *name == t.as_str()) {
            Some((_, ps)) => ps.push((*p, *start)),
            None => topics.push((t, vec![(*p, *start)])),
        }
    }
    topics
        .into_iter()
        .map(|(topic, ps)| {
            let json = ps
                .iter()
                .map(|(p, start)| match start {
                    Start::Stored(n) => serde_json::json!({"partition": p, "from": "postgresql", "offset": n}),
                    Start::Kafka => serde_json::json!({"partition": p, "from": "kafka"}),
                    Start::Unresolved => serde_json::json!({"partition": p, "from": "unknown"}),
                    Start::Recreated => serde_json::json!({"partition": p, "from": "refused"}),
                })
                .collect();
            let text = ps.iter().map(|(p, start)| format!("{p} at {start}")).collect::<Vec<_>>().join(", ");
            let partitions = Structured::list(ps.iter().map(|(p, _)| *p));
            (topic.to_owned(), partitions, Structured::new(serde_json::Value::Array(json), text))
        })
        .collect()
}
