#!/usr/bin/python3
"""Turn one sieve-test run into tern's normalized action list (see README.md).

Written for tern; reads the captured output of Pigeonhole's sieve-test:

  normalize-pigeonhole.py --rc N --stdout FILE --stderr FILE [--exec-log FILE]

--rc/--stdout/--stderr are the exit status and output of a dry run (no -e).
--exec-log is the combined output of a second run of the same case with -e
(real execution against a scratch Maildir); it is only consulted when the dry
run produced a vacation action, to learn whether the reply would really be
sent (Pigeonhole decides that only at execution time).

Prints the normalized lines on stdout and exits 0; exits 2 with a message on
stderr when the output has a shape this script does not understand, so a new
kind of action is never silently dropped.
"""

import argparse
import re
import sys


def die(msg):
    sys.stderr.write("normalize-pigeonhole: %s\n" % msg)
    sys.exit(2)


def read(path):
    if path is None:
        return ""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


# Lines of the exec log that say what became of a vacation reply.
VACATION_SENT = re.compile(r"vacation action: sent vacation response")
VACATION_NOT_SENT = re.compile(
    r"vacation action: (discarding|discarded|not sending)")


def parse_actions(text):
    """Return a list of (kind, attrs) from the dry-run stdout, performed
    actions and implicit keep alike."""
    actions = []
    section = None
    in_message = False
    current = None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if in_message:
            if line == "END MESSAGE":
                in_message = False
            continue
        if line == "START MESSAGE":
            in_message = True
            continue
        if line in ("Performed actions:", "Implicit keep:"):
            section = line
            current = None
            continue
        if line.strip() == "":
            continue
        if section is None:
            die("text before any section: %r" % line)
        if line.strip() == "(none)":
            continue
        if line.startswith(" * "):
            current = (line[3:], {})
            actions.append(current)
            continue
        m = re.match(r"^\s+\+ (.*)$", line)
        if m and current is not None:
            current[1].setdefault("+", []).append(m.group(1))
            continue
        m = re.match(r"^\s+=> (\S+)\s*: ?(.*)$", line)
        if m and current is not None:
            current[1][m.group(1)] = m.group(2)
            continue
        die("unexpected line: %r" % line)
    return actions


def flags_of(attrs):
    flags = []
    for extra in attrs.get("+", []):
        if extra.startswith("add IMAP flags:"):
            flags.extend(extra[len("add IMAP flags:"):].split())
        elif extra in ("create mailbox if it does not exist",
                       "preserve implicit keep"):
            pass
        else:
            die("unexpected action detail: %r" % extra)
    return sorted(set(f.lower() for f in flags))


def normalize(rc, out, err, exec_log):
    if rc != 0:
        if "failed to compile" in err:
            return ["error compile"]
        if "resolved with successful implicit keep" in err:
            return ["error runtime", "store INBOX"]
        die("exit status %d without a known reason:\n%s" % (rc, err))
    lines = set()
    for head, attrs in parse_actions(out):
        if head.startswith("store message in folder: "):
            folder = head[len("store message in folder: "):]
            flags = flags_of(attrs)
            line = "store " + folder
            if flags:
                line += " flags=" + ",".join(flags)
            lines.add(line)
        elif head.startswith("redirect message to: "):
            flags_of(attrs)  # only checks the details are known ones
            addr = head[len("redirect message to: "):]
            if addr.startswith("<") and addr.endswith(">"):
                addr = addr[1:-1]
            lines.add("redirect " + addr)
        elif head.startswith("reject message with reason:"):
            lines.add("reject")
        elif head.startswith("ereject message with reason:"):
            lines.add("ereject")
        elif head == "send vacation message:":
            sent = VACATION_SENT.search(exec_log)
            not_sent = VACATION_NOT_SENT.search(exec_log)
            if sent and not_sent:
                die("exec log both sends and suppresses the vacation reply")
            if not sent and not not_sent:
                die("vacation action without an --exec-log saying its fate")
            if not_sent:
                continue
            if "seconds" not in attrs:
                die("vacation action without seconds")
            line = "vacation seconds=" + attrs["seconds"].strip()
            if "subject" in attrs:
                line += " subject=" + attrs["subject"]
            lines.add(line)
        elif head in ("discard", "track duplicate"):
            pass
        else:
            die("unknown action: %r" % head)
    return sorted(lines, key=lambda s: s.encode("utf-8"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rc", type=int, required=True)
    ap.add_argument("--stdout", required=True)
    ap.add_argument("--stderr", required=True)
    ap.add_argument("--exec-log")
    a = ap.parse_args()
    result = normalize(a.rc, read(a.stdout), read(a.stderr), read(a.exec_log))
    sys.stdout.buffer.write("".join(l + "\n" for l in result).encode("utf-8"))


if __name__ == "__main__":
    main()
