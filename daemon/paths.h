/* SPDX-License-Identifier: GPL-2.0-or-later */
/* paths: the compiled-in defaults, the only place they appear. Every one can be changed by
 * a command-line flag or the config file, so tests run unprivileged in temporary dirs. */
#pragma once

#define SKRFLASH_CONFIG_FILE "/etc/skrflash/skrflash.conf"
#define SKRFLASH_STATE_DIR "/var/lib/skrflash"
#define SKRFLASH_RUNTIME_DIR "/run/skrflash"
#define SKRFLASH_CONTROL_SOCKET_NAME "control.sock"
/* the group the package creates: may drop firmware and use the control socket */
#define SKRFLASH_GROUP "skrflash"
