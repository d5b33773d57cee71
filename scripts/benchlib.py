"""Helpers shared by scripts/bench and scripts/bench-ab: the local stack's addresses, psql, Kafka's tools,
and one drain of a backlog by an aurore binary, timed and measured from /proc."""
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "aurore"
LIBS = ROOT / ".stack" / "kafka" / "libs"
BROKERS = "127.0.0.1:9092"
PG = "postgres://aurore:aurore@127.0.0.1:5432"
ENV = dict(os.environ, PGPASSWORD="aurore", PATH=f"{pathlib.Path.home()}/.cargo/bin:{os.environ['PATH']}")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, env=ENV, **kw).stdout


def psql(db, sql):
    return run(["psql", "-X", "-q", "-tA", f"{PG}/{db}", "-c", sql]).strip()


def kafka_java(main, *args):
    return run(["java", "-Xmx512m", f"-Dlog4j2.configurationFile={ROOT}/kafka/log4j2-tools.properties",
                "-cp", f"{LIBS}/*", main, *args])


def create_topic(topic, partitions=6):
    kafka_java("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BROKERS, "--create", "--topic", topic,
               "--partitions", str(partitions), "--replication-factor", "1")


def delete_topic(topic):
    kafka_java("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BROKERS, "--delete", "--topic", topic)


def proc_cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def checkpoint():
    """Write out PostgreSQL's dirty buffers, so that a timed phase does not pay for the previous one's
    (a checkpoint during the COPY ceiling measured it up to a third low). Needs the superuser, over the
    local stack's socket."""
    sock = ROOT / ".stack" / "postgres" / "socket"
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    try:
        run([*as_pg, "psql", "-X", "-q", "-h", str(sock), "-U", "postgres", "-d", "postgres", "-c", "CHECKPOINT"])
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        log(f"CHECKPOINT failed ({e}); timings may include a previous phase's checkpoint")


def persisted(db, group):
    out = psql(db, f"SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = '{group}'")
    return int(out or 0)


def drain(binary, topic, n, db, group, http, log_path):
    """`binary` drains `n` events of `topic` into `db`, from process start to the last row committed.
    Returns the process (still running), the series of (seconds, persisted) and the figures."""
    checkpoint()
    aurore = subprocess.Popen([str(binary), "run", "--topics", topic, "--group-id", group, "--http-addr", http],
                              env=dict(ENV, DATABASE_URL=f"{PG}/{db}", RUST_LOG="warn"),
                              stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    series = []
    done = 0
    while done < n:
        time.sleep(0.2)
        done = persisted(db, group)
        series.append((time.monotonic() - t0, done))
        if aurore.poll() is not None:
            sys.exit(f"aurore exited early; see {log_path}")
        if time.monotonic() - t0 > 900:
            sys.exit("drain did not finish in 15 minutes")
    secs = time.monotonic() - t0
    first = next(t for t, d in series if d > 0)
    return aurore, series, dict(drain_seconds=secs, drain_events_per_s=n / secs,
                                drain_events_per_s_after_first_commit=n / max(secs - first, 1e-9),
                                cpu_us_per_event=proc_cpu_seconds(aurore.pid) / n * 1e6,
                                peak_rss_mib=proc_peak_rss_mib(aurore.pid))
