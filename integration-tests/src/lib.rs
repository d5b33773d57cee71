//! The harness of aurore's integration tests: the real Kafka and PostgreSQL, never mocks.
//!
//! Where they come from is chosen by `AURORE_IT_BACKEND`:
//! - `stack`: the running local stack (`scripts/stack up`), or `KAFKA_BROKERS` and `DATABASE_URL`.
//! - `containers`: every test ([`Env`]) starts its own Kafka and PostgreSQL with testcontainers,
//!   and they are removed when the test ends. The images are `apache/kafka:4.1.1` and
//!   `postgres:15` unless `AURORE_IT_KAFKA_IMAGE` / `AURORE_IT_POSTGRES_IMAGE` name others
//!   (`scripts/images` builds local stand-ins for a machine without a registry).
//! - unset (`auto`): the local stack when it answers, else containers when a Docker engine is
//!   available. When neither works the test fails, saying how to start them: it never skips.
//!
//! Every test gets its own topic, consumer group and database ([`Env::new`]), so tests run in
//! parallel. aurore runs as a child process ([`Aurore`]), as in production.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_postgres::NoTls;

pub const LOCAL_KAFKA: &str = "127.0.0.1:9092";
pub const LOCAL_DATABASE: &str = "postgres://aurore:aurore@127.0.0.1:5432/aurore_events";

/// Where Kafka and PostgreSQL are, for one test (containers) or every test of the process.
pub struct Stack {
    pub brokers: String,
    /// A database the tests' role may CREATE DATABASE from.
    pub admin_url: String,
    pub via: &'static str,
    /// The test's own containers, removed when the last holder drops this.
    _containers: Option<containers::Running>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Backend {
    Stack,
    Containers,
    Auto,
}

fn backend() -> Backend {
    match std::env::var("AURORE_IT_BACKEND").as_deref() {
        Ok("stack") => Backend::Stack,
        Ok("containers") => Backend::Containers,
        Ok("auto") | Ok("") | Err(_) => Backend::Auto,
        Ok(other) => panic!("AURORE_IT_BACKEND={other:?}: expected stack, containers or auto"),
    }
}

static LOCAL: OnceLock<Option<Arc<Stack>>> = OnceLock::new();

/// The Kafka and PostgreSQL of a new test.
pub fn stack() -> Arc<Stack> {
    // Probing and testcontainers' sync runner block (the runner has its own runtime): off the
    // test's runtime.
    off_runtime(|| {
        let backend = backend();
        if backend != Backend::Containers
            && let Some(local) = LOCAL.get_or_init(|| local_stack(backend))
        {
            return local.clone();
        }
        Arc::new(containers::start())
    })
}

fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
}

/// The local stack, if it answers; `None` in auto mode when containers should be tried.
fn local_stack(backend: Backend) -> Option<Arc<Stack>> {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| LOCAL_KAFKA.into());
    let admin_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| LOCAL_DATABASE.into());
    let kafka = kafka_reachable(&brokers);
    let pg = pg_reachable(&admin_url);
    if kafka.is_ok() && pg.is_ok() {
        return Some(Arc::new(Stack { brokers, admin_url, via: "the running stack", _containers: None }));
    }
    if backend == Backend::Auto && docker_available() {
        return None;
    }
    panic!(
        "\n\nThe integration tests need the real Kafka and PostgreSQL, and cannot reach them:\n  \
         Kafka at {brokers}: {}\n  PostgreSQL at {}: {}\nStart the local stack with `scripts/stack up` \
         (or set KAFKA_BROKERS and DATABASE_URL), or make a Docker engine available and set \
         AURORE_IT_BACKEND=containers (testcontainers; `scripts/images` builds the images here).\n",
        kafka.err().unwrap_or_else(|| "ok".into()),
        redact(&admin_url),
        pg.err().unwrap_or_else(|| "ok".into()),
    )
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

fn kafka_reachable(brokers: &str) -> Result<(), String> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().map_err(|e| e.to_string())?;
    c.fetch_metadata(None, Duration::from_secs(5)).map(|_| ()).map_err(|e| e.to_string())
}

fn pg_reachable(url: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (client, conn) = tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(url, NoTls))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        client.simple_query("SELECT 1").await.map(|_| ()).map_err(|e| e.to_string())
    })
}

fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some() || std::path::Path::new("/var/run/docker.sock").exists()
}

