"""`scripts/bench --memory [BIN]`: is aurore's memory bounded by its configuration, whatever the message size?
(issue 19, point 4)

For each message size (16 KB, 100 KB, 500 KB, and 1,000,000 bytes, just under the default --max-event-bytes of
1 MiB) and each buffer (the default --buffer-capacity-bytes, 64 MiB, and 16 MiB): a backlog of about 768 MB
(`aurore produce --payload-bytes`, 6 partitions, so the buffer fills and holds many times over), drained by aurore
(the release build, or BIN) into a fresh database with a fresh group; the process's peak RSS (VmHWM, /proc).
The bound it is held to: --buffer-capacity-bytes + 64 MiB (README, "Memory"). Prints a table; writes
.bench/memory-<time>/memory.json.
"""
import datetime
import json
import signal
import subprocess

from benchlib import BIN, ENV, PG, ROOT, create_topic, delete_topic, drain, log, psql, run

MIB = 1 << 20
SIZES = [16_000, 100_000, 500_000, 1_000_000]
BUFFERS = [64 * MIB, 16 * MIB]
OVERHEAD = 64 * MIB
BACKLOG_BYTES = 768_000_000


def main(binary=None):
    binary = binary or BIN
    stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    out_dir = ROOT / ".bench" / f"memory-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ROOT / "scripts" / "stack"), "up"], check=True, env=ENV, stdout=subprocess.DEVNULL)
    if binary == BIN:
        subprocess.run(["cargo", "build", "--locked", "--release", "--bin", "aurore"], check=True, cwd=ROOT,
                       env=ENV, stderr=subprocess.DEVNULL)
    results = []
    for size in SIZES:
        topic, count = f"memory-{size}-{stamp}", BACKLOG_BYTES // size
        create_topic(topic)
        log(f"producing {count:,} messages of {size:,} bytes to {topic}")
        run([str(BIN), "produce", "--topic", topic, "--count", str(count), "--payload-bytes", str(size - 300)])
        for buffer in BUFFERS:
            db = f"memory_{size}_{buffer // MIB}_{stamp}"
            psql("aurore_events", f"CREATE DATABASE {db}")
            aurore, _, figures = drain(binary, topic, count, db, f"{db}-group", "127.0.0.1:3197",
                                       out_dir / f"{db}.log", ["--buffer-capacity-bytes", str(buffer)])
            aurore.send_signal(signal.SIGTERM)
            aurore.wait(60)
            psql("aurore_events", f"DROP DATABASE {db}")
            r = dict(message_bytes=size, messages=count, buffer_capacity_bytes=buffer,
                     bound_mib=(buffer + OVERHEAD) / MIB, peak_rss_mib=figures["peak_rss_mib"],
                     drain_mb_per_s=size * count / figures["drain_seconds"] / 1e6)
            log(f"{size:,} B x {count:,}, buffer {buffer // MIB} MiB: peak RSS {r['peak_rss_mib']:.0f} MiB "
                f"(bound {r['bound_mib']:.0f})")
            results.append(r)
        delete_topic(topic)
    (out_dir / "memory.json").write_text(json.dumps(results, indent=1))
    print(f"\nmemory: peak RSS against --buffer-capacity-bytes + {OVERHEAD // MIB} MiB, {BACKLOG_BYTES / 1e6:.0f} MB "
          "drained per row")
    print(f"  {'message bytes':>13} {'messages':>9} {'buffer MiB':>10} {'peak RSS MiB':>12} {'bound MiB':>9} "
          f"{'MB/s':>6}")
    for r in results:
        met = "met" if r["peak_rss_mib"] <= r["bound_mib"] else "NOT met"
        print(f"  {r['message_bytes']:>13,} {r['messages']:>9,} {r['buffer_capacity_bytes'] // MIB:>10} "
              f"{r['peak_rss_mib']:>12.0f} {r['bound_mib']:>9.0f} {r['drain_mb_per_s']:>6.0f}  {met}")
    print(f"  results: {out_dir / 'memory.json'}")
