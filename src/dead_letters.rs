//! `aurore dead-letters list|show|replay|purge`: dead letters an operator can act on.
//!
//! **Replay** validates each dead letter again with this binary's rules ([`event::decode`]) and
//! stores those that pass as the pipeline would (the same COPY encoder, the same derived ids,
//! the message's Kafka timestamp for an event without `timestamp`), in pages of [`PAGE`] rows,
//! one transaction each: the rows enter `events` (and `event_counts`) and leave `dead_letters`
//! together, so an offset is never in both tables nor in neither. Those that still fail stay,
//! with their reason and detail brought up to date; a row PostgreSQL refuses (a user's
//! constraint) stays as `postgres_rejected` with PostgreSQL's message. Pages are locked `FOR
//! UPDATE` in key order: a row another replay or purge holds is waited for (at most
//! [`LOCK_TIMEOUT`], then the command fails), never skipped, and the running pipeline only ever
//! inserts new offsets, so a replay is safe beside it. `--dry-run` does all of it and rolls back.
//!
//! Dead letters stored before migration V7 have no Kafka timestamp (a replayed event without
//! `timestamp` takes `received_at`) and no size: a value of exactly 64 KiB may be cut, and is
//! not replayed (nor is one known to be cut): replay those from Kafka.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use bytes::BytesMut;
use deadpool_postgres::{Pool, Transaction};
use futures_util::SinkExt;
use tokio_postgres::types::ToSql;

use crate::config::{DeadLetterFilter, DeadLettersCommand, ListArgs, ListFormat, PurgeArgs, ReplayArgs, ShowArgs};
use crate::copy;
use crate::db::{self, DbError};
use crate::event::{self, Reject};
use crate::pipeline::batch::DEAD_LETTER_RAW_LIMIT;

/// Dead letters taken per replay transaction.
pub const PAGE: i64 = 500;
/// Dead letters deleted per purge transaction.
const PURGE_PAGE: i64 = 10_000;
/// The longest a page waits for rows another session holds (PostgreSQL's `lock_timeout`).
pub const LOCK_TIMEOUT: &str = "30s";

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("no dead letter at {topic} partition {partition} offset {offset}")]
    NotFound { topic: String, partition: i32, offset: i64 },
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