mod containers {
    use super::Stack;
    use testcontainers::runners::SyncRunner;
    use testcontainers::{Container, ImageExt};
    use testcontainers_modules::{kafka::apache, postgres::Postgres};

    /// A test's Kafka and PostgreSQL containers; dropping this removes them.
    pub struct Running(Option<(Container<apache::Kafka>, Container<Postgres>)>);

    impl Drop for Running {
        fn drop(&mut self) {
            // The sync runner blocks on its own runtime, which must not be the test's.
            if let Some(containers) = self.0.take() {
                super::off_runtime(move || drop(containers));
            }
        }
    }

    /// `name:tag` from the environment variable, or the default.
    fn image(var: &str, default: &str) -> (String, String) {
        let image = std::env::var(var).unwrap_or_else(|_| default.to_owned());
        match image.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name.to_owned(), tag.to_owned()),
            _ => (image, "latest".to_owned()),
        }
    }

    pub fn start() -> Stack {
        let (kname, ktag) = image("AURORE_IT_KAFKA_IMAGE", "apache/kafka:4.1.1");
        let (pname, ptag) = image("AURORE_IT_POSTGRES_IMAGE", "postgres:15");
        // As kafka/server.properties sets for the local stack: KIP-848 groups notice a crashed
        // member after 6 s.
        let kafka = apache::Kafka::default()
            .with_jvm_image()
            .with_name(&kname)
            .with_tag(&ktag)
            .with_env_var("KAFKA_GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS", "6000")
            .with_env_var("KAFKA_GROUP_CONSUMER_SESSION_TIMEOUT_MS", "6000")
            .with_env_var("KAFKA_GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS", "1000")
            .with_env_var("KAFKA_GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS", "1000")
            .start()
            .unwrap_or_else(|e| panic!("starting Kafka ({kname}:{ktag}) with testcontainers: {e}"));
        // The module's defaults are an old tag and no pg_stat_statements: both set here.
        let pg = Postgres::default()
            .with_user("aurore")
            .with_password("aurore")
            .with_db_name("aurore_events")
            .with_name(&pname)
            .with_tag(&ptag)
            .with_cmd([
                "postgres",
                "-c",
                "fsync=off",
                "-c",
                "shared_preload_libraries=pg_stat_statements",
                "-c",
                "max_connections=200",
            ])
            .start()
            .unwrap_or_else(|e| panic!("starting PostgreSQL ({pname}:{ptag}) with testcontainers: {e}"));
        let kport = kafka.get_host_port_ipv4(apache::KAFKA_PORT).expect("Kafka port");
        let pport = pg.get_host_port_ipv4(5432).expect("PostgreSQL port");
        eprintln!(
            "[testcontainers] started Kafka {kname}:{ktag} (container {}) on 127.0.0.1:{kport} and PostgreSQL {pname}:{ptag} (container {}) on 127.0.0.1:{pport}",
            short(kafka.id()),
            short(pg.id())
        );
        Stack {
            brokers: format!("127.0.0.1:{kport}"),
            admin_url: format!("postgres://aurore:aurore@127.0.0.1:{pport}/aurore_events"),
            via: "testcontainers",
            _containers: Some(Running(Some((kafka, pg)))),
        }
    }

    fn short(id: &str) -> &str {
        &id[..id.len().min(12)]
    }
}

/// The arguments that make a member notice a crashed one within 6 s, for each consumer group
/// protocol: `classic` sets its session timeout itself; `consumer` (KIP-848) takes the broker's
/// (6 s on the local stack and in the test containers).
pub fn fast_group(protocol: &str) -> Vec<&'static str> {
    match protocol {
        "classic" => vec!["--kafka-config", "session.timeout.ms=6000", "--kafka-config", "heartbeat.interval.ms=1000"],
        "consumer" => vec!["--group-protocol", "consumer"],
        other => panic!("no consumer group protocol {other:?}"),
    }
}

/// One test's topic, group and database.
pub struct Env {
    pub name: String,
    pub topic: String,
    pub group: String,
    pub database_url: String,
    pub partitions: i32,
    pub stack: Arc<Stack>,
}

