"""`scripts/bench --soak [N]` (default 20,000,000): does aurore's speed hold as its tables grow? (issue 20, point 5)

For each layout, in one run: partitioned (migration V8: daily partitions by received_at, as aurore runs by
default) and unpartitioned (the schema through V7, run with --no-migrate):
1. A fresh database; the table pre-filled with N rows, as if ingested at 1,000,000 a day over the past days
   (one daily partition per million in the partitioned layout), by INSERT … SELECT, then VACUUM ANALYZE (what
   autovacuum did long ago to data that old).
2. COPY rate into a table of that size: psql's binary \\copy of 1,000,000 rows (made like the pre-fill, topic
   `ceiling`) into `events` itself, in a transaction rolled back (rows land where a drain's would).
3. aurore (release build) drains one backlog topic (produced once, shared by both layouts) of N events and a
   million more, fresh group (benchlib.drain: persisted events sampled every 0.2 s), giving the rate of each of
   the first N millions, counted from the first commit (so the first does not include the process's start and
   its group join), the last of them drained while a million is still waiting (so it does not include a drain's
   end, when partitions finish one by one and one flush worker may be left alone: that is reported apart, as
   the tail).
4. COPY rate again, into the table now 2 N rows large; disk bytes per event (tables, indexes, TOAST / rows).
5. P interleaved pairs (--soak-pairs, default 3): a topic of a million events drained into a new, empty database
   of the layout and into the grown one, in alternating order (growth_pairs). The first and the last million of
   step 3 are minutes apart, and this machine has fast and slow phases of minutes (scripts/copy-growth: a heap
   with no index, autovacuum off, went 265 k, 167 k, 142 k, then 226 k, 233 k rows/s): the pairs' ratio is the
   table's growth with the phases falling on both sides.
Targets: the last million drains at >= 0.8 x the first, and at >= 0.8 x the COPY rate at the end.
Prints a table; writes .bench/<time>/soak.json and soak.png. Needs ~70 bytes of disk per event in Kafka and
~700 per row and layout in PostgreSQL (20 M: ~1.5 GB + 2 x 29 GB; one layout's database is dropped before the next).
"""
import datetime
import json
import math
import statistics
import subprocess
import sys
import time

from benchlib import BIN, ENV, PG, ROOT, checkpoint, create_topic, delete_topic, drain, log, psql, run

MILLION = 1_000_000
COLUMNS = 'topic, partition, "offset", id, service, event_type, occurred_at, payload, extra'


def fill_sql(table, first, last, day_start):
    """Rows first..last (offsets), received over the day starting at `day_start` (SQL expression), with payloads
    about the size of `aurore produce`'s."""
    return f"""
    INSERT INTO {table} (topic, partition, "offset", id, service, event_type, occurred_at, received_at, payload)
    SELECT 'prefill', i % 6, i, gen_random_uuid(), 'svc-' || (i % 10), 'order.' || (i % 5),
           r - (i % 600) * interval '1 second', r,
           jsonb_build_object('seq', i, 'order_id', 'ord-' || to_hex(i), 'customer',
               jsonb_build_object('id', i % 100000, 'tier', 'gold', 'country', 'FR'),
               'items', jsonb_build_array(jsonb_build_object('sku', 'sku-' || (i % 977), 'qty', 1 + i % 3, 'price', 19.99)),
               'note', repeat(chr(97 + (i % 26)), 160))
    FROM generate_series({first}, {last}) i,
         LATERAL (SELECT {day_start} + (i - {first}) * (interval '1 day' / {last - first + 1})) t(r)"""


def prefill(db, layout, n):
    days = math.ceil(n / MILLION)
    today = "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    t = time.monotonic()
    for d in range(days):
        first, last = d * MILLION, min(n, (d + 1) * MILLION) - 1
        start = f"({today} - interval '{days - d} days')"
        if layout == "partitioned":
            name = psql(db, f"SELECT 'events_p' || to_char({start} AT TIME ZONE 'UTC', 'YYYYMMDD\"t\"HH24MISS')")
            psql(db, f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({start}) TO ({start} + interval '1 day');"
                     f"COMMENT ON TABLE {name} IS 'aurore: partition of events'")
        psql(db, fill_sql("events", first, last, start))
    log(f"  pre-filled {n:,} rows in {time.monotonic() - t:.0f} s; VACUUM ANALYZE")
    psql(db, "VACUUM ANALYZE events")


