#!/bin/sh
# Shared helpers for the shell integration tests: a private state/queue/runtime tree, the
# real daemon started and stopped in it, and checks that fail the test with a message.
#
# As root (CI) the daemon runs as in production (tests/integration/as-user: its own uid,
# UMask=0027, /proc with hidepid=invisible) and `ctl` runs as an operator whose group is only
# supplementary; SKRTEST_AS_ROOT=1, or not being root, runs everything as the caller.
# shellcheck disable=SC2034
set -u
BUILD=${BUILD:-build}
SKRFLASHD="$BUILD/skrflashd"
SKRFLASHCTL="$BUILD/skrflashctl"
T=$(mktemp -d "${TMPDIR:-/tmp}/skrflash-test.XXXXXX")
STATE="$T/state"
QUEUE="$STATE/queue"
REJECTED="$STATE/rejected"
RUN="$T/run"
DAEMON_LOG="$T/daemon.log"
DAEMON_PID=
FAILED=0
CHECKS=0
CONFIG=${CONFIG:-$T/skrflash.conf}
[ -e "$CONFIG" ] || printf '# empty: built-in catalog profiles\n' >"$CONFIG"
AS_USER="$(cd "$(dirname "$0")" && pwd)/as-user"
PRODUCTION=0
AS_DAEMON=
AS_MEMBER=
if [ "$(id -u)" = 0 ] && [ "${SKRTEST_AS_ROOT:-0}" != 1 ]; then
	PRODUCTION=1
	DAEMON_UID='' OPS_GID='' MEMBER_UID=''
	eval "$("$AS_USER" ids)"
	AS_DAEMON="$AS_USER daemon $T"
	AS_MEMBER="$AS_USER member $T"
	# StateDirectory= and RuntimeDirectory= of the unit: the daemon's, mode 0750
	chmod 755 "$T"
	mkdir -p "$STATE" "$RUN"
	chown "$DAEMON_UID:$OPS_GID" "$STATE" "$RUN"
	chmod 750 "$STATE" "$RUN"
	chmod 644 "$CONFIG"
fi

cleanup() {
	[ -n "$DAEMON_PID" ] && kill -9 "$DAEMON_PID" 2>/dev/null
	if [ "$FAILED" -ne 0 ]; then
		echo "--- daemon log ---"
		cat "$DAEMON_LOG" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	FAILED=$((FAILED + 1))
}

check() { # check DESCRIPTION COMMAND...
	desc=$1
	shift
	CHECKS=$((CHECKS + 1))
	if "$@" >/dev/null 2>&1; then echo "ok: $desc"; else fail "$desc"; fi
}

as_member() { $AS_MEMBER "$@"; }
as_daemon() { $AS_DAEMON "$@"; }

ctl() { # skrflashctl as an operator
	$AS_MEMBER "$SKRFLASHCTL" --socket "$RUN/control.sock" --queue-dir "$QUEUE" --config "$CONFIG" "$@"
}

# wait_for TIMEOUT_S COMMAND...: poll a condition the daemon makes true (file moved, row
# written); the timeout only bounds a failing test, it is not a performance target.
wait_for() {
	limit=$(($1 * 20))
	shift
	i=0
	while [ $i -lt $limit ]; do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}

start_daemon() {
	$AS_DAEMON "$SKRFLASHD" -c "$CONFIG" --state-dir "$STATE" --runtime-dir "$RUN" --log-target stderr \
		--log-level debug "$@" >>"$DAEMON_LOG" 2>&1 &
	DAEMON_PID=$!
	if ! wait_for 10 ctl status; then
		fail "daemon did not start"
		exit 1
	fi
}

stop_daemon() {
	[ -n "$DAEMON_PID" ] || return 0
	kill -TERM "$DAEMON_PID"
	wait "$DAEMON_PID"
	rc=$?
	DAEMON_PID=
	return $rc
}

# A minimal valid Cortex-M image for an app start: vector table (initial SP at the top of
# RAM, every handler odd and inside the image), the table's own address as a literal (what
# firmware writes to SCB->VTOR, the validator's evidence of the link address when there is
# no Klipper dictionary) and code-like bytes.
make_image() { # make_image FILE APP_START SP SIZE [SEED]
	python3 - "$@" <<'PY'
import struct, sys
path, start, sp, size = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0), int(sys.argv[4], 0)
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 1
handler = start + 0x200 + 1
vec = struct.pack('<II', sp, handler) + struct.pack('<I', handler) * 46 + struct.pack('<I', start)
body = bytes(((i * 7 + seed) & 0xff) for i in range(size - len(vec)))
open(path, 'wb').write(vec + body)
PY
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

desired_sha() { # desired_sha PROFILE: from the database, without the daemon
	python3 - "$STATE/skrflash.db" "$1" <<'PY'
import sqlite3, sys
try:
    db = sqlite3.connect('file:%s?mode=ro' % sys.argv[1], uri=True)
    row = db.execute('SELECT sha FROM desired WHERE profile = ?', (sys.argv[2],)).fetchone()
    print(row[0] if row else '')
except Exception:
    print('')
PY
}

finish() {
	echo "$CHECKS checks, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}