impl Env {
    /// A fresh topic of `partitions` partitions (`topic_config`: extra topic settings) and a
    /// fresh database.
    pub async fn new(test: &str, partitions: i32, topic_config: &[(&str, &str)]) -> Env {
        let stack = stack();
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let name = format!("{test}_{id}");
        let env = Env {
            topic: format!("it-{test}-{id}"),
            group: format!("it-{test}-{id}"),
            database_url: replace_db(&stack.admin_url, &format!("aurore_it_{name}")),
            name,
            partitions,
            stack: stack.clone(),
        };
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", &stack.brokers).create().expect("Kafka admin client");
        let mut topic = NewTopic::new(&env.topic, partitions, TopicReplication::Fixed(1));
        for (k, v) in topic_config {
            topic = topic.set(k, v);
        }
        let created = admin
            .create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))))
            .await
            .expect("create topic");
        for r in created {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        let admin_db = connect(&stack.admin_url).await;
        admin_db.batch_execute(&format!("CREATE DATABASE \"aurore_it_{}\"", env.name)).await.expect("create test database");
        eprintln!(
            "[{}] Kafka {} and PostgreSQL via {}; topic {}, database aurore_it_{}",
            test, stack.brokers, stack.via, env.topic, env.name
        );
        env
    }

    /// The same topic and database under another consumer group, `<group>-<suffix>`: a renamed
    /// group, or a second deployment.
    pub fn other_group(&self, suffix: &str) -> Env {
        Env {
            name: format!("{}-{suffix}", self.name),
            topic: self.topic.clone(),
            group: format!("{}-{suffix}", self.group),
            database_url: self.database_url.clone(),
            partitions: self.partitions,
            stack: self.stack.clone(),
        }
    }

    /// A login role of the test's database that may read every table and write only `writable`
    /// (INSERT and UPDATE), and a URL that logs in as it: `(role, url)`. [`Env::drop_role`] removes it.
    pub async fn restricted_role(&self, prefix: &str, password: &str, writable: &[&str]) -> (String, String) {
        let role = format!("{prefix}_{}", &self.name[self.name.len() - 10..]);
        self.db()
            .await
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD '{password}';
                 GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role};
                 GRANT INSERT, UPDATE ON {} TO {role};",
                writable.join(", ")
            ))
            .await
            .expect("creating a restricted role");
        let url = self.database_url.replacen("aurore:aurore@", &format!("{role}:{password}@"), 1);
        assert_ne!(url, self.database_url, "the test rewrites the stack's credentials");
        (role, url)
    }

    /// Removes a role made by [`Env::restricted_role`] (roles are the cluster's, not the database's).
    pub async fn drop_role(&self, role: &str) {
        let sql = format!("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}; DROP ROLE {role}");
        self.db().await.batch_execute(&sql).await.expect("dropping a restricted role");
    }

    /// A client of the test's database.
    pub async fn db(&self) -> tokio_postgres::Client {
        connect(&self.database_url).await
    }

    pub fn producer(&self, extra: &[(&str, &str)]) -> FutureProducer {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.stack.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c.create().expect("producer")
    }

    /// Produces `(partition, value)` messages (`None` value: a tombstone) and waits for every
    /// acknowledgement. Returns each message's (partition, offset), in input order.
    pub async fn produce(&self, producer: &FutureProducer, messages: Vec<(i32, Option<Vec<u8>>)>) -> Vec<(i32, i64)> {
        let mut out = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(20_000) {
            let sends = chunk.iter().map(|(p, v)| {
                let mut rec: FutureRecord<'_, (), [u8]> = FutureRecord::to(&self.topic).partition(*p);
                if let Some(v) = v {
                    rec = rec.payload(v.as_slice());
                }
                producer.send(rec, Duration::from_secs(60))
            });
            for r in futures::future::join_all(sends).await {
                let d = r.unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
                out.push((d.partition, d.offset));
            }
        }
        out
    }

    /// Each partition's high watermark.
    pub fn high_watermarks(&self) -> BTreeMap<i32, i64> {
        let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.stack.brokers).create().expect("consumer");
        (0..self.partitions)
            .map(|p| (p, c.fetch_watermarks(&self.topic, p, Duration::from_secs(10)).expect("watermarks").1))
            .collect()
    }

    /// The group's committed offsets in Kafka (-1: none).
    pub fn kafka_committed(&self) -> BTreeMap<i32, i64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.stack.brokers)
            .set("group.id", &self.group)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        committed.elements().iter().map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { -1 })).collect()
    }

    /// Where aurore will write to: every argument of `aurore run` that binds it to this test
    /// (the test's topic, unless `extra` names `--topics`: repeated, they would add up).
    pub fn aurore_args(&self, http_port: u16, extra: &[&str]) -> Vec<String> {
        let topics = if extra.contains(&"--topics") { vec![] } else { vec!["--topics".to_string(), self.topic.clone()] };
        ["run".to_string()]
            .into_iter()
            .chain(topics)
            .chain(["--group-id".into(), self.group.clone(), "--http-addr".into(), format!("127.0.0.1:{http_port}")])
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    }

    /// Starts aurore on this test's topic and database.
    pub fn spawn_aurore(&self, extra: &[&str]) -> Aurore {
        Aurore::spawn(self, extra)
    }

    /// Checks the exactly-once outcome: every offset of every partition up to its high
    /// watermark is in `events` or `dead_letters` exactly once, no id repeats, and both
    /// `consumer_offsets` and Kafka's committed offsets stand at the high watermarks.
    /// Returns (rows, dead letters).
    pub async fn assert_exactly_once(&self) -> (i64, i64) {
        let hw = self.high_watermarks();
        let db = self.db().await;
        let rows = db
            .query(
                "SELECT partition, count(*)::int8, count(DISTINCT \"offset\")::int8, coalesce(min(\"offset\"), -1), coalesce(max(\"offset\"), -1)
                 FROM (SELECT partition, \"offset\" FROM events WHERE topic = $1 UNION ALL SELECT partition, \"offset\" FROM dead_letters WHERE topic = $1) s
                 GROUP BY partition",
                &[&self.topic],
            )
            .await
            .expect("counting rows");
        let mut seen: HashMap<i32, (i64, i64, i64, i64)> =
            rows.iter().map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4)))).collect();
        for (&p, &h) in &hw {
            let got = seen.remove(&p).unwrap_or((0, 0, -1, -1));
            let want = if h == 0 { (0, 0, -1, -1) } else { (h, h, 0, h - 1) };
            assert_eq!(got, want, "partition {p}: (stored, distinct offsets, min, max) against high watermark {h}");
        }
        assert!(seen.is_empty(), "rows of unknown partitions: {seen:?}");
        let dup_ids: i64 = db.query_one("SELECT count(*) - count(DISTINCT id) FROM events", &[]).await.unwrap().get(0);
        assert_eq!(dup_ids, 0, "duplicate ids in events");
        let offsets: BTreeMap<i32, i64> = db
            .query("SELECT partition, next_offset FROM consumer_offsets WHERE topic = $1", &[&self.topic])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let nonempty: BTreeMap<i32, i64> = hw.iter().filter(|(_, h)| **h > 0).map(|(p, h)| (*p, *h)).collect();
        assert_eq!(offsets, nonempty, "consumer_offsets against the high watermarks");
        let committed = wait_until("Kafka's committed offsets to reach the high watermarks", Duration::from_secs(30), || async {
            let c = self.kafka_committed();
            let ok = hw.iter().all(|(p, h)| *h == 0 || c.get(p) == Some(h));
            ok.then_some(c)
        })
        .await;
        assert!(hw.iter().all(|(p, h)| *h == 0 || committed[p] == *h));
        let n_rows: i64 = db.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
        let n_dead: i64 = db.query_one("SELECT count(*) FROM dead_letters", &[]).await.unwrap().get(0);
        (n_rows, n_dead)
    }

    /// Rows plus dead letters persisted so far.
    pub async fn persisted(&self) -> i64 {
        let db = self.db().await;
        db.query_one("SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM dead_letters)", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0)
    }

    /// Waits until `n` messages are persisted.
    pub async fn wait_persisted(&self, n: i64, within: Duration) {
        wait_until(&format!("{n} messages persisted"), within, || async {
            let got = self.persisted().await;
            (got >= n).then_some(got)
        })
        .await;
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let slash = base.rfind('/').expect("database URL with a path");
    format!("{}/{db}{}", &base[..slash], query.map(|q| format!("?{q}")).unwrap_or_default())
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("connecting to {}: {e}", redact(url)));
    tokio::spawn(conn);
    client
}

