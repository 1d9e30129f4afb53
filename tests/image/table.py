#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-or-later
"""The verdict table: every catalog board against every realistic build of its MCU (every
menuconfig "Bootloader offset", in every format), its serial / CAN / USB-to-CAN builds and a
build for a sibling MCU. Each verdict must be "accepted", or refused with exactly one reason
naming the real cause. Prints the table (board x build -> verdict) and exits 1 on a mismatch.

usage: table.py IMAGE_DIR VCLI"""
import json
import os
import subprocess
import sys

# board: (MCU, app offset as menuconfig names it, wrong-MCU sibling build)
BOARDS = {
    "skr-1.3": ("lpc1768", 0x4000, "lpc1769-4000"),
    "skr-1.4": ("lpc1768", 0x4000, "lpc1769-4000"),
    "skr-1.4-turbo": ("lpc1769", 0x4000, "lpc1768-4000"),
    "skr-pro": ("stm32f407xx", 0x8000, "stm32f429xx-8000"),
    "skr-2-f407": ("stm32f407xx", 0x8000, "stm32f429xx-8000"),
    "skr-2-f429": ("stm32f429xx", 0x8000, "stm32f407xx-8000"),
    "skr-3-h743": ("stm32h743xx", 0x20000, "stm32h723xx-20000"),
    "skr-3-h723": ("stm32h723xx", 0x20000, "stm32h743xx-20000"),
    "skr-mini-e3-v1.2": ("stm32f103xe", 0x7000, "stm32f401xc-4000"),
    "skr-mini-e3-v2-f103rc": ("stm32f103xe", 0x7000, "stm32g0b1xx-2000"),
    "skr-mini-e3-v2-f103re": ("stm32f103xe", 0x7000, "stm32g0b1xx-2000"),
    "skr-mini-e3-v3": ("stm32g0b1xx", 0x2000, "stm32g0b0xx-2000"),
    "skr-mini-e3-v3-g0b0": ("stm32g0b0xx", 0x2000, "stm32g0b1xx-2000"),
    "skr-mini-e3-v3.0.1": ("stm32f401xc", 0x4000, "stm32f103xe-7000"),
    "skr-pico": ("rp2040", 0x100, "stm32g0b1xx-2000"),
    "octopus-f446": ("stm32f446xx", 0x8000, "stm32f407xx-8000"),
    "octopus-f429": ("stm32f429xx", 0x8000, "stm32f446xx-8000"),
    "octopus-f407": ("stm32f407xx", 0x8000, "stm32f446xx-8000"),
    "octopus-pro-f446": ("stm32f446xx", 0x8000, "stm32f429xx-8000"),
    "octopus-pro-f429": ("stm32f429xx", 0x8000, "stm32f446xx-8000"),
    "octopus-pro-h723": ("stm32h723xx", 0x20000, "stm32h743xx-20000"),
    "manta-m8p": ("stm32g0b1xx", 0x2000, "stm32g0b0xx-2000"),
}
# Klipper's menuconfig choices per MCU (src/*/Kconfig "Bootloader offset")
F103 = [0, 0x800, 0x1000, 0x2000, 0x4000, 0x5000, 0x7000, 0x8000, 0x8800, 0x9000, 0x10000]
F4X5 = [0, 0x4000, 0x8000, 0xC000, 0x10000, 0x20200]
OFFSETS = {
    "lpc1768": [0, 0x4000], "lpc1769": [0, 0x4000], "stm32f103xe": F103,
    "stm32f401xc": [0, 0x4000, 0x8000, 0xC000, 0x10000], "stm32f407xx": F4X5,
    "stm32f429xx": F4X5, "stm32f446xx": [0, 0x8000, 0x10000],
    "stm32g0b1xx": [0, 0x2000], "stm32g0b0xx": [0, 0x2000],
    "stm32h743xx": [0, 0x20000], "stm32h723xx": [0, 0x20000], "rp2040": [0x100, 0x4000],
}
NAMES = {0x20200: "128KiB bootloader with 512 byte offset"}


def menuconfig(mcu, off):
    if off == 0 or (mcu == "rp2040" and off == 0x100):
        return "No bootloader"
    return NAMES.get(off, "%dKiB bootloader" % (off // 1024))


def file_base(mcu, off):
    """Address of a build's first byte: flash base + offset (RP2040 boot2 layout: the base)."""
    if mcu == "rp2040":
        return 0x10000000 if off == 0x100 else 0x10000000 + off
    return (0 if mcu.startswith("lpc") else 0x08000000) + off


def run(vcli, board, path):
    p = subprocess.run([vcli, "validate", "--json", "--board", board, path],
                       capture_output=True, text=True, check=False)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, {"reasons": ["unparsable output: " + p.stdout + p.stderr]}


def expect(board, mcu, app_off, build, fmt):
    """(accepted, text the one reason must contain, short verdict)"""
    parts = build.split("-")
    bmcu, off = parts[0], int(parts[1], 16)
    iface = parts[2] if len(parts) > 2 else "usb"
    if bmcu != mcu:
        return False, "was built for %s, but" % bmcu, "refuse: MCU %s" % bmcu
    if off != app_off:
        got = "0x%08x (\"%s\")" % (file_base(mcu, off), menuconfig(mcu, off))
        want = "Bootloader offset \"%s\"" % menuconfig(mcu, app_off)
        if fmt == "bin":
            text = "is linked for %s but the app on" % got
        else:
            text = "is linked for %s but" % got
        return False, [text, want], "refuse: offset %s" % menuconfig(mcu, off)
    if iface != "usb":
        word = {"serial": "serial", "can": "CAN", "bridge": "USB to CAN bus bridge"}[iface]
        return False, "is a %s build, but the board is expected to talk USB" % word, \
            "refuse: %s build" % iface
    return True, None, "accept"


def main():
    d, vcli = sys.argv[1], sys.argv[2]
    checks = fails = 0
    for board, (mcu, app_off, sibling) in BOARDS.items():
        builds = ["%s-%x" % (mcu, o) for o in OFFSETS[mcu]]
        builds += [b for b in ("%s-%x-%s" % (mcu, app_off, i)
                               for i in ("serial", "can", "bridge"))
                   if os.path.exists(os.path.join(d, b + ".bin"))]
        builds.append(sibling)
        row = []
        for build in builds:
            fmts = ["bin", "elf", "hex"] + (["uf2"] if build.startswith("rp2040") else [])
            short = None
            for fmt in fmts:
                acc, text, short = expect(board, mcu, app_off, build, fmt)
                code, v = run(vcli, board, os.path.join(d, "%s.%s" % (build, fmt)))
                reasons = v.get("reasons", [])
                texts = text if isinstance(text, list) else [text]
                ok = (code == 0 and v.get("accepted") is True and not reasons) if acc else (
                    code == 1 and len(reasons) == 1 and
                    all(t in reasons[0] for t in texts))
                checks += 1
                if not ok:
                    fails += 1
                    print("FAIL: %s %s.%s: exit %d, expected %s; reasons: %s"
                          % (board, build, fmt, code, short, reasons))
            row.append("%s: %s" % (build, short))
        print("%s (%s, app at +0x%x):" % (board, mcu, app_off))
        for r in row:
            print("    " + r)
    print("verdict table: %d checks, %d failed" % (checks, fails))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