def copy_rate(db, path, rows):
    """Binary \\copy of `path` (`rows` rows) into events, rolled back: rows/s."""
    checkpoint()
    t = time.monotonic()
    run(["psql", "-X", "-q", f"{PG}/{db}", "-c", "BEGIN",
         "-c", f"\\copy events ({COLUMNS}) FROM '{path}' WITH (FORMAT binary)", "-c", "ROLLBACK"])
    return rows / (time.monotonic() - t)


def disk_bytes(db):
    return int(psql(db, "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('events') "
                        "WHERE isleaf") or psql(db, "SELECT pg_total_relation_size('events')"))


def autovacuums(db):
    """Autovacuums of events' tables: finished, and running now."""
    leaves = "SELECT relid FROM pg_partition_tree('events')"
    done = psql(db, f"SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables WHERE relid IN ({leaves})")
    running = psql(db, f"SELECT count(*) FROM pg_stat_progress_vacuum WHERE relid IN ({leaves})")
    return int(done), int(running)


def schema(db, layout):
    """A new database `db` with `layout`'s schema; aurore's extra arguments for it."""
    psql("aurore_events", f"CREATE DATABASE {db}")
    if layout == "partitioned":
        subprocess.run([str(BIN), "migrate"], check=True, env=dict(ENV, DATABASE_URL=f"{PG}/{db}", RUST_LOG="warn"))
        return []
    for v in sorted((ROOT / "migrations").glob("V[1-7]__*.sql"), key=lambda p: int(p.name[1:].split("__")[0])):
        psql(db, v.read_text())
    return ["--no-migrate"]


def partitions_every(db, layout, interval):
    """With an `interval`, the partitioned layout's partitions from now on made `interval` long: aurore's extra
    arguments for it."""
    if layout != "partitioned" or not interval:
        return []
    # V8's first partitions (today and tomorrow, empty) would take the whole drain: aurore makes its own.
    for name in psql(db, "SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent IN "
                         "('events'::regclass, 'dead_letters'::regclass)").split():
        if psql(db, f"SELECT NOT EXISTS (SELECT 1 FROM {name})") == "t":
            psql(db, f"DROP TABLE {name}")
    subprocess.run([str(BIN), "migrate", "--partition-interval", interval], check=True,
                   env=dict(ENV, DATABASE_URL=f"{PG}/{db}", RUST_LOG="warn"))
    return ["--partition-interval", interval]


def growth_pairs(db, layout, interval, extra, pair_topics, stamp, out_dir, http):
    """Interleaved pairs, one per topic of `pair_topics` (a million events each): the topic drained into a new,
    empty database of `layout`, and into `db` (grown by the soak), in alternating order. Returns the pairs of
    rates (events/s from the first commit): their ratio tells the table's growth apart from the machine's fast
    and slow phases, which a first million against a last one, minutes apart, cannot."""
    pairs = []
    for i, topic in enumerate(pair_topics):
        rates = {}
        for side in (("empty", "grown") if i % 2 == 0 else ("grown", "empty")):
            if side == "empty":
                target = f"soak_empty_{layout}_{stamp}_{i}"
                args = schema(target, layout) + partitions_every(target, layout, interval)
            else:
                target, args = db, extra
            aurore, _, f = drain(BIN, topic, MILLION, target, f"soak-{side}-{layout}-{stamp}-{i}", http,
                                 out_dir / f"soak-{layout}-{side}-{i}.log", args)
            aurore.terminate()
            aurore.wait(60)
            if side == "empty":
                psql("aurore_events", f"DROP DATABASE {target}")
            rates[side] = f["drain_events_per_s_after_first_commit"]
        pairs.append((rates["empty"], rates["grown"]))
        log(f"{layout}: pair {i + 1}: a million into an empty database {rates['empty']:,.0f}/s, into the grown one "
            f"{rates['grown']:,.0f}/s ({rates['grown'] / rates['empty']:.2f})")
    return pairs


