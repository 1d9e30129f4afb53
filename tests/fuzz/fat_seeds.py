#!/usr/bin/env python3
# Packs disk images into fuzz_fat's sparse seed format (see tests/fuzz/fuzz_fat.c): only the
# sectors that are not all zero are stored. Usage: fat_seeds.py IMAGE SEED
import struct
import sys

SECTOR = 512
data = open(sys.argv[1], "rb").read()
n = len(data) // SECTOR
out = bytearray(struct.pack("<I", n))
lba = 0
while lba < n:
    if data[lba * SECTOR:(lba + 1) * SECTOR].count(0) == SECTOR:
        lba += 1
        continue
    start = lba
    while lba < n and lba - start < 0xFFFF and \
            data[lba * SECTOR:(lba + 1) * SECTOR].count(0) != SECTOR:
        lba += 1
    out += struct.pack("<IH", start, lba - start) + data[start * SECTOR:lba * SECTOR]
open(sys.argv[2], "wb").write(out)