pub async fn run(command: DeadLettersCommand) -> Result<(), DeadLetterError> {
    let result = match command {
        DeadLettersCommand::List(args) => list(args).await,
        DeadLettersCommand::Show(args) => show(args).await,
        DeadLettersCommand::Replay(args) => replay(args).await.map(drop),
        DeadLettersCommand::Purge(args) => purge(args).await.map(drop),
    };
    match result {
        // The reader went away (`| head`): nothing more to say.
        Err(DeadLetterError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// A `WHERE` clause and its parameters.
struct Filter {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Filter {
    fn new(f: &DeadLetterFilter, older_than: Option<Duration>) -> Self {
        let mut w = Filter { sql: "TRUE".into(), params: Vec::new() };
        if let Some(t) = &f.topic {
            w.and("topic = $", Box::new(t.clone()));
        }
        if let Some(r) = &f.reason {
            w.and("reason = $", Box::new(r.clone()));
        }
        if let Some(d) = f.since {
            w.and("received_at > now() - make_interval(secs => $", Box::new(d.as_secs_f64()));
            w.sql.push(')');
        }
        if let Some(d) = older_than {
            w.and("received_at < now() - make_interval(secs => $", Box::new(d.as_secs_f64()));
            w.sql.push(')');
        }
        w
    }

    fn and(&mut self, clause: &str, param: Box<dyn ToSql + Sync + Send>) {
        self.params.push(param);
        self.sql.push_str(&format!(" AND {clause}{}", self.params.len()));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()
    }
}

async fn list(args: ListArgs) -> Result<(), DeadLetterError> {
    let pool = db::pool(&args.db.database_url, 1, args.db.db_connect_timeout)?;
    let client = pool.get().await.map_err(DbError::pool("listing dead letters"))?;
    let mut filter = Filter::new(&args.filter, None);
    filter.params.push(Box::new(args.limit));
    let sql = format!(
        "SELECT topic, partition, \"offset\", reason, detail, coalesce(size, octet_length(raw), 0)::int8,
                to_char(received_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
         FROM dead_letters WHERE {} ORDER BY received_at DESC, topic, partition, \"offset\" DESC LIMIT ${}",
        filter.sql,
        filter.params.len()
    );
    let rows = client.query(&sql, &filter.params()).await.map_err(DbError::pg("listing dead letters"))?;
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Json => {
            for r in &rows {
                let line = serde_json::json!({
                    "topic": r.get::<_, String>(0), "partition": r.get::<_, i32>(1), "offset": r.get::<_, i64>(2),
                    "reason": r.get::<_, String>(3), "detail": r.get::<_, String>(4), "size": r.get::<_, i64>(5),
                    "received_at": r.get::<_, String>(6),
                });
                writeln!(out, "{}", json_safe(&line.to_string()))?;
            }
        }
        ListFormat::Table => {
            let cells: Vec<[String; 7]> = rows
                .iter()
                .map(|r| {
                    [
                        r.get::<_, String>(6),
                        r.get::<_, String>(0),
                        r.get::<_, i32>(1).to_string(),
                        r.get::<_, i64>(2).to_string(),
                        r.get::<_, String>(3),
                        r.get::<_, i64>(5).to_string(),
                        one_line(&r.get::<_, String>(4), 100),
                    ]
                })
                .collect();
            let head = ["RECEIVED_AT", "TOPIC", "PARTITION", "OFFSET", "REASON", "SIZE", "DETAIL"];
            let mut widths = head.map(str::len);
            for c in &cells {
                for (w, v) in widths.iter_mut().zip(c) {
                    *w = (*w).max(v.chars().count());
                }
            }
            for row in std::iter::once(head.map(String::from)).chain(cells) {
                let line: Vec<String> = row.iter().zip(widths).map(|(v, w)| format!("{v:<w$}")).collect();
                writeln!(out, "{}", line.join("  ").trim_end())?;
            }
            if rows.is_empty() {
                writeln!(out, "(no dead letters match)")?;
            }
        }
    }
    Ok(())
}

/// `s` on one line, control characters escaped, cut at `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let escaped = safe_text(s);
    let escaped = escaped.replace('\n', "\\n").replace('\t', "\\t");
    if escaped.chars().count() <= max { escaped } else { format!("{}…", escaped.chars().take(max).collect::<String>()) }
}

/// Characters that move or reorder what a terminal shows without being control characters:
/// the line and paragraph separators and Unicode's bidirectional controls.
fn invisible_mover(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// JSON text whose strings escape, as `\uXXXX`, what serde_json writes raw although it can
/// drive a terminal: DEL, the C1 controls and `invisible_mover`s.
pub fn json_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) || invisible_mover(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Text safe to print on a terminal: control characters other than newline and tab, and
/// `invisible_mover`s, escaped (`\u{1b}`), so that a message cannot drive the terminal.
pub fn safe_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c.is_control() && c != '\n' && c != '\t') || invisible_mover(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Bytes as hex, 32 to a line, each line led by its offset.
pub fn hex_lines(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, chunk) in bytes.chunks(32).enumerate() {
        out.push_str(&format!("{:08x} ", i * 32));
        for b in chunk {
            out.push_str(&format!(" {b:02x}"));
        }
        out.push('\n');
    }
    out
}

/// How a message is printed, and in which form: text if the bytes shown (at most `max`) are
/// UTF-8, else hex. `cut` says the bytes are already the start of a longer value: a character
/// split at the end of a cut is dropped, not taken for invalid UTF-8.
pub fn render(bytes: &[u8], max: usize, cut: bool) -> (&'static str, String) {
    let shown = &bytes[..bytes.len().min(max)];
    let cut = cut || shown.len() < bytes.len();
    match std::str::from_utf8(shown) {
        Ok(text) => ("text", safe_text(text)),
        Err(e) if e.error_len().is_none() && cut => {
            ("text", safe_text(std::str::from_utf8(&shown[..e.valid_up_to()]).unwrap_or_default()))
        }
        Err(_) => ("hex: not valid UTF-8", hex_lines(shown)),
    }
}

async fn show(args: ShowArgs) -> Result<(), DeadLetterError> {
    let pool = db::pool(&args.db.database_url, 1, args.db.db_connect_timeout)?;
    let client = pool.get().await.map_err(DbError::pool("reading a dead letter"))?;
    let row = client
        .query_opt(
            "SELECT raw, size, message_key, reason, detail, received_at::text, kafka_timestamp::text
             FROM dead_letters WHERE topic = $1 AND partition = $2 AND \"offset\" = $3
             ORDER BY received_at DESC LIMIT 1",
            &[&args.topic, &args.partition, &args.offset],
        )
        .await
        .map_err(DbError::pg("reading a dead letter"))?
        .ok_or_else(|| DeadLetterError::NotFound { topic: args.topic.clone(), partition: args.partition, offset: args.offset })?;
    let raw: Option<Vec<u8>> = row.get(0);
    let size: Option<i32> = row.get(1);
    let key: Option<Vec<u8>> = row.get(2);
    let mut out = std::io::stdout().lock();
    writeln!(out, "topic:       {}", safe_text(&args.topic))?;
    writeln!(out, "partition:   {}", args.partition)?;
    writeln!(out, "offset:      {}", args.offset)?;
    writeln!(out, "reason:      {}", row.get::<_, String>(3))?;
    writeln!(out, "detail:      {}", one_line(&row.get::<_, String>(4), usize::MAX))?;
    writeln!(out, "received_at: {}", row.get::<_, String>(5))?;
    if let Some(ts) = row.get::<_, Option<String>>(6) {
        writeln!(out, "kafka_time:  {ts}")?;
    }
    if let Some(key) = &key {
        writeln!(out, "key:         {}", one_line(&render(key, 256, false).1, 256))?;
    }
    let Some(raw) = raw else {
        writeln!(out, "message:     none (a tombstone: the value was null)")?;
        return Ok(());
    };
    let total = size.map_or(raw.len(), |s| s as usize);
    let mut sizes = format!("{total} bytes");
    if raw.len() < total {
        sizes.push_str(&format!(", of which the first {} are stored", raw.len()));
    } else if size.is_none() && raw.len() == DEAD_LETTER_RAW_LIMIT {
        sizes.push_str(" stored (stored before V7: the value may have been longer)");
    }
    writeln!(out, "size:        {sizes}")?;
    let stored_cut = raw.len() < total || (size.is_none() && raw.len() == DEAD_LETTER_RAW_LIMIT);
    let (form, text) = render(&raw, args.max_bytes, stored_cut);
    // Each line of the message is marked: a message cannot pass for aurore's own lines.
    writeln!(out, "message ({form}), each line after \"| \":")?;
    for line in text.trim_end_matches('\n').split('\n') {
        writeln!(out, "| {line}")?;
    }
    if raw.len() > args.max_bytes {
        writeln!(out, "… cut: {} of {} stored bytes shown (--max-bytes)", args.max_bytes, raw.len())?;
    }
    Ok(())
}

/// What a replay did (or, with `--dry-run`, would do).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub examined: u64,
    /// Became events.
    pub stored: u64,
    /// Still refused, by the validator or by PostgreSQL.
    pub still_failing: u64,
    /// Of those, the ones whose reason or detail changed.
    pub updated: u64,
    /// Not replayable from the database: the stored value is cut.
    pub cut: u64,
}

/// One dead letter as a replay sees it.
struct Letter {
    topic: String,
    partition: i32,
    offset: i64,
    raw: Option<Vec<u8>>,
    size: Option<i32>,
    reason: String,
    detail: String,
    /// Kafka's timestamp, or `received_at` for rows stored before V7; Unix microseconds.
    /// `None`: Kafka's was no time aurore accepts (a V7 row without one).
    timestamp: Option<i64>,
}

/// What becomes of one letter.
enum Verdict {
    /// Encoded rows `range` of the page's COPY buffer; counted in (service, event type, hour).
    Row {
        start: usize,
        end: usize,
        count: (String, String, i64),
    },
    Fails {
        reason: &'static str,
        detail: String,
    },
    Cut,
}

pub async fn replay(args: ReplayArgs) -> Result<Replayed, DeadLetterError> {
    let pool = db::pool(&args.db.database_url, 1, args.db.db_connect_timeout)?;
    let filter = Filter::new(&args.filter, None);
    let total = {
        let client = pool.get().await.map_err(DbError::pool("counting dead letters"))?;
        let sql = format!("SELECT count(*) FROM dead_letters WHERE {}", filter.sql);
        client.query_one(&sql, &filter.params()).await.map_err(DbError::pg("counting dead letters"))?.get::<_, i64>(0)
    };
    let progress = Progress::new(total as u64, if args.dry_run { "replay (dry run)" } else { "replay" });
    let mut done = Replayed::default();
    let mut after: Option<(String, i32, i64)> = None;
    loop {
        let (page, last) = replay_page(&pool, &filter, after.as_ref(), args.max_event_bytes, args.dry_run).await?;
        if page.examined == 0 {
            break;
        }
        done.examined += page.examined;
        done.stored += page.stored;
        done.still_failing += page.still_failing;
        done.updated += page.updated;
        done.cut += page.cut;
        progress.advance(page.examined, &done);
        after = last;
    }
    progress.finish();
    let verb = if args.dry_run { "would become" } else { "became" };
    let updated = if args.dry_run { "would be updated" } else { "updated" };
    println!(
        "{} dead letters examined: {} {verb} events, {} still fail ({} with a new reason or detail, {updated}), {} not replayable (the stored value is cut: replay them from Kafka)",
        done.examined, done.stored, done.still_failing, done.updated, done.cut
    );
    Ok(done)
}

/// One page, in one transaction; the page's counts and its last key (`None` when it was empty).
async fn replay_page(
    pool: &Pool,
    filter: &Filter,
    after: Option<&(String, i32, i64)>,
    max_event_bytes: usize,
    dry_run: bool,
) -> Result<(Replayed, Option<(String, i32, i64)>), DbError> {
    let mut client = pool.get().await.map_err(DbError::pool("replaying dead letters"))?;
    let mut tx = client.transaction().await.map_err(DbError::pg("beginning a replay transaction"))?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")).await.map_err(DbError::pg("setting lock_timeout"))?;
    let mut params = filter.params();
    let mut sql = format!(
        "SELECT topic, partition, \"offset\", raw, size, reason, detail,
                CASE WHEN kafka_timestamp IS NULL AND size IS NOT NULL THEN NULL
                     ELSE (extract(epoch FROM coalesce(kafka_timestamp, received_at)) * 1000000)::int8 END
         FROM dead_letters WHERE {}",
        filter.sql
    );
    let (t, p, o);
    if let Some(a) = after {
        (t, p, o) = (a.0.clone(), a.1, a.2);
        let n = params.len();
        sql.push_str(&format!(" AND (topic, partition, \"offset\") > (${}, ${}, ${})", n + 1, n + 2, n + 3));
        params.extend([&t as &(dyn ToSql + Sync), &p, &o]);
    }
    sql.push_str(&format!(" ORDER BY topic, partition, \"offset\" LIMIT {PAGE} FOR UPDATE"));
    let rows = tx.query(&sql, &params).await.map_err(DbError::pg("reading dead letters to replay"))?;
    let letters: Vec<Letter> = rows
        .iter()
        .map(|r| Letter {
            topic: r.get(0),
            partition: r.get(1),
            offset: r.get(2),
            raw: r.get(3),
            size: r.get(4),
            reason: r.get(5),
            detail: r.get(6),
            timestamp: r.get(7),
        })
        .collect();
    let last = letters.last().map(|l| (l.topic.clone(), l.partition, l.offset));
    let mut buf = BytesMut::new();
    let mut verdicts: Vec<Verdict> = letters.iter().map(|l| judge(l, max_event_bytes, &mut buf)).collect();
    let rows = buf.freeze();
    // The rows in one COPY; if PostgreSQL refuses one, each alone, under a savepoint.
    let ranges: Vec<(usize, usize, usize)> = verdicts
        .iter()
        .enumerate()
        .filter_map(|(i, v)| match v {
            Verdict::Row { start, end, .. } => Some((i, *start, *end)),
            _ => None,
        })
        .collect();
    // Row by row only when the rows are at fault: any other failure (a missing partition, the
    // connection) ends the replay with every dead letter as it was.
    let copied = if ranges.is_empty() { Ok(()) } else { copy_in(&mut tx, std::slice::from_ref(&rows)).await };
    if let Err(e) = copied {
        if db::classify(&e) != db::Class::Data {
            return Err(DbError::Postgres { context: "storing replayed dead letters", error: e });
        }
        for (i, start, end) in ranges {
            if let Err(e) = copy_in(&mut tx, &[rows.slice(start..end)]).await {
                if db::classify(&e) != db::Class::Data {
                    return Err(DbError::Postgres { context: "storing a replayed dead letter", error: e });
                }
                verdicts[i] = Verdict::Fails { reason: Reject::PostgresRejected.label(), detail: db::describe(&e) };
            }
        }
    }
    let mut done = Replayed { examined: letters.len() as u64, ..Replayed::default() };
    let mut counts: BTreeMap<(String, String, i64), i64> = BTreeMap::new();
    // (topic, reason) → (stored change, replayed)
    let mut letter_counts: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    let (mut gone_t, mut gone_p, mut gone_o) = (Vec::new(), Vec::new(), Vec::new());
    for (l, v) in letters.iter().zip(&verdicts) {
        match v {
            Verdict::Row { count, .. } => {
                done.stored += 1;
                *counts.entry(count.clone()).or_default() += 1;
                let e = letter_counts.entry((l.topic.clone(), l.reason.clone())).or_default();
                e.0 -= 1;
                e.1 += 1;
                gone_t.push(l.topic.as_str());
                gone_p.push(l.partition);
                gone_o.push(l.offset);
            }
            Verdict::Fails { reason, detail } => {
                done.still_failing += 1;
                if *reason != l.reason || *detail != l.detail {
                    done.updated += 1;
                    tx.execute(
                        "UPDATE dead_letters SET reason = $4, detail = $5 WHERE topic = $1 AND partition = $2 AND \"offset\" = $3",
                        &[&l.topic, &l.partition, &l.offset, reason, detail],
                    )
                    .await
                    .map_err(DbError::pg("updating a dead letter"))?;
                    if *reason != l.reason {
                        letter_counts.entry((l.topic.clone(), l.reason.clone())).or_default().0 -= 1;
                        letter_counts.entry((l.topic.clone(), reason.to_string())).or_default().0 += 1;
                    }
                }
            }
            Verdict::Cut => done.cut += 1,
        }
    }
    if !gone_t.is_empty() {
        tx.execute(
            "DELETE FROM dead_letters d USING unnest($1::text[], $2::int4[], $3::int8[]) AS u(topic, partition, \"offset\")
             WHERE d.topic = u.topic AND d.partition = u.partition AND d.\"offset\" = u.\"offset\"",
            &[&gone_t, &gone_p, &gone_o],
        )
        .await
        .map_err(DbError::pg("deleting replayed dead letters"))?;
    }
    if !counts.is_empty() {
        let services: Vec<&str> = counts.keys().map(|k| k.0.as_str()).collect();
        let types: Vec<&str> = counts.keys().map(|k| k.1.as_str()).collect();
        let hours: Vec<i64> = counts.keys().map(|k| k.2).collect();
        let ns: Vec<i64> = counts.values().copied().collect();
        tx.execute(crate::sink::sql::UPSERT_COUNTS, &[&services, &types, &hours, &ns])
            .await
            .map_err(DbError::pg("upserting event counts"))?;
    }
    letter_counts.retain(|_, (stored, replayed)| *stored != 0 || *replayed != 0);
    if !letter_counts.is_empty() {
        let topics: Vec<&str> = letter_counts.keys().map(|k| k.0.as_str()).collect();
        let reasons: Vec<&str> = letter_counts.keys().map(|k| k.1.as_str()).collect();
        let stored: Vec<i64> = letter_counts.values().map(|v| v.0).collect();
        let replayed: Vec<i64> = letter_counts.values().map(|v| v.1).collect();
        tx.execute(
            "INSERT INTO dead_letter_counts AS c (topic, reason, stored, replayed)
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
             ON CONFLICT (topic, reason) DO UPDATE SET stored = c.stored + EXCLUDED.stored, replayed = c.replayed + EXCLUDED.replayed",
            &[&topics, &reasons, &stored, &replayed],
        )
        .await
        .map_err(DbError::pg("counting replayed dead letters"))?;
    }
    if dry_run {
        tx.rollback().await.map_err(DbError::pg("rolling back a dry run"))?;
    } else {
        tx.commit().await.map_err(DbError::pg("committing a replay"))?;
    }
    Ok((done, last))
}

/// Decides one letter; a valid event is encoded into `buf` as the pipeline encodes it.
fn judge(l: &Letter, max_event_bytes: usize, buf: &mut BytesMut) -> Verdict {
    let stored_len = l.raw.as_ref().map_or(0, Vec::len);
    let cut = match l.size {
        Some(size) => (size as usize) > stored_len,
        None => stored_len == DEAD_LETTER_RAW_LIMIT,
    };
    if cut {
        return Verdict::Cut;
    }
    match event::decode(l.raw.as_deref(), max_event_bytes) {
        Err(invalid) => Verdict::Fails { reason: invalid.reason.label(), detail: invalid.detail },
        Ok(ev) => {
            let Some(occurred_at) = ev.timestamp_micros.or(l.timestamp) else {
                // As the pipeline decided: no time of its own, and Kafka's was no time.
                return Verdict::Fails { reason: Reject::TimestampOutOfRange.label(), detail: l.detail.clone() };
            };
            let start = buf.len();
            copy::encode_row(
                buf,
                &copy::Row {
                    topic: &l.topic,
                    partition: l.partition,
                    offset: l.offset,
                    id: ev.id.unwrap_or_else(|| event::derived_id(&l.topic, l.partition, l.offset)),
                    service: &ev.service,
                    event_type: &ev.event_type,
                    occurred_at,
                    payload: ev.payload,
                    extra: &ev.extra,
                },
            );
            let hour = crate::pipeline::batch::hour_of(occurred_at);
            Verdict::Row { start, end: buf.len(), count: (ev.service.into_owned(), ev.event_type.into_owned(), hour) }
        }
    }
}

/// COPYs encoded rows under a savepoint: refused, the transaction goes on without them.
async fn copy_in(tx: &mut Transaction<'_>, rows: &[bytes::Bytes]) -> Result<(), tokio_postgres::Error> {
    let sp = tx.savepoint("replay_copy").await?;
    let result = async {
        let sink = sp.copy_in(copy::COPY_EVENTS).await?;
        futures_util::pin_mut!(sink);
        sink.send(bytes::Bytes::from_static(copy::HEADER)).await?;
        for r in rows {
            sink.send(r.clone()).await?;
        }
        sink.send(bytes::Bytes::from_static(copy::TRAILER)).await?;
        sink.finish().await.map(drop)
    }
    .await;
    match result {
        Ok(()) => sp.commit().await,
        Err(e) => {
            sp.rollback().await?;
            Err(e)
        }
    }
}

/// What a purge deleted (or, with `--dry-run`, would delete).
pub async fn purge(args: PurgeArgs) -> Result<u64, DeadLetterError> {
    let pool = db::pool(&args.db.database_url, 1, args.db.db_connect_timeout)?;
    let filter = Filter::new(&args.filter, Some(args.older_than));
    let mut client = pool.get().await.map_err(DbError::pool("purging dead letters"))?;
    let sql = format!("SELECT count(*) FROM dead_letters WHERE {}", filter.sql);
    let count: i64 = client.query_one(&sql, &filter.params()).await.map_err(DbError::pg("counting dead letters"))?.get(0);
    let age = short_duration(args.older_than);
    if args.dry_run {
        println!("{count} dead letters older than {age} match; --dry-run: nothing deleted");
        return Ok(count as u64);
    }
    println!("{count} dead letters older than {age} match; deleting");
    let progress = Progress::new(count as u64, "purge");
    let mut deleted = 0u64;
    loop {
        let tx = client.transaction().await.map_err(DbError::pg("beginning a purge transaction"))?;
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await
            .map_err(DbError::pg("setting lock_timeout"))?;
        let sql = format!(
            "WITH gone AS (
               DELETE FROM dead_letters WHERE (topic, partition, \"offset\", received_at) IN (
                 SELECT topic, partition, \"offset\", received_at FROM dead_letters WHERE {}
                 ORDER BY topic, partition, \"offset\" LIMIT {PURGE_PAGE} FOR UPDATE)
               RETURNING topic, reason),
             counted AS (SELECT topic, reason, count(*) AS n FROM gone GROUP BY topic, reason ORDER BY topic, reason),
             moved AS (
               INSERT INTO dead_letter_counts AS c (topic, reason, stored, purged)
               SELECT topic, reason, -n, n FROM counted
               ON CONFLICT (topic, reason) DO UPDATE SET stored = c.stored + EXCLUDED.stored, purged = c.purged + EXCLUDED.purged)
             SELECT coalesce(sum(n), 0)::int8 FROM counted",
            filter.sql
        );
        let n: i64 = tx.query_one(&sql, &filter.params()).await.map_err(DbError::pg("deleting dead letters"))?.get(0);
        tx.commit().await.map_err(DbError::pg("committing a purge"))?;
        if n == 0 {
            break;
        }
        deleted += n as u64;
        progress.advance(n as u64, &Replayed::default());
    }
    progress.finish();
    println!("purged {deleted} dead letters");
    Ok(deleted)
}

/// `30d`, `12h`, or humantime's form when not a whole number of hours.
fn short_duration(d: Duration) -> String {
    match d.as_secs() {
        s if d.subsec_nanos() == 0 && s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if d.subsec_nanos() == 0 && s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// A progress bar on a terminal; a plain line per page otherwise (a log keeps those).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    what: &'static str,
    seen: std::cell::Cell<u64>,
}

impl Progress {
    fn new(total: u64, what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(what);
            bar
        });
        Progress { bar, total, what, seen: std::cell::Cell::new(0) }
    }

    fn advance(&self, n: u64, so_far: &Replayed) {
        self.seen.set(self.seen.get() + n);
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if so_far.examined > 0 => eprintln!(
                "{}: {}/{} examined, {} stored, {} still failing, {} cut",
                self.what,
                self.seen.get(),
                self.total,
                so_far.stored,
                so_far.still_failing,
                so_far.cut
            ),
            None => eprintln!("{}: {}/{}", self.what, self.seen.get(), self.total),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_print_safely() {
        let text = |s: &str| ("text", s.to_string());
        assert_eq!(render(b"{\"a\":1}", 100, false), text("{\"a\":1}"));
        assert_eq!(render(b"\x1b[31mred\x07", 100, false), text("\\u{1b}[31mred\\u{7}"), "escapes cannot drive the terminal");
        assert_eq!(render("a\u{9b}b\u{202e}c\u{2028}".as_bytes(), 100, false), text("a\\u{9b}b\\u{202e}c\\u{2028}"));
        assert_eq!(render(b"line\nnext\ttab", 100, false), text("line\nnext\ttab"));
        assert_eq!(render(&[0xff, 0x00, 0x41], 100, false), ("hex: not valid UTF-8", "00000000  ff 00 41\n".into()));
        assert_eq!(render("é".repeat(3).as_bytes(), 3, false), text("é"), "a cut inside a character keeps the text before it");
        assert_eq!(render(&"é".as_bytes()[..1], 100, true), text(""), "so does a value stored cut");
        assert_eq!(render(&"é".as_bytes()[..1], 100, false).0, "hex: not valid UTF-8");
        assert_eq!(render(&[b'x'; 40], 10, false), text(&"x".repeat(10)));
        assert_eq!(json_safe("{\"d\":\"a\u{85}\u{2029}\u{7f}\"}"), "{\"d\":\"a\\u0085\\u2029\\u007f\"}");
        assert_eq!(hex_lines(&[0u8; 33]).lines().count(), 2);
        assert_eq!(one_line("a\nb\u{1b}", 100), "a\\nb\\u{1b}");
        assert_eq!(one_line(&"y".repeat(10), 4), "yyyy…");
    }
}