/// Polls `check` until it returns `Some`, or fails the test after `within`.
pub async fn wait_until<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free local TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// The aurore binary built next to the tests (`cargo build --bin aurore`; scripts/test does).
pub fn aurore_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("AURORE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe.parent().and_then(|deps| deps.parent()).expect("target directory").join("aurore");
    assert!(bin.exists(), "{} does not exist: build it first with `cargo build --bin aurore` (scripts/test does)", bin.display());
    bin
}

/// aurore running as a child process.
pub struct Aurore {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Aurore {
    pub fn spawn(env: &Env, extra: &[&str]) -> Aurore {
        Self::spawn_with(env, extra, free_port(), &env.database_url)
    }

    /// On a given HTTP port, against a given database URL (a [`Proxy`]'s, say).
    pub fn spawn_with(env: &Env, extra: &[&str], port: u16, database_url: &str) -> Aurore {
        let dir = std::env::temp_dir().join("aurore-it");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{}-{port}.log", env.name));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(aurore_bin())
            .args(env.aurore_args(port, extra))
            .env("DATABASE_URL", database_url)
            .env("KAFKA_BROKERS", &env.stack.brokers)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("spawning aurore");
        Aurore { child, port, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().expect("kill").success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// SIGKILL: no flush, no commit, nothing graceful.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "aurore did not exit within {within:?}; log: {}", self.log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// GET on aurore's HTTP server: (status, body); `None` while it is not listening.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(5))).build().into();
        let mut resp = agent.get(&format!("http://127.0.0.1:{}{path}", self.port)).call().ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.body_mut().read_to_string().ok()?))
    }

