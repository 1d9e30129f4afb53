#!/bin/sh
# make demo: the real skrflashd on simulated boards, as a newcomer would watch it.
#
#   skr3     SKR 3 (STM32H723) running Klipper, no Katapult          -> flashed through ROM DFU
#   manta    Manta M8P (STM32G0B1) with Katapult: first a good image  -> flashed over Katapult,
#            then one that crashes at start-up (built for the wrong crystal: the checks cannot
#            see it)                                                 -> rolled back
#   skrpro   SKR Pro (STM32F407) gets an image built without the     -> refused before any write
#            32KiB bootloader offset
#   octopus  Octopus (STM32F446) with Katapult, flashed only when    -> `skrflashctl flash` with
#            asked (auto_flash = [])                                    --dry-run, then for real
#   pico     SKR Pico (RP2040) running Klipper, no bootloader of its  -> flashed through BOOTSEL
#            own                                                        (PICOBOOT) and back
#   turbo    SKR 1.4 Turbo (LPC1769) and an SKR Pro (STM32F407) with  -> flashed through their SD
#   skrpro-sd their stock SD bootloaders only, a FAT card in the slot    cards by the running Klipper
#   ender    SKR 1.3 (LPC1768) running Marlin 2.1.2, its SD card on   -> Marlin 2.1.2.1 written to
#            USB (port 2-2)                                              the card (msc), checked
#   ender-k  SKR 1.3 running Marlin, profile allows the migration    -> Klipper, over the card
#            (port 2-3)
#
# Exit status 0 only if every one of these outcomes happened.
set -u
BUILD=${BUILD:-build}
here=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d "${TMPDIR:-/tmp}/skrflash-demo.XXXXXX")
trap 'rm -rf "$T"' EXIT

cat >"$T/skrflash.conf" <<CONF
# the demo's configuration: one profile per board
timeouts = { bootloader = 5.0; boot = 4.0; leave_grace = 0.5; };
profiles = (
  { name = "octopus"; match = { board = "octopus-f446"; port = "1-1"; };
    auto_flash = [ ]; },
  { name = "skr3"; match = { board = "skr-3-h723"; port = "1-2"; };
    auto_flash = [ "hotplug", "queue" ]; },
  { name = "skrpro"; match = { board = "skr-pro"; port = "1-3"; };
    auto_flash = [ "hotplug", "queue" ]; },
  { name = "manta"; match = { board = "manta-m8p"; port = "1-4"; };
    auto_flash = [ "hotplug", "queue" ]; },
  { name = "ender"; match = { board = "skr-1.3"; port = "2-2"; };
    methods = [ "msc" ]; auto_flash = [ "queue" ]; },
  { name = "ender-klipper"; match = { board = "skr-1.3"; port = "2-3"; };
    methods = [ "msc" ]; allow_migration = true; auto_flash = [ "queue" ]; },
  { name = "pico"; match = { board = "skr-pico"; port = "1-5"; };
    auto_flash = [ "hotplug", "queue" ]; },
  { name = "turbo"; match = { board = "skr-1.4-turbo"; port = "1-6"; };
    auto_flash = [ "hotplug", "queue" ]; },
  { name = "skrpro-sd"; match = { board = "skr-pro"; port = "1-7"; };
    auto_flash = [ "hotplug", "queue" ]; }
);
CONF

sim="$BUILD/skrsim"
"$sim" image octopus-f446 v0.13.0-farm "$T/octopus.bin"
"$sim" image skr-3-h723 v0.13.0-farm "$T/skr3.bin"
"$sim" image skr-pro v0.13.0-farm "$T/skrpro-no-offset.bin" 0x08000000
"$sim" image manta-m8p v0.13.0-farm "$T/manta-good.bin"
"$sim" image manta-m8p v0.13.1-wrong-crystal "$T/manta-crash.bin"
"$sim" image skr-pico v0.13.0-farm "$T/pico.bin"
"$sim" image skr-1.4-turbo v0.13.0-farm "$T/turbo.bin"
"$sim" image skr-pro v0.13.0-farm "$T/skrpro-sd.bin"
"$sim" marlin-image skr-1.3 2.1.2.1 "$T/ender-marlin.bin" "Ender-3 SKR13"
"$sim" image skr-1.3 v0.13.0-farm "$T/ender-klipper.bin"

echo "== skrflash demo: the real skrflashd on a Pi with five simulated printer boards =="
exec "$sim" --quiet \
	--board skr-pro@1-3:klipper-app \
	--board skr-3-h723@1-2:klipper-app \
	--board manta-m8p@1-4:katapult-installed,bootloop=recover,cycles=2,crash=wrong-crystal \
	--board octopus-f446@1-1:katapult-installed \
	--board skr-pico@1-5:klipper-app \
	--board skr-1.4-turbo@1-6:klipper-app,sdcard=64M \
	--board skr-pro@1-7:klipper-app,sdcard=64M,sdfs=fat32 \
	--board skr-1.3@2-2:marlin-lpc,sdcard=64M,version=2.1.2 \
	--board skr-1.3@2-3:marlin-lpc,sdcard=64M,version=2.1.2 \
	-- sh "$here/inner.sh" "$T" "$BUILD"
