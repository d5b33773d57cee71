#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json, the dashboards Grafana provisions.

Edit the panels here and run `python3 grafana/generate.py`; commit both. The integration test
tests/dashboards.rs checks the JSON files are what this prints, that panel ids are unique, that
every datasource uid is provisioned, and that every query returns data from a live Prometheus.

Why plain dicts, not grafana-foundation-sdk (tried 1769699590!11.3.0, the Grafana 11.3 build): the port was
361 lines against 366, the panels identical; at run time it checks only enum member and option names and
1 <= w <= 24, h > 0 (types only under mypy, which the generic panel() helper defeats); it adds 152 lines of
defaults Grafana does not need to the JSON and drops variables' definition; and it needs Python >= 3.11, a venv
with a 4.9 MB package and an epoch pin (a bare `pip install` picks the Grafana 10.1 build).
"""
import json
import pathlib
import sys

DS = {"type": "prometheus", "uid": "prometheus"}  # grafana/provisioning/datasources/prometheus.yml
OUT = pathlib.Path(__file__).resolve().parent / "dashboards"

GREEN, YELLOW, ORANGE, RED, BLUE = "green", "yellow", "orange", "red", "blue"


def steps(*pairs):
    """Threshold steps: the first colour applies from -inf, then (value, colour) pairs."""
    first, *rest = pairs
    return {"mode": "absolute", "steps": [{"color": first, "value": None}] + [{"color": c, "value": v} for v, c in rest]}


class Board:
    def __init__(self, uid, title, description, variables=()):
        self.uid, self.title, self.description = uid, title, description
        self.variables = list(variables)
        self.panels, self.x, self.y, self.row_h = [], 0, 0, 0

    def row(self, title):
        self.newline()
        self.panels.append({"type": "row", "title": title, "id": len(self.panels) + 1, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def newline(self):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0

    def panel(self, kind, title, description, targets, unit, thresholds, w=12, h=8, mappings=(), options=None,
              min_=None, max_=None, instant=False, overrides=()):
        if self.x + w > 24:
            self.newline()
        defaults = {"unit": unit, "thresholds": thresholds, "mappings": list(mappings), "color": {"mode": "thresholds"}}
        if kind == "timeseries":
            defaults["color"] = {"mode": "palette-classic"}
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                                  "thresholdsStyle": {"mode": "line"}}
        if min_ is not None:
            defaults["min"] = min_
        if max_ is not None:
            defaults["max"] = max_
        panel = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": defaults, "overrides": list(overrides)},
            "options": options or {},
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend,
                 "instant": instant or kind in ("table", "bargauge"), "range": not (instant or kind in ("table", "bargauge"))}
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "table":
            panel["transformations"] = [{"id": "merge"}, {"id": "organize", "options": {
                "excludeByName": {"Time": True, "__name__": True, "job": True, "instance": True}}}]
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def json(self):
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["aurore"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": False,
            "refresh": "15s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "panels": self.panels,
        }


def query_var(name, label, query):
    """A multi-value variable over a label's values; "All" is the regex .* (queries use =~)."""
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": "var"}, "definition": query, "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
            "sort": 1}


HEALTH_MAP = [{"type": "value", "options": {"1": {"text": "healthy", "color": GREEN},
                                            "0.5": {"text": "degraded", "color": ORANGE},
                                            "0": {"text": "down", "color": RED}}}]
BREAKER_MAP = [{"type": "value", "options": {"0": {"text": "closed", "color": GREEN},
                                             "1": {"text": "half-open", "color": ORANGE},
                                             "2": {"text": "open", "color": RED}}}]
UP_MAP = [{"type": "value", "options": {"1": {"text": "up", "color": GREEN}, "0": {"text": "down", "color": RED}}}]
PAUSED_MAP = [{"type": "value", "options": {"0": {"text": "fetching", "color": GREEN},
                                            "1": {"text": "paused", "color": ORANGE}}}]
STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "background",
        "graphMode": "none", "textMode": "value_and_name"}
I = 'instance=~"$instance"'


