#!/usr/bin/env bash
# create-topics.sh BOOTSTRAP [topics.conf] — creates the topics of kafka/topics.conf that do not
# exist yet, with the Kafka image's kafka-topics.sh (docker-compose.yml's topic-init service), or
# the one $KAFKA_TOPICS_SH names (scripts/stack, which has no Kafka tarball).
set -euo pipefail
bootstrap=${1:?usage: create-topics.sh BOOTSTRAP [topics.conf]}
conf=${2:-$(dirname "$0")/topics.conf}
grep -vE '^\s*(#|$)' "$conf" | while read -r name partitions rf configs; do
  args=(--bootstrap-server "$bootstrap" --create --if-not-exists --topic "$name"
    --partitions "$partitions" --replication-factor "$rf")
  for c in $configs; do args+=(--config "$c"); done
  "${KAFKA_TOPICS_SH:-/opt/kafka/bin/kafka-topics.sh}" "${args[@]}"
  echo "topic $name: $partitions partitions, replication factor $rf${configs:+, $configs}"
done
