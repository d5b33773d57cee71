module aurore.dev/kafka_exporter

// Go 1.19: Debian 12's golang-go builds this (scripts/stack installs it where no Go is found).
// Each dependency is the newest release whose own go.mod asks for no more: franz-go v1.17
// and kadm v1.12 ask for 1.21, client_golang v1.18 brings prometheus/common v0.45 (1.20).
// protobuf v1.33.0 (go 1.17) for the fix of CVE-2024-24786.
go 1.19

require (
	github.com/prometheus/client_golang v1.17.0
	github.com/twmb/franz-go v1.16.1
	github.com/twmb/franz-go/pkg/kadm v1.11.0
)

require (
	github.com/beorn7/perks v1.0.1 // indirect
	github.com/cespare/xxhash/v2 v2.2.0 // indirect
	github.com/golang/protobuf v1.5.3 // indirect
	github.com/klauspost/compress v1.17.4 // indirect
	github.com/matttproud/golang_protobuf_extensions v1.0.4 // indirect
	github.com/pierrec/lz4/v4 v4.1.19 // indirect
	github.com/prometheus/client_model v0.4.1-0.20230718164431-9a2bf3000d16 // indirect
	github.com/prometheus/common v0.44.0 // indirect
	github.com/prometheus/procfs v0.11.1 // indirect
	github.com/twmb/franz-go/pkg/kmsg v1.7.0 // indirect
	golang.org/x/crypto v0.17.0 // indirect
	golang.org/x/sys v0.15.0 // indirect
	google.golang.org/protobuf v1.33.0 // indirect
)
