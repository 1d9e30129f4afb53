#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# The fleet playbook: syntax check, then (as root) a real run against this machine over a
# local connection. It installs the .deb built by "make deb", starts skrflashd (no systemd
# as PID 1 here), queues a firmware image with skrflashctl, waits briefly (no board is
# attached, so the image stays queued) and writes the report, whose content is asserted.
# The package, user, group and daemon are removed again afterwards.
set -u
cd "$(dirname "$0")/../.." || exit 1
. tests/packaging/lib.sh
skip_under_asan
playbook=$PWD/packaging/ansible/fleet.yml
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
export ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_LOCAL_TEMP=$work/.ansible-local
export ANSIBLE_REMOTE_TEMP=$work/.ansible-remote ANSIBLE_HOME=$work/.ansible

if ! command -v ansible-playbook >/dev/null; then
	bad "ansible-playbook missing (package ansible-core)"
	finish
	exit 1
fi
if out=$(ansible-playbook --syntax-check -i packaging/ansible/inventory.example.ini \
	"$playbook" 2>&1); then
	ok "syntax-check"
else
	bad "syntax-check"
	echo "$out"
fi

if ! may_install "real run"; then
	finish
	exit
fi
ensure_deb || { bad "make deb"; finish; exit 1; }
pkg_lock || { bad "package test lock"; finish; exit 1; }
pkg_snapshot
cleanup() {
	start-stop-daemon --stop --quiet --oknodo --retry 10 --pidfile /run/skrflash/skrflashd.pid \
		--exec /usr/sbin/skrflashd
	pkg_restore
	rm -rf /var/tmp/skrflash-fleet "$work"
}
trap cleanup EXIT

# A plausible image for the catalog's skr-pro (STM32F407, application at 0x08008000): initial
# stack pointer in RAM, reset handler in the application area.
python3 -c '
import struct, sys
vec = [0x20020000] + [0x08008101] * 15
sys.stdout.buffer.write(struct.pack("<16I", *vec) + bytes(range(256)) * 32)' >"$work/klipper.bin"
sha=$(sha256sum "$work/klipper.bin" | cut -d' ' -f1)
{
	echo '[printers]'
	echo 'pi-local ansible_connection=local ansible_become=false'
	echo '[printers:vars]'
	echo 'ansible_python_interpreter=/usr/bin/python3'
} >"$work/inventory.ini"

if out=$(ansible-playbook -i "$work/inventory.ini" "$playbook" -e skrflash_deb="$DEB" \
	-e skrflash_firmware="$work/klipper.bin" -e skrflash_profile=skr-pro -e skrflash_wait=3 \
	-e skrflash_start_without_systemd=true -e skrflash_report="$work/report.json" 2>&1); then
	ok "playbook run"
else
	bad "playbook run"
fi
echo "$out" | tail -n 30
check "package installed by the playbook" \
	test "$(dpkg-query -W -f='${Status}' skrflash 2>/dev/null)" = "install ok installed"
if python3 - "$work/report.json" "$sha" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
host = report["hosts"]["pi-local"]
problems = []
if host.get("sha256") != sys.argv[2]:
    problems.append("sha256 %r" % host.get("sha256"))
if not isinstance(host.get("queued"), dict) or host["queued"].get("sha256") != sys.argv[2]:
    problems.append("queued verdict %r (refused: %r)" % (host.get("queued"), host.get("refused")))
if host.get("outcome") != "pending":
    problems.append("outcome %r, want pending (no board attached)" % host.get("outcome"))
if not isinstance(host.get("history"), list):
    problems.append("history %r" % host.get("history"))
if host.get("firmware") != "klipper.bin":
    problems.append("firmware %r" % host.get("firmware"))
print("\n".join(problems) or "report OK")
sys.exit(1 if problems else 0)
PY
then ok "report"; else bad "report"; cat "$work/report.json" 2>/dev/null; fi
check "firmware in the daemon's store" test -f "/var/lib/skrflash/firmware/$sha"
finish
