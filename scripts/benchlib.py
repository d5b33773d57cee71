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


class Cpu:
    """Cores used over a phase, by whom: the whole machine (/proc/stat), PostgreSQL (every process named
    postgres, plus what its postmaster reaped: the backends that ended meanwhile), the Kafka broker's JVM
    (kafka.Kafka), and `pid` (aurore, if given). `stop()` returns them as average cores busy."""

    def __init__(self, pid=None):
        self.pid = pid
        self.start = self._snapshot()

    def _snapshot(self):
        with open("/proc/stat") as f:
            cpu = [int(x) for x in f.readline().split()[1:9]]
        groups = {"postgres": 0, "kafka": 0, "aurore": 0}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                stat = open(f"/proc/{d}/stat").read()
                comm = stat[stat.index("(") + 1:stat.rindex(")")]
                fields = stat.rsplit(")", 1)[1].split()
                own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
                if int(d) == self.pid:
                    groups["aurore"] += own
                elif comm == "postgres":
                    groups["postgres"] += own + reaped
                elif comm == "java" and b"kafka.Kafka" in open(f"/proc/{d}/cmdline", "rb").read():
                    groups["kafka"] += own
            except (OSError, ValueError):
                pass  # ended meanwhile
        return sum(cpu), cpu[3] + cpu[4], groups, time.monotonic()

    def stop(self, prefix=""):
        (t0, i0, g0, m0), (t1, i1, g1, m1) = self.start, self._snapshot()
        per_s = os.sysconf("SC_CLK_TCK") * max(m1 - m0, 1e-9)
        out = {f"{prefix}cores_busy": ((t1 - t0) - (i1 - i0)) / per_s}
        out.update({f"{prefix}{k}_cores": (g1[k] - g0[k]) / per_s for k in g0 if k != "aurore" or self.pid})
        return out


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


