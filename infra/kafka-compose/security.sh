#!/bin/sh
# The compose job `kafka-security`: every service principal as a SCRAM user (its password from
# .env, KAFKA_<NAME>_PASSWORD) and its ACLs from acls.txt, which `python -m infra.kafka_acls
# compose` writes from infra/kafka_acls.py (tests/unit/test_compose.py keeps the two equal).
# Idempotent: a second run sets the same passwords and adds nothing.
set -eu
BIN=/opt/kafka/bin
HERE=$(dirname "$0")
ADMIN=/tmp/admin.properties
sh "$HERE/admin.sh" "$ADMIN"
for user in $(cut -d' ' -f1 "$HERE/acls.txt" | sort -u); do
  var="KAFKA_$(echo "$user" | tr 'a-z' 'A-Z')_PASSWORD"
  eval "password=\${$var:?$var is not set: python -m infra.kafka_acls env > .env}"
  "$BIN/kafka-configs.sh" --bootstrap-server kafka:9092 --command-config "$ADMIN" --alter \
    --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[iterations=4096,password=$password]"
done
while read -r principal type pattern name operations; do
  [ -n "$principal" ] || continue
  if [ "$type" = TOPIC ]; then resource=--topic; else resource=--group; fi
  ops=""
  for op in $(echo "$operations" | tr ',' ' '); do ops="$ops --operation $op"; done
  # shellcheck disable=SC2086 # one --operation per word
  "$BIN/kafka-acls.sh" --bootstrap-server kafka:9092 --command-config "$ADMIN" --add \
    --allow-principal "User:$principal" $ops "$resource" "$name" --resource-pattern-type "$pattern"
done < "$HERE/acls.txt"
