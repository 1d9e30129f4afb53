#!/bin/sh
# Structured journal fields: the daemon's log entries, captured on a private journal socket
# in a private mount namespace, carry MESSAGE_ID and the SKRFLASH_* fields; and when no
# journald listens, nothing is lost: the same messages go to stderr.
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

if [ "$(id -u)" != 0 ] && ! unshare -rm true 2>/dev/null; then
	echo "skip: needs root or user namespaces for a private /run"
	exit 0
fi

# 1. no journald: --log-target journal falls back to stderr
if [ ! -S /run/systemd/journal/socket ]; then
	start_daemon --log-target journal
	make_image "$T/a.bin" 0x08008000 0x20020000 2048
	ctl queue octopus-f446 "$T/a.bin" >/dev/null
	stop_daemon
	check "without journald the messages reach stderr" grep -q "<5>firmware queued: 'a.bin'" "$DAEMON_LOG"
fi

# 2. a private journal socket
make_image "$T/good.bin" 0x08008000 0x20020000 2048 7
make_image "$T/low.bin" 0x08000000 0x20020000 2048 8
cat >"$T/inner.sh" <<INNER
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
python3 "$(pwd)/tests/integration/journal_sink.py" /run/systemd/journal/socket "$T/journal.jsonl" &
sink=\$!
i=0; while [ ! -S /run/systemd/journal/socket ] && [ \$i -lt 100 ]; do sleep 0.05; i=\$((i+1)); done
chmod 666 /run/systemd/journal/socket # journald's socket takes every user's entries
$AS_DAEMON "$SKRFLASHD" -c "$CONFIG" --state-dir "$STATE" --runtime-dir "$RUN" --log-target journal >"$T/inner.log" 2>&1 &
d=\$!
i=0; while ! $AS_MEMBER "$SKRFLASHCTL" --socket "$RUN/control.sock" status >/dev/null 2>&1 && [ \$i -lt 100 ]; do sleep 0.05; i=\$((i+1)); done
$AS_MEMBER "$SKRFLASHCTL" --socket "$RUN/control.sock" --queue-dir "$QUEUE" --config "$CONFIG" queue octopus-f446 "$T/good.bin" || true
$AS_MEMBER "$SKRFLASHCTL" --socket "$RUN/control.sock" --queue-dir "$QUEUE" --config "$CONFIG" queue octopus-f446 "$T/low.bin" || true
kill -TERM \$d; wait \$d || true
sleep 0.2
kill \$sink
INNER
if [ "$(id -u)" = 0 ]; then
	unshare -m sh "$T/inner.sh"
else
	unshare -rm sh "$T/inner.sh"
fi
J="$T/journal.jsonl"
SHA=$(sha_of "$T/good.bin")
has() { # has MESSAGE_ID_SUFFIX FIELD=VALUE...
	python3 - "$J" "$@" <<'PY'
import json, sys
path, mid, *want = sys.argv[1:]
for line in open(path):
    e = json.loads(line)
    if not e.get("MESSAGE_ID", "").endswith(mid):
        continue
    if all(e.get(k) == v for k, v in (w.split("=", 1) for w in want)):
        sys.exit(0)
sys.exit(1)
PY
}
check "journal received entries" test -s "$J"
check "firmware queued: MESSAGE_ID, profile, sha256" has 103 SKRFLASH_PROFILE=octopus-f446 "SKRFLASH_SHA256=$SHA" PRIORITY=5
check "firmware rejected: MESSAGE_ID and profile" has 104 SKRFLASH_PROFILE=octopus-f446 PRIORITY=3
check "nothing went to stderr while journald listened" sh -c "! grep -q 'firmware queued' '$T/inner.log'"
finish