class Session:
    """One `psql` session to `db`, kept open for a query asked again and again (a drain's progress, every 0.2 s).
    A `psql` started for each query cost ~41 ms of CPU (35 ms in the client, mostly SCRAM's password hashing, and
    6 ms in the backend PostgreSQL forks for it; 50 in a row on the local stack, 4 December): five a second took
    0.2 of the machine's two cores from the drain they timed, which the COPY ceilings never paid. Through this
    session a query costs well under a millisecond. `value()` raises if the query fails."""

    END = "--end-of-answer--"

    def __init__(self, db):
        self._psql = subprocess.Popen(["psql", "-X", "-q", "-tA", f"{PG}/{db}"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)

    def value(self, sql):
        """The first line of `sql`'s answer, or "" if it has none."""
        self._psql.stdin.write(f"{sql};\n\\echo {self.END}\n")
        self._psql.stdin.flush()
        lines = []
        for line in self._psql.stdout:
            if line.rstrip("\n") == self.END:
                break
            lines.append(line.rstrip("\n"))
        else:
            raise RuntimeError(f"psql ended while asked: {sql}")
        if not lines:
            raise RuntimeError(f"no answer (an error above?) to: {sql}")
        return lines[0]

    def close(self):
        self._psql.stdin.close()
        self._psql.wait(5)


def persisted(session, group):
    """Events of `group` stored so far, through `session` (a Session)."""
    return int(session.value(f"SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = '{group}'") or 0)


def drain(binary, topic, n, db, group, http, log_path, extra_args=(), timeline=False):
    """`binary` drains `n` events of `topic` into `db`, from process start to the last row committed (PostgreSQL's
    commit time of it). The schema is made first, untimed, as the ceilings' table is (unless `extra_args` has
    --no-migrate): a drain is timed against a database aurore has run on, not its first start.
    With `timeline`, the drain is also sampled every 50 ms (Timeline), which costs it about 6 % (three interleaved
    pairs of 1 M drains with and without, 1.006-1.086): for finding where it waits, not for timing it.
    Returns the process (still running), the series of (seconds, persisted) and the figures."""
    if "--no-migrate" not in extra_args:
        made = subprocess.run([str(binary), "migrate"], capture_output=True, text=True,
                              env=dict(ENV, DATABASE_URL=f"{PG}/{db}", RUST_LOG="warn"))
        if made.returncode != 0:
            sys.exit(f"{binary} migrate failed: {made.stderr.strip()}")
    checkpoint()
    started = time.time()
    aurore = subprocess.Popen([str(binary), "run", "--topics", topic, "--group-id", group, "--http-addr", http,
                               *extra_args],
                              env=dict(ENV, DATABASE_URL=f"{PG}/{db}", RUST_LOG="warn"),
                              stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    cpu = Cpu(aurore.pid)
    sampler = Timeline(http, db) if timeline else None
    series = []
    done = 0
    progress = Session(db)
    while done < n:
        time.sleep(0.2)
        done = persisted(progress, group)
        series.append((time.monotonic() - t0, done))
        if aurore.poll() is not None:
            sys.exit(f"aurore exited early; see {log_path}")
        if time.monotonic() - t0 > 900:
            sys.exit("drain did not finish in 15 minutes")
    gaps = cpu.stop("drain_")
    progress.close()
    if sampler:
        sampler.stop()
    gaps.update(commit_gaps(db, n, topic))
    if sampler:
        gaps.update(sampler.summary(n))
        gaps.update(sampler.classify(gaps["long_gaps"]))
    secs = gaps["last_commit_at"] - started
    first = gaps["first_commit_at"] - started
    return aurore, series, dict(**gaps,drain_seconds=secs, drain_events_per_s=n / secs,
                                drain_events_per_s_after_first_commit=n / max(secs - first, 1e-9),
                                cpu_us_per_event=proc_cpu_seconds(aurore.pid) / n * 1e6,
                                peak_rss_mib=proc_peak_rss_mib(aurore.pid))


def commit_gaps(db, n, topic, batch_size=4000):
    """The gaps between aurore's commits during a drain of `n` events of `topic` into `db`, exactly: PostgreSQL's own
    commit time of every transaction that stored rows (pg_xact_commit_timestamp; the stack sets
    track_commit_timestamp). A gap counts while more than `batch_size` events were still to store after the
    commit that opened it, from the first commit on. Also each transaction's time from its start (received_at,
    which is now()) to its commit. Milliseconds; `long_gaps`, the gaps over 100 ms that count, as (start, end) Unix
    seconds."""
    try:
        rows = psql(db, "SELECT extract(epoch FROM c), extract(epoch FROM c - s), n FROM ("
                        "SELECT pg_xact_commit_timestamp(min(xmin::text)::xid) c, min(received_at) s, count(*) n FROM ("
                        f"SELECT xmin, received_at FROM events WHERE topic = '{topic}' "
                        f"UNION ALL SELECT xmin, received_at FROM dead_letters WHERE topic = '{topic}') r "
                        "GROUP BY xmin::text) t ORDER BY 1")
        commits = [tuple(float(x) for x in l.split("|")) for l in rows.splitlines() if l]
    except (subprocess.CalledProcessError, ValueError) as e:
        sys.exit(f"no commit timestamps ({e}): PostgreSQL runs without track_commit_timestamp; run scripts/stack up")
    gaps, long_gaps, done = [], [], 0
    for (prev, _, rows_prev), (at, _, _) in zip(commits, commits[1:]):
        done += rows_prev
        if n - done > batch_size:
            gaps.append((at - prev) * 1000)
            if at - prev > 0.1:
                long_gaps.append((prev, at))
    gaps.sort()
    spans = sorted(c[1] * 1000 for c in commits)
    # Transactions open at once, averaged over time from the first start to the last commit (each from its
    # start, received_at, to its commit).
    edges = sorted([(c[0] - c[1], 1) for c in commits] + [(c[0], -1) for c in commits])
    open_time, running, last = 0.0, 0, edges[0][0]
    for at, step in edges:
        open_time += running * (at - last)
        running, last = running + step, at
    pick = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0
    return dict(first_commit_at=commits[0][0], last_commit_at=commits[-1][0],
                commit_gap_max_ms=gaps[-1] if gaps else 0.0, commit_gap_p50_ms=pick(gaps, 0.5),
                commit_gap_p99_ms=pick(gaps, 0.99), commit_gaps_over_100ms=sum(g > 100 for g in gaps),
                long_gaps=long_gaps, commits=len(commits), transaction_ms_p50=pick(spans, 0.5),
                transaction_ms_max=spans[-1],
                transactions_at_once_mean=open_time / max(edges[-1][0] - edges[0][0], 1e-9))


def pressure():
    """Linux's pressure-stall totals, microseconds: I/O "full" and CPU "some" (zeros without PSI)."""
    try:
        io_full = open("/proc/pressure/io").read().splitlines()[1]
        cpu_some = open("/proc/pressure/cpu").readline()
        return tuple(int(l.rsplit("total=", 1)[1]) for l in (io_full, cpu_some))
    except (OSError, IndexError, ValueError):
        return 0, 0


class Timeline:
    """What a drain does every 50 ms, to find where PostgreSQL waits: aurore's own metrics (events persisted,
    buffer fill, fetch state, busy flush workers), scraped from `http`, and every backend of `db` from
    pg_stat_activity (its state, its wait and the statement it runs), through one `psql` running `\\watch 0.05`.
    Times are Unix seconds. `stop()` ends both and returns the samples."""

    METRICS = ("events_processed_total", "buffer_size", "buffer_size_bytes", "kafka_fetch_paused", "worker_busy",
               "kafka_consumer_lag_messages")

    def __init__(self, http, db):
        import threading
        self.metrics, self.backends, self.pressure = [], [], []
        self._stop = threading.Event()
        query = ("SELECT extract(epoch FROM statement_timestamp()), pid, state, coalesce(wait_event_type, ''), "
                 "coalesce(wait_event, ''), left(regexp_replace(query, '\\s+', ' ', 'g'), 24) FROM pg_stat_activity "
                 f"WHERE datname = '{db}' AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
        self._psql = subprocess.Popen(["psql", "-X", "-q", "-tA", "-F", "\t", f"{PG}/{db}"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=ENV)
        self._psql.stdin.write(f"{query} \\watch 0.05\n")
        self._psql.stdin.flush()
        self._threads = [threading.Thread(target=self._scrape, args=(http,), daemon=True),
                         threading.Thread(target=self._read_psql, daemon=True)]
        for t in self._threads:
            t.start()

    def _scrape(self, http):
        import urllib.request
        next_at = time.time()
        while not self._stop.is_set():
            try:
                body = urllib.request.urlopen(f"http://{http}/metrics/prometheus", timeout=1).read().decode()
                at = time.time()
                values = {}
                for line in body.splitlines():
                    name, _, value = line.partition(" ")
                    if name in self.METRICS:
                        values[name] = float(value)
                self.metrics.append((at, values))
                self.pressure.append((at, *pressure()))
            except OSError:
                pass
            next_at += 0.05
            time.sleep(max(0.0, next_at - time.time()))

    def _read_psql(self):
        for line in self._psql.stdout:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 6:
                self.backends.append((float(parts[0]), int(parts[1]), *parts[2:]))

    def stop(self):
        self._stop.set()
        self._psql.terminate()
        self._psql.wait(5)
        for t in self._threads:
            t.join(5)
        return self

    def classify(self, long_gaps):
        """What each gap over 100 ms (`long_gaps`, from commit_gaps) was, by the samples within it, counted by kind
        (README, Performance, "What the gaps over 100 ms are"): `io`, every process stalled on I/O for at least a
        quarter of the gap (Linux's pressure-stall "full" counter, /proc/pressure/io: a checkpoint's writes and
        fsync, or the disk); `workers_idle`, a sample with no flush worker busy (waiting for batches: the buffer full
        of committed batches awaiting their durability flush, or fetching); `cpu`, runnable tasks waiting for a core at
        least half of the gap (/proc/pressure/cpu "some"); `other`, none of these (the machine itself, or a gap
        between two samples)."""
        kinds = {"io": 0, "workers_idle": 0, "cpu": 0, "other": 0}
        for start, end in long_gaps:
            before = [p for p in self.pressure if p[0] <= start]
            after = [p for p in self.pressure if p[0] >= end]
            inside = [v for at, v in self.metrics if start <= at <= end]
            share = None
            if before and after:
                (t0, io0, cpu0), (t1, io1, cpu1) = before[-1], after[0]
                span = max(t1 - t0, 1e-9) * 1e6  # the counters are microseconds
                share = ((io1 - io0) / span, (cpu1 - cpu0) / span)
            if share and share[0] >= 0.25:
                kinds["io"] += 1
            elif any(v.get("worker_busy", 1) == 0 for v in inside):
                kinds["workers_idle"] += 1
            elif share and share[1] >= 0.5:
                kinds["cpu"] += 1
            else:
                kinds["other"] += 1
        return {f"long_gaps_{k}": v for k, v in kinds.items()}

    def summary(self, n, batch_size=4000):
        """For a drain of `n` events: the longest time without a commit (events_processed_total not moving)
        while more than a batch was still to persist, counted from the first commit; and how many COPYs ran at
        once, as shares of the pg_stat_activity samples (the pool's connections are not tied to a worker, so
        this is per sample, not per worker)."""
        longest, longest_at, last_at, last_done = 0.0, None, None, 0
        for at, v in self.metrics:
            done = v.get("events_processed_total", 0)
            if done > last_done:
                if last_at is not None and n - last_done > batch_size and at - last_at > longest:
                    longest, longest_at = at - last_at, last_at
                last_at, last_done = at, done
        first = next((at for at, v in self.metrics if v.get("events_processed_total", 0) > 0), None)
        by_sample = {}
        for at, pid, state, wtype, wevent, query in self.backends:
            if first is not None and first <= at <= (last_at or at):
                running = state == "active" and query.upper().startswith("COPY")
                by_sample[at] = by_sample.get(at, 0) + running
        copies = {}
        for k in by_sample.values():
            copies[k] = copies.get(k, 0) + 1
        total = max(sum(copies.values()), 1)
        return dict(longest_gap_ms=longest * 1000, longest_gap_at=longest_at,
                    copies_running_share={k: v / total for k, v in sorted(copies.items())},
                    copies_running_mean=sum(k * v for k, v in copies.items()) / total,
                    buffer_empty_samples=sum(1 for at, v in self.metrics
                                             if first and at > first and v.get("buffer_size") == 0
                                             and n - v.get("events_processed_total", 0) > 4 * batch_size))