def overview():
    b = Board("aurore-overview", "aurore overview",
              "aurore drains Kafka into PostgreSQL: throughput, buffer, lag, batches, latency, dead letters, health, "
              "business events and table partitions. Source: aurore's /metrics/prometheus and pg_stat_statements.",
              [query_var("instance", "instance", 'label_values(up{job="aurore"}, instance)')])
    b.row("Throughput")
    b.panel("timeseries", "Throughput",
            "Events persisted per second (rows and dead letters): the counter's rate, and aurore's own 5-second "
            "average (events_throughput_per_second). Under steady load it follows the producers' rate.",
            [(f'sum(rate(events_processed_total{{{I}}}[$__rate_interval])) + sum(rate(events_dead_lettered_total{{{I}}}[$__rate_interval]))', "persisted (rate)"),
             (f'sum(events_throughput_per_second{{{I}}})', "persisted (5 s average)")],
            "ops", steps(GREEN), min_=0)
    b.panel("stat", "Processed",
            "Events persisted as rows since each instance started (events_processed_total), dead letters and "
            "messages skipped as already stored (replays after a crash or rebalance).",
            [(f'sum(events_processed_total{{{I}}})', "rows"),
             (f'sum(events_dead_lettered_total{{{I}}})', "dead letters"),
             (f'sum(events_replayed_skipped_total{{{I}}})', "replays skipped")],
            "short", steps(BLUE), w=12, options=STAT)
    b.row("Buffer and Kafka")
    b.panel("timeseries", "Buffer size",
            "Events fetched from Kafka and not yet persisted, against the capacity at which fetching pauses. "
            "A buffer pinned at capacity means PostgreSQL is the bottleneck; nothing is dropped.",
            [(f'sum by (instance) (buffer_size{{{I}}})', "{{instance}} size"),
             (f'sum by (instance) (buffer_capacity{{{I}}})', "{{instance}} capacity")],
            "short", steps(GREEN), w=8, min_=0)
    b.panel("gauge", "Buffer utilization",
            "Fill of the fuller of the two capacities (events, bytes). Above 75 % aurore is near pausing; the "
            "AuroreBufferNearlyFull alert fires above 90 % for 2 minutes.",
            [(f'max(buffer_utilization_percent{{{I}}})', "utilization")],
            "percent", steps(GREEN, (75, ORANGE), (90, RED)), w=4, min_=0, max_=100,
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    b.panel("timeseries", "Consumer lag per partition",
            "Messages between each partition's high watermark and the group's committed offset, from librdkafka "
            "statistics. Lag that grows for 5 minutes fires AuroreConsumerLagGrowing.",
            [(f'sum by (topic, partition) (kafka_consumer_lag{{{I}}})', "{{topic}}/{{partition}}")],
            "short", steps(GREEN, (10000, ORANGE), (100000, RED)), w=12, min_=0)
    b.panel("timeseries", "Fetch paused and partitions",
            "1 while fetching is paused (buffer full or circuit breaker open); partitions assigned to each instance; "
            "rebalances per minute.",
            [(f'max by (instance) (kafka_fetch_paused{{{I}}})', "{{instance}} paused"),
             (f'sum by (instance) (kafka_assigned_partitions{{{I}}})', "{{instance}} partitions"),
             (f'sum by (instance) (increase(kafka_rebalances_total{{{I}}}[$__rate_interval]))', "{{instance}} rebalances")],
            "short", steps(GREEN), w=12, min_=0)
    b.row("Batches and latency")
    b.panel("timeseries", "Batch processing time",
            "Time from a batch reaching its flush worker to its commit, retries included (p50, p95, p99 of "
            "worker_batch_processing_seconds). Above 1 s PostgreSQL is slow or retrying.",
            [(f'histogram_quantile({q}, sum by (le) (rate(worker_batch_processing_seconds_bucket{{{I}}}[$__rate_interval])))', f"p{int(q * 100)}")
             for q in (0.5, 0.95, 0.99)],
            "s", steps(GREEN, (0.5, ORANGE), (1, RED)), w=8, min_=0)
    b.panel("timeseries", "End-to-end latency",
            "From the event's own timestamp to its row committed in PostgreSQL (p50, p95, p99). The target is "
            "p99 under 250 ms at steady load; producer clock skew shows up here too.",
            [(f'histogram_quantile({q}, sum by (le) (rate(event_end_to_end_latency_seconds_bucket{{{I}}}[$__rate_interval])))', f"p{int(q * 100)}")
             for q in (0.5, 0.95, 0.99)],
            "s", steps(GREEN, (0.25, ORANGE), (1, RED)), w=8, min_=0)
    b.panel("timeseries", "Workers and batch size",
            "Flush workers persisting a batch right now, and the median events per committed batch.",
            [(f'sum(worker_busy{{{I}}})', "busy workers"),
             (f'histogram_quantile(0.5, sum by (le) (rate(worker_batch_size_bucket{{{I}}}[$__rate_interval])))', "median batch size")],
            "short", steps(GREEN), w=8, min_=0)
    b.panel("timeseries", "Flush errors",
            "Failed attempts to persist a batch per second, by kind: transient (retried), data (bad rows "
            "isolated into dead letters), fence (partition owned by another instance), fatal; and committed "
            "batches a PostgreSQL crash lost before they reached its disk (read again from Kafka).",
            [(f'sum by (kind) (rate(worker_flush_errors_total{{{I}}}[$__rate_interval]))', "{{kind}}"),
             (f'sum(rate(offset_fence_conflicts_total{{{I}}}[$__rate_interval]))', "fence conflicts"),
             (f'sum(rate(worker_batches_not_durable_total{{{I}}}[$__rate_interval]))', "lost by a crash")],
            "ops", steps(GREEN, (0.1, RED)), w=12, min_=0)
    b.panel("timeseries", "Dead letters",
            "Messages persisted into dead_letters per second, by reason (invalid JSON, missing fields, too large, "
            "rejected by PostgreSQL...). More than one a minute of a reason for 5 minutes fires "
            "AuroreDeadLettersRising.",
            [(f'sum by (reason) (rate(events_dead_lettered_total{{{I}}}[$__rate_interval]))', "{{reason}}")],
            "ops", steps(GREEN, (0.01, ORANGE)), w=12, min_=0)
    b.panel("timeseries", "Dead letters stored, replayed, purged",
            "Dead letters in the table now, by topic and reason (from dead_letter_counts: every instance reports "
            "the same table, hence max), and those replayed into events or purged per second "
            "(aurore dead-letters replay | purge).",
            [(f'max by (topic, reason) (dead_letters_stored{{{I}}})', "stored {{topic}} {{reason}}"),
             (f'max by (topic) (rate(dead_letters_replayed_total{{{I}}}[$__rate_interval]))', "replayed {{topic}}"),
             (f'max by (topic) (rate(dead_letters_purged_total{{{I}}}[$__rate_interval]))', "purged {{topic}}")],
            "short", steps(GREEN), w=24, min_=0)
    b.row("Health")
    b.panel("stat", "Health",
            "Overall status of each instance, as /health reports it: healthy, degraded (PostgreSQL down, breaker "
            "half-open or buffer full) or down (breaker open, brokers down or topic missing).",
            [(f'min by (instance) (app_health_status{{{I}}})', "{{instance}}")],
            "none", steps(RED, (0.5, ORANGE), (1, GREEN)), w=6, h=5, mappings=HEALTH_MAP, options=STAT)
    b.panel("stat", "Circuit breaker",
            "PostgreSQL circuit breaker: closed (writing), half-open (probing), open (paused, nothing committed, "
            "nothing lost). Open for 30 s fires AuroreCircuitBreakerOpen.",
            [(f'max by (instance) (circuit_breaker_state{{{I}}})', "{{instance}}")],
            "none", steps(GREEN, (1, ORANGE), (2, RED)), w=6, h=5, mappings=BREAKER_MAP, options=STAT)
    b.panel("stat", "PostgreSQL connection",
            "Whether aurore's last PostgreSQL operation succeeded.",
            [(f'min by (instance) (database_connection_up{{{I}}})', "{{instance}}")],
            "none", steps(RED, (1, GREEN)), w=6, h=5, mappings=UP_MAP, options=STAT)
    b.panel("stat", "Fetching",
            "Whether the consumer is fetching or paused (a full buffer or an open breaker pauses it; it keeps "
            "polling, so it stays in the group).",
            [(f'max by (instance) (kafka_fetch_paused{{{I}}})', "{{instance}}")],
            "none", steps(GREEN, (1, ORANGE)), w=6, h=5, mappings=PAUSED_MAP, options=STAT)
    b.row("Business events")
    b.panel("bargauge", "Events by service",
            "Events persisted per service since the table began, from the event_counts table (services beyond "
            "--max-service-labels are summed as \"other\").",
            [('max by (service) (business_events_by_service{' + I + '})', "{{service}}")],
            "short", steps(BLUE), w=12,
            options={"orientation": "horizontal", "displayMode": "gradient",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    b.panel("bargauge", "Events in the last 24 h by service",
            "Events whose event time falls in the last 24 hours (hour-granular), per service.",
            [('max by (service) (business_events_last_24h_by_service{' + I + '})', "{{service}}")],
            "short", steps(BLUE), w=12,
            options={"orientation": "horizontal", "displayMode": "gradient",
                     "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})
    b.panel("timeseries", "Business events over time",
            "All events stored, and those of the last 24 h of event time.",
            [(f'max(business_events_total{{{I}}})', "total"),
             (f'max(business_events_last_24h{{{I}}})', "last 24 h")],
            "short", steps(BLUE), w=24, min_=0)
    b.row("PostgreSQL cost of ingestion")
    b.panel("timeseries", "Events persisted and PostgreSQL statements per second",
            "The original design's practical example: events aurore persists per second beside the statements "
            "PostgreSQL executes per second (pg_stat_statements, all databases). Batching keeps statements far "
            "below events.",
            [("aurore:events_persisted:rate1m", "events persisted/s"),
             ("sum(rate(pg_stat_statements_calls[$__rate_interval]))", "statements/s")],
            "ops", steps(GREEN), w=12, min_=0)
    b.panel("timeseries", "Statements per persisted event",
            "PostgreSQL statements per event persisted: how well COPY batching amortises the per-batch statements "
            "(fence update, COPY, commit). Near 0 under load; above 0.1 batches are small.",
            [("aurore:pg_statements_per_persisted_event:ratio_rate1m", "statements per event")],
            "short", steps(GREEN, (0.1, ORANGE), (1, RED)), w=12, min_=0)
    b.row("Table partitions")
    b.panel("timeseries", "Partitions",
            "Partitions attached to events and dead_letters (table_partitions; every instance reports the same "
            "tables, hence max). Maintenance creates them ahead and retention (--retention) drops the oldest, so "
            "under steady settings the count stays flat.",
            [(f'max by (table) (table_partitions{{{I}}})', "{{table}}")],
            "short", steps(GREEN), w=8, min_=0)
    b.panel("timeseries", "Oldest partition age",
            "Time since the start of each table's oldest partition: what retention drops next. With --retention "
            "it stays between the retention and the retention plus one partition interval; with none "
            "(table_partition_retention_seconds 0) it grows.",
            [(f'time() - max by (table) (table_partition_oldest_timestamp_seconds{{{I}}})', "{{table}}")],
            "s", steps(GREEN), w=8, min_=0)
    b.panel("timeseries", "Partitions size",
            "On-disk size of all of each table's partitions: heap, indexes and TOAST (table_partitions_bytes).",
            [(f'max by (table) (table_partitions_bytes{{{I}}})', "{{table}}")],
            "bytes", steps(GREEN), w=8, min_=0)
    b.panel("timeseries", "Partitions ahead",
            "How far past now (the database's clock) each table's created partitions reach, beside the partition "
            "interval (--partition-interval). Healthy between one and two intervals; under one the next partition "
            "is missing, and 10 minutes of that fires AurorePartitionsNotCreatedAhead.",
            [(f'min by (table) (table_partitions_ahead_seconds{{{I}}})', "{{table}}"),
             (f'max(table_partition_interval_seconds{{{I}}})', "interval")],
            "s", steps(GREEN), w=12)
    b.panel("timeseries", "Maintenance errors and missing partitions",
            "Failed partition maintenance passes (retried; the log line says why: maintenance needs the table "
            "owner's rights on events and dead_letters), and flushes that found no partition for their rows "
            "(retried, nothing lost, but ingest stalls: any fires AurorePartitionMissing).",
            [(f'sum by (instance) (increase(table_partition_maintenance_errors_total{{{I}}}[$__rate_interval]))', "{{instance}} maintenance errors"),
             (f'sum by (instance) (increase(table_partition_missing_total{{{I}}}[$__rate_interval]))', "{{instance}} no partition (retried)")],
            "short", steps(GREEN, (1, RED)), w=12, min_=0)
    b.panel("stat", "Partitions created and dropped",
            "Partitions created ahead by maintenance, and dropped by retention (--retention), over the "
            "dashboard's range, per table.",
            [(f'sum by (table) (increase(table_partitions_created_total{{{I}}}[$__range]))', "created {{table}}"),
             (f'sum by (table) (increase(table_partitions_dropped_total{{{I}}}[$__range]))', "dropped {{table}}")],
            "short", steps(BLUE), w=24, h=5, options=STAT)
    return b


def postgresql():
    D = 'datname=~"$datname"'
    b = Board("aurore-postgresql", "PostgreSQL",
              "PostgreSQL as aurore loads it, from postgres_exporter: pg_stat_database, pg_stat_statements, cache "
              "hit rate and connections.",
              [query_var("datname", "database", 'label_values(pg_stat_database_xact_commit{datname!~"template.*"}, datname)')])
    b.row("pg_stat_database")
    b.panel("timeseries", "Transactions",
            "Commits and rollbacks per second per database (pg_stat_database). Rollbacks come from isolated bad "
            "rows and fence conflicts; a steady stream of them deserves a look.",
            [(f'sum by (datname) (rate(pg_stat_database_xact_commit{{{D}}}[$__rate_interval]))', "{{datname}} commits"),
             (f'sum by (datname) (rate(pg_stat_database_xact_rollback{{{D}}}[$__rate_interval]))', "{{datname}} rollbacks")],
            "ops", steps(GREEN), w=12, min_=0)
    b.panel("timeseries", "Rows written and read",
            "Tuples inserted, updated, deleted and fetched per second (pg_stat_database).",
            [(f'sum by (datname) (rate(pg_stat_database_tup_inserted{{{D}}}[$__rate_interval]))', "{{datname}} inserted"),
             (f'sum by (datname) (rate(pg_stat_database_tup_updated{{{D}}}[$__rate_interval]))', "{{datname}} updated"),
             (f'sum by (datname) (rate(pg_stat_database_tup_deleted{{{D}}}[$__rate_interval]))', "{{datname}} deleted"),
             (f'sum by (datname) (rate(pg_stat_database_tup_fetched{{{D}}}[$__rate_interval]))', "{{datname}} fetched")],
            "ops", steps(GREEN), w=12, min_=0)
    b.panel("timeseries", "Cache hit rate",
            "Share of block reads served from shared buffers. Ingestion appends, so it stays high; below 90 % "
            "reads are going to disk.",
            [(f'sum by (datname) (rate(pg_stat_database_blks_hit{{{D}}}[$__rate_interval])) / '
              f'(sum by (datname) (rate(pg_stat_database_blks_hit{{{D}}}[$__rate_interval])) + '
              f'sum by (datname) (rate(pg_stat_database_blks_read{{{D}}}[$__rate_interval])))', "{{datname}}")],
            "percentunit", steps(RED, (0.9, ORANGE), (0.99, GREEN)), w=8, min_=0, max_=1)
    b.panel("timeseries", "Connections",
            "Backends connected per database (pg_stat_database numbackends) against max_connections. aurore "
            "holds its pool (--db-pool-size) plus one per flush.",
            [(f'sum by (datname) (pg_stat_database_numbackends{{{D}}})', "{{datname}}"),
             ('max(pg_settings_max_connections)', "max_connections")],
            "short", steps(GREEN), w=8, min_=0)
    b.panel("timeseries", "Deadlocks, conflicts and temp files",
            "Deadlocks and recovery conflicts per second, and bytes spilled to temporary files.",
            [(f'sum by (datname) (rate(pg_stat_database_deadlocks{{{D}}}[$__rate_interval]))', "{{datname}} deadlocks"),
             (f'sum by (datname) (rate(pg_stat_database_conflicts{{{D}}}[$__rate_interval]))', "{{datname}} conflicts"),
             (f'sum by (datname) (rate(pg_stat_database_temp_bytes{{{D}}}[$__rate_interval]))', "{{datname}} temp bytes/s")],
            "short", steps(GREEN, (0.01, RED)), w=8, min_=0)
    b.row("pg_stat_statements")
    b.panel("table", "Top statements by total time",
            "The ten statements with the most execution time over the dashboard's range (pg_stat_statements "
            "total_exec_time, in seconds), with their mean time. aurore's COPY should lead.",
            [(f'topk(10, sum by (datname, queryid, query) (increase(pg_stat_statements_total_exec_time_seconds{{{D}}}[$__range])))', "{{query}}"),
             (f'topk(10, max by (datname, queryid, query) (pg_stat_statements_mean_exec_time_seconds{{{D}}}))', "{{query}}")],
            "s", steps(GREEN, (1, ORANGE)), w=24, h=9)
    b.panel("table", "Top statements by calls",
            "The ten statements executed most often over the dashboard's range (pg_stat_statements calls).",
            [(f'topk(10, sum by (datname, queryid, query) (increase(pg_stat_statements_calls{{{D}}}[$__range])))', "{{query}}")],
            "short", steps(GREEN), w=24, h=9)
    b.panel("timeseries", "Statements per second",
            "Statement executions per second, top 5 statements.",
            [(f'topk(5, sum by (queryid, query) (rate(pg_stat_statements_calls{{{D}}}[$__rate_interval])))', "{{query}}")],
            "ops", steps(GREEN), w=24, min_=0)
    b.panel("stat", "PostgreSQL up",
            "postgres_exporter's view of PostgreSQL (pg_up); down for a minute fires PostgreSQLDown.",
            [("min(pg_up)", "PostgreSQL")],
            "none", steps(RED, (1, GREEN)), w=8, h=5, mappings=UP_MAP, options=STAT)
    b.panel("stat", "Database size",
            "On-disk size of each database.",
            [(f'sum by (datname) (pg_database_size_bytes{{{D}}})', "{{datname}}")],
            "bytes", steps(GREEN, (50e9, ORANGE)), w=16, h=5, options=STAT)
    return b


def kafka():
    G, T = 'consumergroup=~"$consumergroup"', 'topic=~"$topic"'
    b = Board("aurore-kafka", "Kafka",
              "Kafka as the broker sees it, from kafka_exporter: consumer group lag and offsets, topic offsets "
              "and partitions.",
              [query_var("consumergroup", "consumer group", "label_values(kafka_consumergroup_lag, consumergroup)"),
               query_var("topic", "topic", "label_values(kafka_topic_partitions, topic)")])
    b.row("Consumer groups")
    b.panel("timeseries", "Lag per group and partition",
            "Messages between each partition's newest offset and the group's committed offset "
            "(kafka_consumergroup_lag). aurore commits after persisting, so this is what is not yet in PostgreSQL.",
            [(f'sum by (consumergroup, topic, partition) (kafka_consumergroup_lag{{{G}, {T}}})', "{{consumergroup}} {{topic}}/{{partition}}")],
            "short", steps(GREEN, (10000, ORANGE), (100000, RED)), w=12, min_=0)
    b.panel("timeseries", "Lag per group",
            "Total lag of each consumer group over its partitions (kafka_consumergroup_lag_sum).",
            [(f'sum by (consumergroup, topic) (kafka_consumergroup_lag_sum{{{G}, {T}}})', "{{consumergroup}} {{topic}}")],
            "short", steps(GREEN, (10000, ORANGE), (100000, RED)), w=12, min_=0)
    b.panel("timeseries", "Committed offsets per second",
            "How fast each group's committed offsets advance: the group's consumption rate as the broker sees it.",
            [(f'sum by (consumergroup, topic) (rate(kafka_consumergroup_current_offset_sum{{{G}, {T}}}[$__rate_interval]))', "{{consumergroup}} {{topic}}")],
            "ops", steps(GREEN), w=12, min_=0)
    b.panel("stat", "Members",
            "Members of each consumer group: aurore instances sharing the partitions.",
            [(f'max by (consumergroup) (kafka_consumergroup_members{{{G}}})', "{{consumergroup}}")],
            "short", steps(RED, (1, GREEN)), w=12, options=STAT)
    b.row("Topics")
    b.panel("timeseries", "Messages produced per second",
            "Rate of the newest offset per topic (kafka_topic_partition_current_offset): what producers publish.",
            [(f'sum by (topic) (rate(kafka_topic_partition_current_offset{{{T}}}[$__rate_interval]))', "{{topic}}")],
            "ops", steps(GREEN), w=12, min_=0)
    b.panel("table", "Offsets per partition",
            "Oldest and newest offset of each partition: the retained range.",
            [(f'max by (topic, partition) (kafka_topic_partition_oldest_offset{{{T}}})', "oldest"),
             (f'max by (topic, partition) (kafka_topic_partition_current_offset{{{T}}})', "newest")],
            "short", steps(GREEN), w=12)
    b.panel("stat", "Partitions",
            "Partitions per topic (kafka_topic_partitions); more partitions than aurore instances lets the group "
            "spread them.",
            [(f'max by (topic) (kafka_topic_partitions{{{T}}})', "{{topic}}")],
            "short", steps(BLUE), w=12, h=5, options=STAT)
    b.panel("stat", "Brokers",
            "Brokers in the cluster (kafka_brokers).",
            [("max(kafka_brokers)", "brokers")],
            "short", steps(RED, (1, GREEN)), w=12, h=5, options=STAT)
    return b


def main():
    # --out DIR: write elsewhere (the test compares that with the committed files).
    out = pathlib.Path(sys.argv[2]) if sys.argv[1:2] == ["--out"] else OUT
    out.mkdir(exist_ok=True)
    for board in (overview(), postgresql(), kafka()):
        path = out / f"{board.uid}.json"
        path.write_text(json.dumps(board.json(), indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