def layout_run(layout, n, topic, ceiling_file, stamp, out_dir, http, interval=None, pair_topics=()):
    db, group = f"soak_{layout}_{stamp}", f"soak-{layout}-{stamp}"
    extra = schema(db, layout)
    log(f"{layout}: pre-filling {n:,} rows")
    prefill(db, layout, n)
    extra += partitions_every(db, layout, interval)
    result = {"layout": layout, "prefill_rows": n, "disk_bytes_before": disk_bytes(db),
              "partition_interval": (interval or "1d") if layout == "partitioned" else None}
    result["copy_rows_per_s_start"] = copy_rate(db, ceiling_file, MILLION)
    log(f"{layout}: COPY into a table of {n:,} rows: {result['copy_rows_per_s_start']:,.0f} rows/s; draining {n:,}")
    vacuums_before, _ = autovacuums(db)
    aurore, series, _ = drain(BIN, topic, n + MILLION, db, group, http, out_dir / f"soak-{layout}.log", extra)
    aurore.terminate()
    aurore.wait(60)
    # Insert-driven autovacuum (autovacuum_vacuum_insert_scale_factor) scans the table a drain fills, meanwhile.
    vacuums_after, running = autovacuums(db)
    result["autovacuums_during_drain"] = vacuums_after - vacuums_before + running
    # Rate of each million: the time between crossing k and k+1 millions (interpolated between samples), the
    # first from the first commit.
    def crossing(level):
        for (ta, da), (tb, db_) in zip([(0.0, 0)] + series, series):
            if db_ >= level:
                return ta + (tb - ta) * (level - da) / max(db_ - da, 1)
        return series[-1][0]
    first = next(d for _, d in series if d > 0)
    levels = [first] + [k * MILLION for k in range(1, n // MILLION + 2)]
    marks = [crossing(level) for level in levels]
    rates = [(lb - la) / max(tb - ta, 1e-9) for la, lb, ta, tb in zip(levels, levels[1:], marks, marks[1:])]
    result["rate_per_million"], result["tail_rate"] = rates[:-1], rates[-1]
    result["first_commit_seconds"] = crossing(first)
    result["drain_events_per_s"] = (n + MILLION) / series[-1][0]
    result["series"] = series
    result["copy_rows_per_s_end"] = copy_rate(db, ceiling_file, MILLION)
    rows = int(psql(db, "SELECT count(*) FROM events"))
    result["disk_bytes_after"] = disk_bytes(db)
    result["disk_bytes_per_event"] = result["disk_bytes_after"] / rows
    rates = result["rate_per_million"]
    result["last_vs_first"] = rates[-1] / rates[0]
    result["last_vs_copy_end"] = rates[-1] / result["copy_rows_per_s_end"]
    # Single millions swing by +-15 % on a shared machine: the same comparison, three millions a side (medians).
    k = min(3, len(rates))
    result["last3_vs_first3"] = statistics.median(rates[-k:]) / statistics.median(rates[:k])
    log(f"{layout}: first million {rates[0]:,.0f}/s, last {rates[-1]:,.0f}/s ({result['last_vs_first']:.2f}); COPY "
        f"at the end {result['copy_rows_per_s_end']:,.0f} rows/s ({result['last_vs_copy_end']:.2f})")
    if pair_topics:
        result["growth_pairs"] = growth_pairs(db, layout, interval, extra, pair_topics, stamp, out_dir, http)
        result["grown_vs_empty"] = statistics.median(g / e for e, g in result["growth_pairs"])
    psql("aurore_events", f"DROP DATABASE {db}")
    return result


def chart(results, path):
    try:
        import matplotlib
    except ImportError:
        if subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"]).returncode != 0:
            log("no matplotlib: chart skipped")
            return
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r, color in zip(results, ["tab:blue", "tab:orange"]):
        rates = r["rate_per_million"]
        xs = [r["prefill_rows"] / MILLION + k + 1 for k in range(len(rates))]
        ax.plot(xs, rates, marker=".", color=color, label=f"{r['layout']}: aurore, each million")
        ax.scatter([xs[0] - 1, xs[-1]], [r["copy_rows_per_s_start"], r["copy_rows_per_s_end"]], marker="x", s=60,
                   color=color, label=f"{r['layout']}: binary COPY, table of that size")
    ax.set_xlabel("millions of rows in events")
    ax.set_ylabel("rows/s")
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower left")
    ax.set_title("aurore draining into a growing table")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(n, interval=None, layouts=("partitioned", "unpartitioned"), pairs=3):
    """`interval`: aurore's --partition-interval in the partitioned layout's drain (default a day, aurore's). The
    drain compresses time: N events that a stream of N a day would bring in a day arrive in a few minutes, so a
    day's partition grows to N rows during the drain. An interval of the drain's time / 24 makes the partitions
    hourly ones of such a stream, each holding about N / 24 rows. The pre-fill stays daily.
    `layouts`: which of the two to run, in that order. `pairs`: how many interleaved pairs of a million into an
    empty database and into the grown one follow each layout's drain (growth_pairs)."""
    if not set(layouts) <= {"partitioned", "unpartitioned"}:
        sys.exit(f"--soak-layouts: unknown layout in {','.join(layouts)} (partitioned, unpartitioned)")
    n = max(MILLION, n // MILLION * MILLION)
    stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    out_dir = ROOT / ".bench" / f"soak-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ROOT / "scripts" / "stack"), "up"], check=True, env=ENV, stdout=subprocess.DEVNULL)
    subprocess.run(["cargo", "build", "--locked", "--release", "--bin", "aurore"], check=True, cwd=ROOT, env=ENV,
                   stderr=subprocess.DEVNULL)
    topic = f"soak-{stamp}"
    create_topic(topic)
    log(f"producing a backlog of {n + MILLION:,} events to {topic}")
    run([str(BIN), "produce", "--topic", topic, "--count", str(n + MILLION), "--id-ratio", "0.5"])
    # Each pair drains a topic of its own: a topic drained once into the grown database is stored there.
    pair_topics = [f"soak-{stamp}-pair-{i}" for i in range(pairs)]
    for t in pair_topics:
        create_topic(t)
        run([str(BIN), "produce", "--topic", t, "--count", str(MILLION), "--id-ratio", "0.5"])
    # The COPY rate's rows: a million made like the pre-fill, as a binary COPY file.
    scratch = f"soak_scratch_{stamp}"
    psql("aurore_events", f"CREATE DATABASE {scratch}")
    psql(scratch, "CREATE TABLE events (topic text, partition int, \"offset\" bigint, id uuid, service text, "
                  "event_type text, occurred_at timestamptz, received_at timestamptz, payload jsonb, extra jsonb)")
    psql(scratch, fill_sql("events", 0, MILLION - 1, "now()").replace("'prefill'", "'ceiling'"))
    ceiling_file = out_dir / "ceiling.bin"
    with open(ceiling_file, "wb") as f:
        subprocess.run(["psql", "-X", f"{PG}/{scratch}", "-c", f"\\copy (SELECT {COLUMNS} FROM events) TO STDOUT "
                        "WITH (FORMAT binary)"], check=True, env=ENV, stdout=f)
    psql("aurore_events", f"DROP DATABASE {scratch}")
    http = "127.0.0.1:3198"
    results = [layout_run(layout, n, topic, ceiling_file, stamp, out_dir, http, interval, pair_topics)
               for layout in layouts]
    ceiling_file.unlink()
    for t in [topic, *pair_topics]:
        delete_topic(t)
    (out_dir / "soak.json").write_text(json.dumps(results, indent=1))
    chart(results, out_dir / "soak.png")
    print(f"\nsoak: {n:,} rows pre-filled, then {n:,} drained (rows/s); partitioned: --partition-interval "
          f"{interval or '1d'}")
    print(f"  {'layout':<14} {'COPY start':>11} {'1st million':>12} {'last million':>13} {'COPY end':>10} "
          f"{'last/1st':>9} {'last/COPY':>10} {'bytes/event':>12} {'last 3/1st 3':>13}")
    for r in results:
        rates = r["rate_per_million"]
        met = "met" if r["last_vs_first"] >= 0.8 and r["last_vs_copy_end"] >= 0.8 else "NOT met"
        print(f"  {r['layout']:<14} {r['copy_rows_per_s_start']:>11,.0f} {rates[0]:>12,.0f} {rates[-1]:>13,.0f} "
              f"{r['copy_rows_per_s_end']:>10,.0f} {r['last_vs_first']:>9.2f} {r['last_vs_copy_end']:>10.2f} "
              f"{r['disk_bytes_per_event']:>12,.0f} {r['last3_vs_first3']:>13.2f}  targets {met}")
        print(f"  {'':<14} each million: {', '.join(f'{x:,.0f}' for x in rates)}; then the tail (the drain's last "
              f"million): {r['tail_rate']:,.0f}; first commit {r['first_commit_seconds']:.1f} s after start; "
              f"autovacuums of events meanwhile: {r['autovacuums_during_drain']}")
        if r.get("growth_pairs"):
            print(f"  {'':<14} interleaved pairs, a million into an empty database / into the grown one (events/s): "
                  f"{', '.join(f'{e:,.0f} / {g:,.0f}' for e, g in r['growth_pairs'])}; grown / empty, median "
                  f"{r['grown_vs_empty']:.2f}")
    print(f"  results: {out_dir / 'soak.json'}, chart: {out_dir / 'soak.png'}")
