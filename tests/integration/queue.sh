#!/bin/sh
# The queue contract end to end with the real daemon: good drops are stored and recorded,
# every kind of bad drop is moved aside with a reason, nothing is ever lost.
# shellcheck disable=SC2119 # start_daemon takes optional extra daemon options
# shellcheck source=tests/integration/lib.sh
. "$(dirname "$0")/lib.sh"

P=octopus-f446
start_daemon

# good image through the CLI: stored content-addressed, recorded, gone from the queue
make_image "$T/klipper.bin" 0x08008000 0x20020000 4096
check "skrflashctl queue accepts a valid image" ctl queue $P "$T/klipper.bin"
SHA=$(sha_of "$T/klipper.bin")
check "desired firmware recorded" test "$(desired_sha $P)" = "$SHA"
check "firmware stored under its sha256" cmp "$T/klipper.bin" "$STATE/firmware/$SHA"
check "queue directory empty again" test -z "$(ls -A "$QUEUE/$P")"
check "queued lists it" sh -c "'$SKRFLASHCTL' --socket '$RUN/control.sock' --json queued | grep -q $SHA"

# a top-level <profile>.bin works too
make_image "$T/top.bin" 0x08008000 0x20020000 2048 2
cp "$T/top.bin" "$QUEUE/.$P.bin.tmp" && mv "$QUEUE/.$P.bin.tmp" "$QUEUE/$P.bin"
check "queue/<profile>.bin picked up" wait_for 10 sh -c "test ! -e '$QUEUE/$P.bin'"
check "and recorded" test "$(desired_sha $P)" = "$(sha_of "$T/top.bin")"

rejected() { # rejected NAME PATTERN: moved aside with a reason that matches
	wait_for 10 test -e "$REJECTED/$1.reason" && grep -q "$2" "$REJECTED/$1.reason"
}

# symlink: the link itself goes aside, the target is untouched
make_image "$T/target.bin" 0x08008000 0x20020000 1024 3
ln -s "$T/target.bin" "$T/link.bin" && mv "$T/link.bin" "$QUEUE/$P/link.bin"
check "symlink refused" rejected link.bin "symbolic link"
check "symlink target untouched" test -f "$T/target.bin"

# hard link
ln "$T/target.bin" "$T/hard.bin" && mv "$T/hard.bin" "$QUEUE/$P/hard.bin"
check "hard link refused" rejected hard.bin "hard link"

# FIFO: refused without blocking the daemon
mkfifo "$T/fifo.bin" && mv "$T/fifo.bin" "$QUEUE/$P/fifo.bin"
check "FIFO refused" rejected fifo.bin "FIFO"
check "daemon still answers after the FIFO" ctl status

# directory inside a profile queue
mkdir "$T/dir.bin" && mv "$T/dir.bin" "$QUEUE/$P/dir.bin"
check "directory refused" rejected dir.bin "directory"

# empty
: >"$T/empty.bin" && mv "$T/empty.bin" "$QUEUE/$P/empty.bin"
check "empty file refused" rejected empty.bin "empty"

# oversize (sparse, larger than any catalog flash)
truncate -s 20M "$T/huge.bin" && mv "$T/huge.bin" "$QUEUE/$P/huge.bin"
check "oversize file refused" rejected huge.bin "larger than"

# unknown profile
cp "$T/target.bin" "$T/nosuch.bin" && mv "$T/nosuch.bin" "$QUEUE/no-such-profile.bin"
check "unknown profile refused" rejected no-such-profile.bin "no profile"

# a name with a newline
NL=$(printf 'bad\nname.bin')
cp "$T/target.bin" "$T/nl" && mv "$T/nl" "$QUEUE/$P/$NL"
check "name with newline refused" wait_for 10 test -e "$REJECTED/$NL.reason"
check "its reason escapes the newline" grep -q 'bad\\x0aname.bin' "$REJECTED/$NL.reason"

# an image for the wrong offset is refused by validation, with the verdict as reason
make_image "$T/low.bin" 0x08000000 0x20020000 4096 4
check "wrong-offset image refused by the CLI (exit 1)" sh -c "! '$SKRFLASHCTL' --socket '$RUN/control.sock' --queue-dir '$QUEUE' --config '$CONFIG' queue $P '$T/low.bin'"
check "wrong-offset reason names the offset" rejected low.bin "0x08008000"
check "refused file kept byte for byte" cmp "$T/low.bin" "$REJECTED/low.bin"

# foreign owner (needs root to create)
if [ "$(id -u)" = 0 ]; then
	cp "$T/target.bin" "$T/foreign.bin" && chown 65534:65534 "$T/foreign.bin"
	mv "$T/foreign.bin" "$QUEUE/$P/foreign.bin"
	check "foreign owner refused" rejected foreign.bin "owned by uid 65534"
else
	echo "skip: foreign owner (needs root)"
fi

