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
#   skr14    SKR 1.4 (LPC1768) running Klipper with the community     -> flashed through LPC DFU
#            SD+DFU bootloader, no Katapult                             (plain DFU 1.1)
#   turbo    SKR 1.4 Turbo (LPC1769) and an SKR Pro (STM32F407) with  -> flashed through their SD
#   skrpro-sd their stock SD bootloaders only, a FAT card in the slot    cards by the running Klipper
#   rescued  SKR 1.4 Turbo (LPC1769) whose SD slot died: its stock    -> Katapult installed over
#            bootloader only reads that slot; its ROM on a UART          the UART (rescue), then
#                                                                       Klipper over USB; restore
#   octoprint SKR Pro (STM32F407) with Katapult on port 2-4, driven  -> refused while OctoPrint
#            by OctoPrint (a fake one: tests/integration/               prints; then OctoPrint
#            fake_octoprint.py), not Klipper                            releases the port, the
#                                                                       board is flashed, and
#                                                                       OctoPrint connects again
#   skr2     SKR 2 (STM32F429), stock SD bootloader that reads the    -> firmware.bin written over
#            card over SDIO, no Katapult, no ROM DFU                    the SD path, "needs power
#                                                                       cycle", done after one
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
# OctoPrint's (fake's) address, chosen now: the profile names it
OCTOPRINT_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

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
  { name = "skr14"; match = { board = "skr-1.4"; port = "2-1"; };
    methods = [ "katapult", "lpc-dfu" ]; auto_flash = [ "hotplug", "queue" ]; },
  { name = "skr2"; match = { board = "skr-2-f429"; port = "1-8"; };
    methods = [ "sd" ]; auto_flash = [ "hotplug", "queue" ]; },
  { name = "turbo"; match = { board = "skr-1.4-turbo"; port = "1-6"; };
    auto_flash = [ "hotplug", "queue" ]; },
  { name = "skrpro-sd"; match = { board = "skr-pro"; port = "1-7"; };
    auto_flash = [ "hotplug", "queue" ]; },
  { name = "rescued"; match = { board = "skr-1.4-turbo"; port = "1-9"; };
    auto_flash = [ "queue" ]; },
  { name = "octoprint"; match = { board = "skr-pro"; port = "2-4"; };
    auto_flash = [ ]; host = "octoprint";
    octoprint = { url = "http://127.0.0.1:$OCTOPRINT_PORT"; api_key_file = "$T/octoprint.key"; }; }
);
# the Pi's UART wired to the SKR 1.4 Turbo's UART0 (TFT header), no GPIO lines: guided
rescue = ( { device = "$T/uart-1-9"; baud = 115200; board = "skr-1.4-turbo"; } );
CONF

sim="$BUILD/skrsim"
"$sim" image octopus-f446 v0.13.0-farm "$T/octopus.bin"
"$sim" image skr-3-h723 v0.13.0-farm "$T/skr3.bin"
"$sim" image skr-pro v0.13.0-farm "$T/skrpro-no-offset.bin" 0x08000000
"$sim" image manta-m8p v0.13.0-farm "$T/manta-good.bin"
"$sim" image manta-m8p v0.13.1-wrong-crystal "$T/manta-crash.bin"
"$sim" image skr-pico v0.13.0-farm "$T/pico.bin"
"$sim" image skr-1.4 v0.13.0-farm "$T/skr14.bin"
"$sim" image skr-1.4-turbo v0.13.0-farm "$T/turbo.bin"
"$sim" image skr-pro v0.13.0-farm "$T/skrpro-sd.bin"
"$sim" bootloader skr-1.4-turbo katapult "$T/katapult.bin"
"$sim" image skr-pro v0.13.0-farm "$T/octoprint.bin"
echo OCTOPRINTKEY0123456789ABCDEF0000 >"$T/octoprint.key"
chmod 0600 "$T/octoprint.key"
echo "$OCTOPRINT_PORT" >"$T/octoprint.port"
"$sim" image skr-2-f429 v0.13.0-farm "$T/skr2.bin"
"$sim" marlin-image skr-1.3 2.1.2.1 "$T/ender-marlin.bin" "Ender-3 SKR13"
"$sim" image skr-1.3 v0.13.0-farm "$T/ender-klipper.bin"

echo "== skrflash demo: the real skrflashd on a Pi with thirteen simulated printer boards =="
exec "$sim" --quiet \
	--board skr-pro@1-3:klipper-app \
	--board skr-3-h723@1-2:klipper-app \
	--board manta-m8p@1-4:katapult-installed,bootloop=recover,cycles=2,crash=wrong-crystal \
	--board octopus-f446@1-1:katapult-installed \
	--board skr-pico@1-5:klipper-app \
	--board skr-1.4@2-1:klipper-app \
	--board skr-1.4-turbo@1-6:klipper-app,sdcard=64M \
	--board skr-pro@1-7:klipper-app,sdcard=64M,sdfs=fat32 \
	--board "skr-1.4-turbo@1-9:klipper-app,uart=$T/uart-1-9" \
	--board skr-pro@2-4:katapult-installed \
	--board skr-2-f429@1-8:klipper-app,sdcard=64M,sdfs=fat32 \
	--board skr-1.3@2-2:marlin-lpc,sdcard=64M,version=2.1.2 \
	--board skr-1.3@2-3:marlin-lpc,sdcard=64M,version=2.1.2 \
	-- sh "$here/inner.sh" "$T" "$BUILD"
