#!/usr/bin/env bash
# Runs a Kafka main class with the broker's classpath, as the tarball's script of this name does.
# shellcheck disable=SC2086 # KAFKA_TOOLS_HEAP_OPTS may hold several JVM options: split on purpose
exec java ${KAFKA_TOOLS_HEAP_OPTS:--Xmx256m} -Dlog4j2.configurationFile=/opt/kafka/config/log4j2-tools.properties \
  -cp '/opt/kafka/libs/*' "$@"