    /// Waits until /health/ready answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        wait_until(&format!("aurore ready (log {})", self.log.display()), within, || async {
            self.get("/health/ready").filter(|(s, _)| *s == 200).map(|_| ())
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Aurore {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid event as JSON bytes.
pub fn event(service: &str, event_type: &str, i: u64) -> Vec<u8> {
    format!(r#"{{"service":"{service}","event_type":"{event_type}","timestamp":"2026-01-01T00:00:00Z","payload":{{"i":{i},"tags":["a","b"],"nested":{{"ok":true}}}}}}"#).into_bytes()
}

/// `n` valid events spread evenly over `partitions`, with known services.
pub fn events(n: u64, partitions: i32) -> Vec<(i32, Option<Vec<u8>>)> {
    (0..n).map(|i| ((i % partitions as u64) as i32, Some(event(&format!("svc{}", i % 3), "order.created", i)))).collect()
}

/// aurore's /metrics/prometheus, parsed by a real exposition-format parser.
pub struct Metrics(pub prometheus_parse::Scrape);

impl Metrics {
    pub fn scrape(aurore: &Aurore) -> Option<Metrics> {
        let (status, body) = aurore.get("/metrics/prometheus")?;
        assert_eq!(status, 200, "GET /metrics/prometheus");
        let lines = body.lines().map(|l| Ok(l.to_owned()));
        Some(Metrics(prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format")))
    }

    /// The value of the sample `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.samples.iter().find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))).map(|s| {
            match &s.value {
                prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => {
                    *v
                }
                prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
                prometheus_parse::Value::Summary(_) => f64::NAN,
            }
        })
    }

    pub fn help(&self, name: &str) -> Option<&str> {
        self.0.docs.get(name).map(String::as_str)
    }
}

/// Runs a PromQL instant query against the stack's Prometheus; returns (labels, value) rows.
pub fn prometheus_query(expr: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
    let url = std::env::var("PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:9090".into());
    let mut resp = ureq::get(&format!("{url}/api/v1/query"))
        .query("query", expr)
        .call()
        .unwrap_or_else(|e| panic!("Prometheus at {url}: {e} (scripts/stack up starts it)"));
    let body: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["metric"].as_object().unwrap().clone(), r["value"][1].as_str().unwrap().parse().unwrap()))
        .collect()
}

