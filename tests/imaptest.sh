#!/usr/bin/env bash
# Dovecot's imaptest against the real binary, once per mailbox store: every scripted compliance group must
# pass, and the stress mode (clients sharing one mailbox, state tracked) must report no error.
#   tests/imaptest.sh IMAPTEST_DIR TERN_BINARY
# .ci/run calls it when ../shared/imaptest exists; `cargo test` does not depend on it.
set -euo pipefail
IMAPTEST_DIR=$1
TERN=$2
PORT_BASE=${PORT_BASE:-21000}
status=0

for store in maildir sqlite; do
  dir=$(mktemp -d)
  port=$((PORT_BASE + 1))
  [ "$store" = sqlite ] && port=$((PORT_BASE + 2))
  cat > "$dir/tern.toml" <<CONF
[server]
hostname = "mx.example.test"
data_dir = "$dir/data"
allow_root = true
[admin]
bind = ""
[[listener]]
kind = "relay"
bind = ["127.0.0.1:0"]
[[listener]]
kind = "imap"
bind = ["127.0.0.1:$port"]
[domains]
local = ["example.test"]
postmaster = "postmaster@example.test"
[store]
kind = "$store"
CONF
  echo secret | "$TERN" --config "$dir/tern.toml" user add imaptest@example.test --password-stdin >/dev/null
  "$TERN" --config "$dir/tern.toml" serve >"$dir/tern.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

  out=$(timeout 600 "$IMAPTEST_DIR/imaptest" host=127.0.0.1 port=$port user=imaptest@example.test pass=secret \
        test="$IMAPTEST_DIR/tests" 2>&1 || true)
  summary=$(printf '%s\n' "$out" | grep -E "test groups:" || echo "no summary")
  echo "imaptest compliance ($store): $summary"
  if ! printf '%s\n' "$summary" | grep -qE " 0 failed"; then
    printf '%s\n' "$out" | grep -A12 '^\*\*\* Test' | head -80
    status=1
  fi

  out=$(timeout 120 "$IMAPTEST_DIR/imaptest" host=127.0.0.1 port=$port user=imaptest@example.test pass=secret \
        mbox="$IMAPTEST_DIR/tests/default.mbox" clients=10 secs=10 2>&1 || true)
  errors=$(printf '%s\n' "$out" | grep -c '^Error' || true)
  echo "imaptest stress ($store, 10 clients, 10 s): $errors errors"
  printf '%s\n' "$out" | grep '^Error' | head -5 || true
  if [ "$errors" != 0 ] || ! printf '%s\n' "$out" | grep -q '^Totals:'; then
    status=1
  fi
  if grep -q panicked "$dir/tern.log"; then
    grep -B2 -A5 panicked "$dir/tern.log" | head -20
    status=1
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
done
exit $status