# partial write: a producer that writes in place is only picked up after it closes
make_image "$T/part.bin" 0x08008000 0x20020000 4096 5
exec 3>"$QUEUE/$P/partial.bin"
head -c 100 "$T/part.bin" >&3
sleep 0.3
check "file still being written is left alone" test -e "$QUEUE/$P/partial.bin"
tail -c +101 "$T/part.bin" >&3
exec 3>&-
check "picked up once the writer closed it" wait_for 10 sh -c "test ! -e '$QUEUE/$P/partial.bin'"
check "and recorded with the complete content" test "$(desired_sha $P)" = "$(sha_of "$T/part.bin")"

if [ "$PRODUCTION" = 1 ]; then
	# the unit's UMask=0027 does not lock operators out: the queue directories are 3770
	check "queue/<profile> is setgid and sticky for the operators" \
		test "$(stat -c %a "$QUEUE/$P")" = 3770 -a "$(stat -c %g "$QUEUE/$P")" = "$OPS_GID"
	check "the top queue directory too" test "$(stat -c %a "$QUEUE")" = 3770

	# an operator's own file (its primary group, not skrflash) renamed in is accepted
	mkdir "$T/member" && chown "$MEMBER_UID:$MEMBER_UID" "$T/member"
	make_image "$T/own.bin" 0x08008000 0x20020000 2048 11
	as_member cp "$T/own.bin" "$T/member/own.bin"
	check "operator's own file has its primary group" test "$(stat -c %g "$T/member/own.bin")" = "$MEMBER_UID"
	as_member mv "$T/member/own.bin" "$QUEUE/$P/own.bin"
	check "operator's own file renamed in is accepted" wait_for 10 sh -c "test ! -e '$QUEUE/$P/own.bin'"
	check "and recorded" test "$(desired_sha $P)" = "$(sha_of "$T/own.bin")"

	# members cannot move a profile's queue directory away (the directory swap)
	check "an operator cannot rename queue/<profile>" sh -c "! $AS_MEMBER mv '$QUEUE/$P' '$QUEUE/$P.old' 2>/dev/null"
	check "an operator cannot replace it with a link" sh -c "! $AS_MEMBER ln -sT ../firmware '$QUEUE/$P' 2>/dev/null"

	# another user keeps writing a file after renaming it in: only the whole file counts
	make_image "$T/slow.bin" 0x08008000 0x20020000 8192 12
	as_member python3 - "$T/slow.bin" "$T/member/slow.bin" "$QUEUE/$P/slow.bin" <<'PY'
import os, sys, time
data = open(sys.argv[1], 'rb').read()
f = open(sys.argv[2], 'wb')
f.write(data[:1024]); f.flush()
os.rename(sys.argv[2], sys.argv[3])      # renamed in while still open and half written
for i in range(1024, len(data), 512):
    time.sleep(0.15); f.write(data[i:i + 512]); f.flush()
f.close()
PY
	check "a file still being written is picked up only whole" wait_for 10 sh -c "test ! -e '$QUEUE/$P/slow.bin'"
	check "and recorded with the complete content" test "$(desired_sha $P)" = "$(sha_of "$T/slow.bin")"
fi

# the directory swap, as root could still do it: queue/<profile> exchanged in one step with a
# link to the firmware store; the store is untouched, the link moved aside, a new queue
# directory made and working without SIGHUP
STORED=$(find "$STATE/firmware" -maxdepth 1 -type f -name '[0-9a-f]*' -printf '%f\n' | head -1)
ln -s ../firmware "$QUEUE/.swap"
python3 -c 'import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
sys.exit(libc.renameat2(-100, sys.argv[1].encode(), -100, sys.argv[2].encode(), 2))' \
	"$QUEUE/.swap" "$QUEUE/$P" # RENAME_EXCHANGE
check "a link in place of queue/<profile> is moved aside" wait_for 10 test -e "$REJECTED/$P.reason"
check "the firmware store is untouched" test -s "$STATE/firmware/$STORED"
check "a new queue/<profile> directory is made" wait_for 10 test -d "$QUEUE/$P" -a ! -L "$QUEUE/$P"
check "and nothing moved from the store to rejected/" sh -c "! ls '$REJECTED' | grep -q '^$STORED'"
make_image "$T/after.bin" 0x08008000 0x20020000 2048 13
check "the new queue works" ctl queue $P "$T/after.bin"
check "and records" test "$(desired_sha $P)" = "$(sha_of "$T/after.bin")"
# an empty queue/<profile> deleted: made again without SIGHUP
rmdir "$QUEUE/$P"
check "a deleted queue/<profile> is made again" wait_for 10 test -d "$QUEUE/$P"
make_image "$T/again.bin" 0x08008000 0x20020000 2048 14
check "and works" ctl queue $P "$T/again.bin"

# rejected/ names never collide: the same name twice, and a file named like a reason
printf 'junk one' >"$T/dup.bin" && mv "$T/dup.bin" "$QUEUE/$P/dup.bin"
check "first dup.bin refused" rejected dup.bin "reason:"
printf 'junk two' >"$T/dup.bin" && mv "$T/dup.bin" "$QUEUE/$P/dup.bin"
check "second dup.bin kept under another name" wait_for 10 test -e "$REJECTED/dup.bin.1"
check "the first one is unchanged" grep -q 'junk one' "$REJECTED/dup.bin"
printf 'junk three' >"$T/r" && mv "$T/r" "$QUEUE/$P/dup.bin.reason"
check "a file named like a reason is kept" wait_for 10 test -e "$REJECTED/dup.bin.reason.1"
check "and dup.bin's reason is not overwritten" grep -q '^file: dup.bin$' "$REJECTED/dup.bin.reason"

