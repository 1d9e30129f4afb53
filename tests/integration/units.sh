#!/bin/sh
# units: skrflash's systemd unit control (daemon/service/units.c) against fake_systemd, which owns
# org.freedesktop.systemd1 on a private dbus-daemon; the test reads the fake's call log.
set -eu
BUILD=${BUILD:-build}
T=$(mktemp -d "${TMPDIR:-/tmp}/skrflash-units.XXXXXX")
FAKE_PID=
BUS_PID=

# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
	if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; fi
	if [ -n "$BUS_PID" ]; then kill "$BUS_PID" 2>/dev/null || true; fi
	rm -rf "$T"
}
trap cleanup EXIT

cat >"$T/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir=$T</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF

# --fork returns once the bus listens; the address and pid are written by then
dbus-daemon --config-file="$T/bus.conf" --fork --print-address=3 --print-pid=4 \
	3>"$T/address" 4>"$T/bus.pid"
BUS_PID=$(cat "$T/bus.pid")
DBUS_SYSTEM_BUS_ADDRESS=$(head -n1 "$T/address")
export DBUS_SYSTEM_BUS_ADDRESS

mkfifo "$T/ready"
"$BUILD/tests/integration/fake_systemd" "$T/calls.log" "$T/ready" &
FAKE_PID=$!
if [ "$(timeout 10 head -n1 "$T/ready")" != ready ]; then
	echo "FAIL: fake_systemd did not start"
	exit 1
fi

rc=0
FAKE_SYSTEMD_LOG="$T/calls.log" "$BUILD/tests/integration/test_units" || rc=$?
echo "--- fake systemd calls ---"
cat "$T/calls.log"
echo "---"
exit $rc
