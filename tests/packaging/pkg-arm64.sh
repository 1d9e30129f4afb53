#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# Cross-building for arm64 (Raspberry Pi OS 64-bit): "make deb-arm64-check" must pass, i.e.
# dpkg knows the arm64 triplet and the cross compiler links an aarch64 program.
set -u
cd "$(dirname "$0")/../.." || exit 1
env -u MAKEFLAGS -u MAKEOVERRIDES make --no-print-directory BUILD="${BUILD:-build}" deb-arm64-check
