#!/bin/bash
# Creates paywatch's topics once (idempotent: --if-not-exists). Run by the topic-init
# service of docker/compose.yaml; also a readable record of the settings each topic needs.
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
EVENT_PARTITIONS="${EVENT_PARTITIONS:-6}"
RF="${REPLICATION_FACTOR:-1}"
TOPICS=/opt/kafka/bin/kafka-topics.sh

create() {
    local name="$1" partitions="$2"
    shift 2
    local configs=()
    for c in "$@"; do configs+=(--config "$c"); done
    "$TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$name" --partitions "$partitions" --replication-factor "$RF" "${configs[@]}"
}

DAY_MS=86400000

# Input events: the partition count caps how many workers share the load.
create payments.events "$EVENT_PARTITIONS" "retention.ms=$((7 * DAY_MS))"
# Rejected input, kept long enough to look at after a weekend.
create payments.events.dlq 3 "retention.ms=$((14 * DAY_MS))"
# Alert state changes (alert v1), keyed by fingerprint.
create payments.alerts 3 "retention.ms=$((30 * DAY_MS))"
# Window/detector checkpoints: only the newest per key matters. Checkpoints can be
# large, so allow messages up to 16 MiB.
create paywatch.state 3 cleanup.policy=compact min.cleanable.dirty.ratio=0.1 \
    segment.ms=3600000 max.message.bytes=16777216
# Silences and acknowledgements: one partition keeps them in order for every worker.
create paywatch.control 1 cleanup.policy=compact segment.ms=3600000

"$TOPICS" --bootstrap-server "$BOOTSTRAP" --list
