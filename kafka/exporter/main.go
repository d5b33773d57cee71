// kafka_exporter exports Kafka broker, topic and consumer-group metrics for Prometheus, under
// the metric names and flags of github.com/danielqsj/kafka_exporter. That module is not served
// by the Go module proxy this project builds from, so this small stand-in (franz-go's admin
// client and client_golang) keeps the same contract for the local stack: dashboards, alerts
// and `scripts/stack status` read the same series whichever exporter runs.
//
// Every scrape asks the cluster afresh (with --kafka.timeout); nothing is cached.
package main

import (
	"context"
	"errors"
	"flag"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	brokersDesc = prometheus.NewDesc("kafka_brokers", "Number of Brokers in the Kafka Cluster.", nil, nil)
	topicPartitionsDesc = prometheus.NewDesc("kafka_topic_partitions",
		"Number of partitions for this Topic", []string{"topic"}, nil)
	currentOffsetDesc = prometheus.NewDesc("kafka_topic_partition_current_offset",
		"Current Offset of a Broker at Topic/Partition", []string{"topic", "partition"}, nil)
	oldestOffsetDesc = prometheus.NewDesc("kafka_topic_partition_oldest_offset",
		"Oldest Offset of a Broker at Topic/Partition", []string{"topic", "partition"}, nil)
	groupOffsetDesc = prometheus.NewDesc("kafka_consumergroup_current_offset",
		"Current Offset of a ConsumerGroup at Topic/Partition", []string{"consumergroup", "topic", "partition"}, nil)
	groupOffsetSumDesc = prometheus.NewDesc("kafka_consumergroup_current_offset_sum",
		"Current Offset of a ConsumerGroup at Topic for all partitions", []string{"consumergroup", "topic"}, nil)
	groupLagDesc = prometheus.NewDesc("kafka_consumergroup_lag",
		"Current Approximate Lag of a ConsumerGroup at Topic/Partition", []string{"consumergroup", "topic", "partition"}, nil)
	groupLagSumDesc = prometheus.NewDesc("kafka_consumergroup_lag_sum",
		"Current Approximate Lag of a ConsumerGroup at Topic for all partitions", []string{"consumergroup", "topic"}, nil)
	groupMembersDesc = prometheus.NewDesc("kafka_consumergroup_members",
		"Amount of members in a consumer group", []string{"consumergroup"}, nil)
	scrapeErrorDesc = prometheus.NewDesc("kafka_exporter_scrape_error",
		"1 if the last scrape of the cluster failed, else 0.", nil, nil)
)

type exporter struct {
	adm     *kadm.Client
	timeout time.Duration
}

func (e *exporter) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(e, ch) }

func (e *exporter) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout)
	defer cancel()
	failed := 0.0
	if err := e.collect(ctx, ch); err != nil {
		log.Printf("scrape failed: %v", err)
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrorDesc, prometheus.GaugeValue, failed)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func (e *exporter) collect(ctx context.Context, ch chan<- prometheus.Metric) error {
	brokers, err := e.adm.ListBrokers(ctx)
	if err != nil {
		return err
	}
	gauge(ch, brokersDesc, float64(len(brokers)))

	topics, err := e.adm.ListTopics(ctx) // internal topics excluded, like kafka_exporter's default
	if err != nil {
		return err
	}
	names := topics.Names()
	for _, t := range topics.Sorted() {
		gauge(ch, topicPartitionsDesc, float64(len(t.Partitions)), t.Topic)
	}
	if len(names) == 0 {
		return nil
	}
	ends, err := e.adm.ListEndOffsets(ctx, names...)
	if err != nil {
		return err
	}
	starts, err := e.adm.ListStartOffsets(ctx, names...)
	if err != nil {
		return err
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			gauge(ch, currentOffsetDesc, float64(o.Offset), o.Topic, strconv.Itoa(int(o.Partition)))
		}
	})
	starts.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			gauge(ch, oldestOffsetDesc, float64(o.Offset), o.Topic, strconv.Itoa(int(o.Partition)))
		}
	})

	listed, err := e.adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	groups := listed.Groups()
	if len(groups) == 0 {
		return nil
	}
	described, err := e.adm.DescribeGroups(ctx, groups...)
	if err != nil {
		return err
	}
	for _, g := range described.Sorted() {
		if g.Err != nil {
			continue
		}
		gauge(ch, groupMembersDesc, float64(len(g.Members)), g.Group)
	}
	for _, group := range groups {
		committed, err := e.adm.FetchOffsets(ctx, group)
		if err != nil {
			continue // the group may have disappeared between the two calls
		}
		offsetSum := map[string]float64{}
		lagSum := map[string]float64{}
		committed.Each(func(o kadm.OffsetResponse) {
			if o.Err != nil || o.At < 0 {
				return
			}
			p := strconv.Itoa(int(o.Partition))
			gauge(ch, groupOffsetDesc, float64(o.At), group, o.Topic, p)
			offsetSum[o.Topic] += float64(o.At)
			end, ok := ends.Lookup(o.Topic, o.Partition)
			if !ok || end.Err != nil {
				return
			}
			lag := end.Offset - o.At
			if lag < 0 {
				lag = 0
			}
			gauge(ch, groupLagDesc, float64(lag), group, o.Topic, p)
			lagSum[o.Topic] += float64(lag)
		})
		for topic, v := range offsetSum {
			gauge(ch, groupOffsetSumDesc, v, group, topic)
		}
		for topic, v := range lagSum {
			gauge(ch, groupLagSumDesc, v, group, topic)
		}
	}
	return nil
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, strings.Split(v, ",")...); return nil }

func main() {
	var servers stringList
	flag.Var(&servers, "kafka.server", "Address (host:port) of a Kafka server; repeat or comma-separate (default 127.0.0.1:9092)")
	listen := flag.String("web.listen-address", ":9308", "Address to listen on for web interface and telemetry")
	path := flag.String("web.telemetry-path", "/metrics", "Path under which to expose metrics")
	timeout := flag.Duration("kafka.timeout", 10*time.Second, "Deadline of one scrape of the cluster")
	flag.Parse()
	if len(servers) == 0 {
		servers = stringList{"127.0.0.1:9092"}
	}
	client, err := kgo.NewClient(kgo.SeedBrokers(servers...), kgo.ClientID("kafka_exporter"))
	if err != nil {
		log.Fatalf("invalid Kafka client configuration: %v", err)
	}
	defer client.Close()

	registry := prometheus.NewRegistry()
	registry.MustRegister(&exporter{adm: kadm.NewClient(client), timeout: *timeout},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle(*path, promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	log.Printf("kafka_exporter listening on %s%s, cluster %s", *listen, *path, servers.String())
	server := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