# a socket and an over-long name leave the queue once and are said once
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$T/sock.bin"
mv "$T/sock.bin" "$QUEUE/$P/sock.bin"
check "a socket is moved aside" rejected sock.bin "socket"
LONG=$(printf 'L%.0s' $(seq 1 250)).bin
printf 'junk' >"$T/long" && mv "$T/long" "$QUEUE/$P/$LONG"
check "an over-long name leaves the queue" wait_for 10 sh -c "test ! -e '$QUEUE/$P/$LONG'"
check "and is kept under a shorter name" sh -c "ls '$REJECTED' | grep -q '^LLLLLLLL.*[^n]$'"
kill -HUP "$DAEMON_PID"
sleep 1
check "each was reported once" test "$(grep -c "firmware 'sock.bin' refused" "$DAEMON_LOG")" = 1

# invalid UTF-8 in a name is escaped in JSON
BADNAME=$(printf 'caf\351.bin')
make_image "$T/utf.bin" 0x08008000 0x20020000 2048 15
cp "$T/utf.bin" "$T/.u" && mv "$T/.u" "$QUEUE/$P/$BADNAME"
check "a name that is not UTF-8 is picked up" wait_for 10 sh -c "test ! -e '$QUEUE/$P/$BADNAME'"
check "and 'queued' is valid UTF-8 JSON" sh -c "'$SKRFLASHCTL' --socket '$RUN/control.sock' --json queued | python3 -c 'import sys, json; json.loads(sys.stdin.buffer.read().decode(\"utf-8\"))'"

# nothing dropped is ever lost: every refused file is in rejected/
# (another user's directory cannot be moved by the daemon's user: it stays, with a reason)
[ "$PRODUCTION" = 1 ] || check "rejected/dir.bin kept" test -d "$REJECTED/dir.bin"
for f in link.bin hard.bin fifo.bin empty.bin huge.bin no-such-profile.bin low.bin; do
	check "rejected/$f kept" test -e "$REJECTED/$f" -o -L "$REJECTED/$f"
done
check "daemon stops cleanly" stop_daemon

# a file dropped while the daemon is down is picked up at start
make_image "$T/offline.bin" 0x08008000 0x20020000 4096 6
cp "$T/offline.bin" "$QUEUE/$P/offline.bin"
start_daemon
check "start-up scan picks up what was dropped" wait_for 10 sh -c "test ! -e '$QUEUE/$P/offline.bin'"
check "and records it" test "$(desired_sha $P)" = "$(sha_of "$T/offline.bin")"
stop_daemon

# SIGKILL at any point of pickup: each file stays queued or is stored and recorded
lost=0
for i in 1 2 3 4 5 6 7 8; do
	make_image "$T/kill$i.bin" 0x08008000 0x20020000 409600 "$i"
	cp "$T/kill$i.bin" "$QUEUE/$P/kill.bin"
	as_daemon "$SKRFLASHD" -c "$CONFIG" --state-dir "$STATE" --runtime-dir "$RUN" \
		--log-target stderr >>"$DAEMON_LOG" 2>&1 &
	pid=$!
	sleep "0.0$((i % 6))$i"
	kill -9 $pid 2>/dev/null
	wait $pid 2>/dev/null
	sha=$(sha_of "$T/kill$i.bin")
	if [ -e "$QUEUE/$P/kill.bin" ]; then
		cmp -s "$QUEUE/$P/kill.bin" "$T/kill$i.bin" || { fail "queued copy changed ($i)"; lost=1; }
		# a stored copy may exist already; if it does it must be whole
		if [ -e "$STATE/firmware/$sha" ]; then
			cmp -s "$STATE/firmware/$sha" "$T/kill$i.bin" || { fail "half-stored ($i)"; lost=1; }
		fi
	elif [ "$(desired_sha $P)" = "$sha" ] && cmp -s "$STATE/firmware/$sha" "$T/kill$i.bin"; then
		:
	else
		fail "file lost after SIGKILL ($i)"
		lost=1
	fi
	# let a normal run finish the pickup before the next round
	start_daemon
	wait_for 10 sh -c "test ! -e '$QUEUE/$P/kill.bin'" || { fail "not picked up after restart ($i)"; lost=1; }
	[ "$(desired_sha $P)" = "$sha" ] || { fail "not recorded after restart ($i)"; lost=1; }
	stop_daemon
done
CHECKS=$((CHECKS + 1))
[ $lost -eq 0 ] && echo "ok: SIGKILL during pickup never loses or half-stores a file"
check "no temporary files left in the firmware store" test -z "$(find "$STATE/firmware" -name '*.tmp')"
finish
