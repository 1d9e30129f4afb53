#!/bin/sh
# includes: the layering rules of daemon/ (docs/architecture.md), checked on every
# #include "..." line of every .c and .h below DIR (default: daemon).
#
#   proto/    pure codecs: only proto/
#   image/    proto/, image/ and the shared top
#   flash/    proto/, image/, flash/ and the top; never service/ or cli/
#   service/  proto/, image/, service/, the top, and of flash/ only the worker protocol
#   cli/      proto/, image/, flash/, cli/ and the top; never service/
#   (top)     only the top
#
# A quoted include without a folder names a top-level header, and it must exist there: the
# compiler would otherwise find a same-named header beside the including file and hide a
# crossing. Prints one line per violation, FILE:LINE: what is wrong, and exits 1 if any.
set -u
root=${1:-daemon}
[ -d "$root" ] || { echo "includes.sh: no directory $root" >&2; exit 2; }

allowed() { # folder-of-file -> allowed include folders ("top" = no folder)
	case "$1" in
	proto) echo "proto" ;;
	image) echo "proto image top" ;;
	flash) echo "proto image flash top" ;;
	service) echo "proto image service top flash/worker.h" ;;
	cli) echo "proto image flash cli top" ;;
	top) echo "top" ;;
	*) echo "" ;;
	esac
}

bad=0
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
find "$root" -name '*.[ch]' | sort >"$tmp"
while IFS= read -r file; do
	rel=${file#"$root"/}
	case "$rel" in
	*/*/*) echo "$file: too deep: daemon/ has one level of folders"; bad=1; continue ;;
	*/*) dir=${rel%%/*} ;;
	*) dir=top ;;
	esac
	rules=$(allowed "$dir")
	if [ -z "$rules" ]; then
		echo "$file: folder '$dir' is not one of proto image flash service cli"
		bad=1
		continue
	fi
	grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$file" |
		sed 's/^\([0-9]*\):[^"]*"\([^"]*\)".*/\1 \2/' |
		while read -r line inc; do
			case "$inc" in
			*/*) want=${inc%%/*} ;;
			*) want=top ;;
			esac
			if [ "$want" = top ] && [ ! -f "$root/$inc" ]; then
				echo "$file:$line: \"$inc\" is not a top-level header; name its folder"
				echo x
				continue
			fi
			ok=0
			for r in $rules; do
				[ "$r" = "$want" ] && ok=1
				[ "$r" = "$inc" ] && ok=1
			done
			if [ "$ok" = 0 ]; then
				echo "$file:$line: $dir/ may not include \"$inc\" (allowed: $rules)"
				echo x
			fi
		done >"$tmp.out"
	if [ -s "$tmp.out" ]; then
		grep -v '^x$' "$tmp.out"
		bad=1
	fi
	rm -f "$tmp.out"
done <"$tmp"
exit "$bad"
