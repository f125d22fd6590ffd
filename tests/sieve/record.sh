#!/bin/sh
# Runs every case of tests/sieve/corpus through Pigeonhole's sieve-test and
# writes NAME.expected (default) or compares with it (--check; exits 1 on any
# difference, 2 when sieve-test cannot be run).  Optional case names after the
# flag restrict the run: record.sh [--check] [NAME...]
# See README.md for the case layout and the output format.
set -u

here=$(cd "$(dirname "$0")" && pwd)
corpus="$here/corpus"
normalize="$here/normalize-pigeonhole.py"
SIEVE_TEST=${SIEVE_TEST:-/usr/bin/sieve-test}
PYTHON=${PYTHON:-/usr/bin/python3}
# Extensions Pigeonhole 2.3 has but does not enable by default.
EXTENSIONS="+vacation-seconds +editheader"

check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi

if [ ! -x "$SIEVE_TEST" ]; then
    echo "record.sh: $SIEVE_TEST not found" >&2
    exit 2
fi

work=$(mktemp -d /tmp/tern-sieve-record.XXXXXX) || exit 2
[ -n "${KEEP_WORK:-}" ] || trap 'rm -rf "$work"' EXIT INT TERM
chmod 755 "$work"

# sieve-test refuses to run as root without a mail uid: drop to nobody.
as_user() {
    if [ "$(id -u)" = 0 ]; then
        chown -R nobody "$1"
        su nobody -s /bin/sh -c "sh '$2'"
    else
        sh "$2"
    fi
}

if [ $# -gt 0 ]; then
    names="$*"
else
    names=$(cd "$corpus" && for s in *.sieve; do
        n=${s%.sieve}; [ -f "$n.eml" ] && echo "$n"; done)
fi

failed=0
count=0
for name in $names; do
    count=$((count + 1))
    d="$work/$name"
    mkdir -p "$d/home/sieve" "$d/home/Maildir"
    cp "$corpus/$name.sieve" "$d/script.sieve"
    cp "$corpus/$name.eml" "$d/message.eml"
    # Scripts that "include" finds (personal location ~/sieve): all of them.
    cp "$corpus"/*.sieve "$d/home/sieve/"
    from=sender@example.com
    to=user@example.test
    if [ -f "$corpus/$name.env" ]; then
        v=$(sed -n 's/^from=//p' "$corpus/$name.env" | tr -d '\r'); [ -n "$v" ] && from=$v
        v=$(sed -n 's/^to=//p' "$corpus/$name.env" | tr -d '\r'); [ -n "$v" ] && to=$v
    fi
    for mode in dry exec; do
        if [ $mode = exec ]; then
            grep -q '^ \* send vacation message:' "$d/dry.out" 2>/dev/null || continue
            # Real execution, only to learn whether Pigeonhole would send the
            # vacation reply.  Make the folders the dry run stored into, so
            # no store fails and aborts the run before the vacation action.
            rm -rf "$d/home/Maildir"; mkdir -p "$d/home/Maildir"
            sed -n 's/^ \* store message in folder: //p' "$d/dry.out" |
                while IFS= read -r folder; do
                    mkdir -p "$d/home/Maildir/$folder/cur" \
                        "$d/home/Maildir/$folder/new" "$d/home/Maildir/$folder/tmp"
                done
            e=-e
        else
            e=
        fi
        cat > "$d/run-$mode.sh" <<RUN
cd '$d' || exit 99
HOME='$d/home' timeout 10 '$SIEVE_TEST' $e -C -x '$EXTENSIONS' \
    -l 'maildir:$d/home/Maildir:LAYOUT=fs' -f '$from' -a '$to' -r '$to' \
    script.sieve message.eml >'$d/$mode.out' 2>'$d/$mode.err'
echo \$? >'$d/$mode.rc'
RUN
        as_user "$d" "$d/run-$mode.sh"
    done
    if [ -f "$d/exec.out" ]; then
        cat "$d/exec.out" "$d/exec.err" > "$d/exec.log"
        exec_log="--exec-log $d/exec.log"
    else
        exec_log=
    fi
    if ! "$PYTHON" "$normalize" --rc "$(cat "$d/dry.rc")" --stdout "$d/dry.out" \
        --stderr "$d/dry.err" $exec_log > "$d/got"; then
        echo "FAIL $name: cannot normalize sieve-test output:" >&2
        cat "$d/dry.out" "$d/dry.err" >&2
        failed=$((failed + 1))
        continue
    fi
    if [ $check = 1 ]; then
        if ! cmp -s "$d/got" "$corpus/$name.expected"; then
            echo "DIFF $name (< recorded, > Pigeonhole now):" >&2
            diff "$corpus/$name.expected" "$d/got" | sed 's/^/    /' >&2
            failed=$((failed + 1))
        fi
    else
        cp "$d/got" "$corpus/$name.expected"
    fi
done

if [ $check = 1 ]; then
    echo "record.sh: $count cases checked, $failed differ" >&2
else
    echo "record.sh: $count cases recorded, $failed failed" >&2
fi
[ $failed = 0 ]
