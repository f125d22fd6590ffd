#!/usr/bin/env bash
# filter_compare.sh - inbound throughput with rspamd in the path, tern beside Postfix in one run: the same
# rspamd proxy worker (milter mode, a private configuration on loopback) is tern's [[filter]] and Postfix's
# smtpd_milters; Postfix's smtp-source sends MSGS x SIZE-byte messages over SESSIONS sessions to each; a rate is
# messages / seconds from the first connection until every message is a file in the recipient's Maildir.
# Rounds alternate; the best of each is compared.
#
# Usage (as root; needs rspamd and postfix): tests/bench/filter_compare.sh TERN_BINARY
# Environment: MSGS (1000) SIZE (1024) SESSIONS (20) ROUNDS (3) MAX_WAIT (300 s)
set -euo pipefail
TERN=$(realpath "${1:?usage: filter_compare.sh TERN_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=$(cd "$HERE/../../../shared/bench" && pwd)
MSGS=${MSGS:-1000} SIZE=${SIZE:-1024} SESSIONS=${SESSIONS:-20} ROUNDS=${ROUNDS:-3} MAX_WAIT=${MAX_WAIT:-300}
WORK=$(mktemp -d /tmp/tern-filter-bench.XXXXXX)
chmod 755 "$WORK"   # Postfix's own users must reach its queue and Maildirs below it
export PEER_BASE=$WORK/postfix
RSPAMD_PORT=21432 TERN_PORT=21425 PF_PORT=21431
cleanup() {
  "$SHARED/postfix-local.sh" stop -n fbench >/dev/null 2>&1 || true
  [ -n "${TERN_PID:-}" ] && kill "$TERN_PID" 2>/dev/null || true
  [ -n "${RSPAMD_PID:-}" ] && kill "$RSPAMD_PID" 2>/dev/null || true
}
trap cleanup EXIT

cat > "$WORK/rspamd.conf" <<CONF
options { pidfile = "$WORK/rspamd.pid"; dns { nameserver = ["127.0.0.1:9"]; timeout = 1s; retransmits = 1; } }
logging { type = "file"; filename = "$WORK/rspamd.log"; level = "warning"; }
worker "rspamd_proxy" { bind_socket = "127.0.0.1:$RSPAMD_PORT"; milter = yes; timeout = 120s;
  upstream "local" { default = yes; self_scan = yes; } count = 2; }
actions { reject = 15; add_header = 6; }
lua = "/usr/share/rspamd/rules/rspamd.lua";
modules { path = "/usr/share/rspamd/plugins/milter_headers.lua"; }
milter_headers { use = ["x-spamd-result", "x-spam-status"]; skip_local = false; }
CONF
rspamd -f -i -c "$WORK/rspamd.conf" -u root -g root >/dev/null 2>&1 & RSPAMD_PID=$!
for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$RSPAMD_PORT) 2>/dev/null && break; sleep 0.3; done

"$SHARED/postfix-local.sh" start -n fbench -p "$PF_PORT" >/dev/null
ETC=$PEER_BASE/fbench/etc
postconf -c "$ETC" -e "smtpd_milters = inet:127.0.0.1:$RSPAMD_PORT" "milter_default_action = tempfail" \
  "milter_protocol = 6"
postfix -c "$ETC" reload >/dev/null 2>&1
PF_MD=$PEER_BASE/fbench/mail/example.test/alice

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
[checks]
enabled = false
[[filter]]
kind = "milter"
address = "127.0.0.1:$RSPAMD_PORT"
CONF
"$TERN" --config "$WORK/tern/tern.toml" user add alice@example.test >/dev/null
"$TERN" --config "$WORK/tern/tern.toml" serve >"$WORK/tern.log" 2>&1 & TERN_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$TERN_PORT) 2>/dev/null && break; sleep 0.1; done
TERN_MD=$WORK/tern/data/mail/example.test/alice

count() { find "$1/new" "$1/cur" -type f 2>/dev/null | wc -l; }
load() {
  local port=$1 md=$2 t0 end
  find "$md/new" "$md/cur" -type f -delete 2>/dev/null || true
  t0=$(date +%s.%N)
  timeout "$MAX_WAIT" smtp-source -s "$SESSIONS" -m "$MSGS" -l "$SIZE" -M client.test -f load@client.test \
    -t alice@example.test "127.0.0.1:$port" >/dev/null
  end=$((SECONDS + MAX_WAIT))
  until [ "$(count "$md")" -ge "$MSGS" ]; do
    [ $SECONDS -lt $end ] || { echo "only $(count "$md")/$MSGS delivered to $md" >&2; return 1; }
    sleep 0.05
  done
  awk -v n="$MSGS" -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", n / (b - a) }'
}
best_pf=0 best_tern=0
for round in $(seq "$ROUNDS"); do
  pf=$(load "$PF_PORT" "$PF_MD"); tn=$(load "$TERN_PORT" "$TERN_MD")
  echo "round $round: postfix+rspamd $pf msg/s, tern+rspamd $tn msg/s"
  best_pf=$(awk -v a="$best_pf" -v b="$pf" 'BEGIN { print (b > a) ? b : a }')
  best_tern=$(awk -v a="$best_tern" -v b="$tn" 'BEGIN { print (b > a) ? b : a }')
done
# Both really went through rspamd: the last round's messages carry its header.
scanned() { grep -l "^X-Spamd-Result:" "$1"/new/* "$1"/cur/* 2>/dev/null | wc -l; }
echo "scanned by rspamd in the last round: postfix $(scanned "$PF_MD")/$MSGS, tern $(scanned "$TERN_MD")/$MSGS"
awk -v t="$best_tern" -v p="$best_pf" -v n="$MSGS" -v s="$SIZE" -v c="$SESSIONS" \
  'BEGIN { printf "with rspamd (milter): tern/postfix %.2f (tern %s msg/s, postfix %s msg/s; %d x %d B, %d sessions)\n", t / p, t, p, n, s, c }'
