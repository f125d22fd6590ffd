#!/usr/bin/env bash
# sqlite_compare.sh - inbound throughput of tern with [store] kind = "sqlite" beside Postfix delivering to a
# Maildir (the reference a user would compare with), in one run. Postfix's smtp-source sends MSGS x SIZE-byte
# messages over SESSIONS sessions to each; a rate is messages / seconds from the first connection until every
# message is stored (a file in Postfix's Maildir; a row in tern's mailboxes.db). Rounds alternate; the best
# of each is compared.
#
# Usage (as root; needs postfix and the sqlite3 shell): tests/bench/sqlite_compare.sh TERN_BINARY
# Environment: MSGS (2000) SIZE (1024) SESSIONS (50) ROUNDS (3) MAX_WAIT (180 s)
set -euo pipefail
TERN=$(realpath "${1:?usage: sqlite_compare.sh TERN_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$(cd "$HERE/../../../shared/bench" && pwd)
MSGS=${MSGS:-2000} SIZE=${SIZE:-1024} SESSIONS=${SESSIONS:-50} ROUNDS=${ROUNDS:-3} MAX_WAIT=${MAX_WAIT:-180}
WORK=$(mktemp -d /tmp/tern-sqlite-bench.XXXXXX)
chmod 755 "$WORK"   # Postfix's own users must reach its queue and Maildirs below it
export PEER_BASE=$WORK/postfix
TERN_PORT=21525 PF_PORT=21531
cleanup() {
  "$SHARED/postfix-local.sh" stop -n sbench >/dev/null 2>&1 || true
  [ -n "${TERN_PID:-}" ] && kill "$TERN_PID" 2>/dev/null || true
}
trap cleanup EXIT
"$SHARED/postfix-local.sh" start -n sbench -p "$PF_PORT" >/dev/null
PF_MD=$PEER_BASE/sbench/mail/example.test/alice

mkdir -p "$WORK/tern"
cat > "$WORK/tern/tern.toml" <<CONF
[server]
hostname = "mx.example.test"
data_dir = "data"
allow_root = true
[[listener]]
kind = "relay"
bind = ["127.0.0.1:$TERN_PORT"]
[domains]
local = ["example.test"]
postmaster = "admin@example.test"
[admin]
bind = ""
[dns]
nameservers = ["127.0.0.1:9"]
[limits]
connections_per_ip = 1000
[store]
kind = "sqlite"
CONF
"$TERN" --config "$WORK/tern/tern.toml" user add alice@example.test >/dev/null
"$TERN" --config "$WORK/tern/tern.toml" serve >"$WORK/tern.log" 2>&1 & TERN_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$TERN_PORT) 2>/dev/null && break; sleep 0.1; done
DB=$WORK/tern/data/mailboxes.db

files() { find "$PF_MD/new" "$PF_MD/cur" -type f 2>/dev/null | wc -l; }
rows() { sqlite3 "$DB" "SELECT COUNT(*) FROM messages" 2>/dev/null || echo 0; }
load() {  # load PORT COUNTER -> prints stored msg/s
  local port=$1 counter=$2 t0 end want
  [ "$counter" = files ] && { find "$PF_MD/new" "$PF_MD/cur" -type f -delete 2>/dev/null || true; }
  want=$(( $($counter) + MSGS ))
  t0=$(date +%s.%N)
  timeout "$MAX_WAIT" smtp-source -s "$SESSIONS" -m "$MSGS" -l "$SIZE" -M client.test -f load@client.test \
    -t alice@example.test "127.0.0.1:$port" >/dev/null
  end=$((SECONDS + MAX_WAIT))
  until [ "$($counter)" -ge "$want" ]; do
    [ $SECONDS -lt $end ] || { echo "only $($counter)/$want stored" >&2; return 1; }
    sleep 0.05
  done
  awk -v n="$MSGS" -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", n / (b - a) }'
}
best_pf=0 best_tern=0
for round in $(seq "$ROUNDS"); do
  pf=$(load "$PF_PORT" files); tn=$(load "$TERN_PORT" rows)
  echo "round $round: postfix (Maildir) $pf msg/s, tern (sqlite store) $tn msg/s"
  best_pf=$(awk -v a="$best_pf" -v b="$pf" 'BEGIN { print (b > a) ? b : a }')
  best_tern=$(awk -v a="$best_tern" -v b="$tn" 'BEGIN { print (b > a) ? b : a }')
done
awk -v t="$best_tern" -v p="$best_pf" -v n="$MSGS" -v s="$SIZE" -v c="$SESSIONS" \
  'BEGIN { printf "sqlite store: tern/postfix %.2f (tern %s msg/s, postfix %s msg/s; %d x %d B, %d sessions)\n", t / p, t, p, n, s, c }'
rm -rf "$WORK"
