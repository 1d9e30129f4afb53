#!/bin/sh
# make check: `make bench` still works. A quick run (tiny images, device time zero, one
# repetition) must finish and write every results.json key; no figure is judged here.
set -u
BUILD=${BUILD:-build}
out=$(mktemp "${TMPDIR:-/tmp}/skrbench-smoke.XXXXXX")
log="$out.log"
trap 'rm -f "$out" "$log"' EXIT
# under `make asan` the preloaded runtime reaches dfu-util too, which is not built with it:
# its leak report at exit would fail the comparison runs
if [ -n "${SKRFLASH_ASAN:-}" ]; then
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
fi
if ! timeout 60 "$BUILD/bench/skrbench" --quick --build "$BUILD" --out "$out" --log "$log" \
	>/dev/null; then
	echo "skrbench --quick failed; its log:" >&2
	tail -n 40 "$log" >&2
	exit 1
fi
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["dfuse_transfers_vs_dfu_util", "dfuse_zero_time_vs_dfu_util", "dfuse_vs_dfu_util",
        "dfuse_vs_bound", "changed_sector_speedup_k1", "katapult_vs_bound", "parallel16_vs_1",
        "idle_rss_kib", "rss_growth_kib_after_100", "idle_wakeups_per_min",
        "uevent_to_first_byte_ms", "picoboot_vs_bound", "sd_vs_bound", "sd_cases"]
missing = [k for k in keys if k not in r]
# figures that every quick run can produce (the bounds need device time, so they may be null)
numeric = ["dfuse_transfers_vs_dfu_util", "dfuse_zero_time_vs_dfu_util",
           "changed_sector_speedup_k1", "parallel16_vs_1", "idle_rss_kib",
           "uevent_to_first_byte_ms"]
bad = [k for k in numeric if not isinstance(r.get(k), (int, float)) or r[k] <= 0]
if missing or bad:
    print("results.json: missing %s, no figure for %s" % (missing, bad), file=sys.stderr)
    sys.exit(1)
PY
