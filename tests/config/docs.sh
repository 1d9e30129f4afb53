#!/bin/sh
# Every configuration example in the documentation loads: each fenced block of README.md and
# docs/*.md and each .EX/.EE block of the man pages that holds a profile or a global setting
# goes through `skrflashd --check-config`. A documented example that the daemon refuses
# teaches users a mistake.
set -u
build=${BUILD:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" README.md docs/*.md daemon/service/skrflashd.8 daemon/cli/skrflashctl.1 \
	conf/skrflash.conf.5 <<'PY'
import os, re, sys
out = sys.argv[1]
n = 0
def is_config(text):
    return re.search(r'^\s*(profiles\s*=|[a-z_]+\s*=\s*("|\d|\[|\{|true|false))', text, re.M) \
        and 'polkit' not in text and '$ ' not in text and not text.lstrip().startswith(('sudo', 'make', 'skrflash'))
for path in sys.argv[2:]:
    text = open(path).read()
    if path.endswith('.md'):
        blocks = re.findall(r'^```[a-z]*\n(.*?)^```', text, re.M | re.S)
    else:
        blocks = re.findall(r'^\.EX\n(.*?)^\.EE', text, re.M | re.S)
        blocks = [b.replace('\\-', '-').replace('\\(dq', '"').replace('\\e', '\\') for b in blocks]
    for i, b in enumerate(blocks):
        if not is_config(b):
            continue
        n += 1
        name = '%s/%s.%d.conf' % (out, path.replace('/', '_'), i)
        open(name, 'w').write(b)
print('%d examples' % n)
PY
fail=0
count=0
for f in "$tmp"/*.conf; do
	[ -e "$f" ] || continue
	count=$((count + 1))
	if "$build/skrflashd" --check-config "$f" >"$tmp/out" 2>&1; then
		echo "ok: $(basename "$f")"
	else
		echo "FAIL: $(basename "$f") does not load:"
		sed 's/^/    /' "$tmp/out" "$f"
		fail=$((fail + 1))
	fi
done
echo "$count checks, $fail failed"
[ "$count" -gt 0 ] && [ "$fail" -eq 0 ]