/// A TCP proxy the test controls, to cut aurore off from PostgreSQL (or anything) and let it
/// back, without touching the shared server.
pub struct Proxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// True while frozen: connections are held open and nothing is relayed.
    frozen: tokio::sync::watch::Sender<bool>,
    cut: std::sync::Arc<std::sync::Mutex<tokio::sync::watch::Sender<u64>>>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("proxy listener");
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let cut = std::sync::Arc::new(std::sync::Mutex::new(tx));
        let (frozen, frozen_rx) = tokio::sync::watch::channel(false);
        let is_open = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if !is_open.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let target = target.clone();
                let mut cuts = rx.clone();
                cuts.mark_unchanged();
                let mut freezes = frozen_rx.clone();
                tokio::spawn(async move {
                    // Frozen: held open and silent until thawed, then reset (a relay stopped
                    // mid-message cannot go on).
                    if *freezes.borrow_and_update() {
                        let _ = freezes.wait_for(|f| !*f).await;
                        return;
                    }
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else { return };
                    let frozen = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => false,
                        _ = cuts.changed() => false, // dropping both ends resets the connection
                        _ = freezes.wait_for(|f| *f) => true,
                    };
                    if frozen {
                        let _ = freezes.wait_for(|f| !*f).await;
                    }
                });
            }
        });
        Proxy { port, open, frozen, cut }
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.lock().unwrap().send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Holds every connection, old and new, open and silent: a server that hangs (a frozen
    /// host, a full disk) rather than one that is gone.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Ends a freeze: the held connections are reset, new ones are relayed again.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Env {
    /// `host:port` of the test database's server.
    pub fn database_addr(&self) -> String {
        let after = self.database_url.split_once('@').map_or(self.database_url.as_str(), |(_, a)| a);
        after.split('/').next().unwrap().to_owned()
    }

    /// The test database's URL with its server replaced by `127.0.0.1:port` (a [`Proxy`]).
    pub fn database_url_via(&self, port: u16) -> String {
        self.database_url.replacen(&self.database_addr(), &format!("127.0.0.1:{port}"), 1)
    }
}

/// Runs `scripts/stack <args>` of this checkout (local-stack mode only).
pub fn stack_command(env: &Env, args: &[&str]) {
    assert_eq!(
        env.stack.via, "the running stack",
        "restarting a part needs the local stack (scripts/stack up), not {}",
        env.stack.via
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack");
    let status = Command::new(&script).args(args).status().expect("running scripts/stack");
    assert!(status.success(), "scripts/stack {args:?} failed");
}

/// Sends `signal` (`STOP`, `KILL`, …) to processes of the local stack's PostgreSQL, by the pids
/// `pg_stat_activity` shows (local-stack mode only: in a container they are another namespace's).
pub fn signal_postgres(env: &Env, signal: &str, pids: &[i32]) {
    assert_eq!(
        env.stack.via, "the running stack",
        "signalling PostgreSQL's processes needs the local stack (scripts/stack up), not {}",
        env.stack.via
    );
    let status =
        Command::new("kill").arg(format!("-{signal}")).args(pids.iter().map(|p| p.to_string())).status().expect("running kill");
    assert!(status.success(), "kill -{signal} {pids:?} failed (the tests run as root, or as PostgreSQL's user)");
}

/// The pids of the local stack's PostgreSQL processes whose title (`postgres: walwriter`, …)
/// is one of `titles`: children of the postmaster that runs `backend`, a pid of one of its
/// backends (`pg_backend_pid()`). A role without `pg_read_all_stats` sees no background
/// process's type in `pg_stat_activity`: `/proc` is asked.
pub fn postgres_processes(backend: i32, titles: &[&str]) -> Vec<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).expect("the backend's /proc entry (local stack)");
    // pid (comm) state ppid …: comm may hold spaces, so the fields after its ')' are split.
    let postmaster: i32 =
        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).expect("ppid");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let (Ok(stat), Ok(cmdline)) =
            (std::fs::read_to_string(entry.path().join("stat")), std::fs::read_to_string(entry.path().join("cmdline")))
        else {
            continue;
        };
        let parent =
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<i32>().ok());
        let title = cmdline.trim_end_matches('\0').trim();
        if parent == Some(postmaster) && titles.iter().any(|t| title == format!("postgres: {t}")) {
            pids.push(pid);
        }
    }
    pids
}

impl Env {
    /// Produces `messages` in the background, `chunk` at a time with `pause` between chunks,
    /// so that the stream keeps flowing while the test kills, restarts or cuts things off.
    pub fn produce_stream(
        &self,
        producer: &FutureProducer,
        messages: Vec<(i32, Vec<u8>)>,
        chunk: usize,
        pause: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let (producer, topic) = (producer.clone(), self.topic.clone());
        tokio::spawn(async move {
            for part in messages.chunks(chunk) {
                let sends = part.iter().map(|(p, v)| {
                    producer
                        .send(FutureRecord::<(), [u8]>::to(&topic).partition(*p).payload(v.as_slice()), Duration::from_secs(180))
                });
                for r in futures::future::join_all(sends).await {
                    r.unwrap_or_else(|(e, _)| panic!("produce failed: {e}"));
                }
                tokio::time::sleep(pause).await;
            }
        })
    }
}
