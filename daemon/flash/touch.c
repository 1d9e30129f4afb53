/* SPDX-License-Identifier: GPL-2.0-or-later */
/* touch: the 1200-baud bootloader request (see touch.h).
 *
 * Klipper's CDC-ACM code reboots into its bootloader when the last line coding says 1200 baud
 * and DTR drops (protocols.md §2.1); this is the same host sequence as Klipper's flash_usb.py
 * and Katapult's flashtool. glibc's tcsetattr() is used on purpose: it reaches the real line
 * (and the pty under umockdev), where a hand-made TCSETS ioctl would not. */
#include "flash/touch.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "log.h"

int
touch_enter_bootloader(const char *tty)
{
	struct termios t;
	int dtr = TIOCM_DTR;
	int fd;

	fd = open(tty, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return log_debug_errno(-errno, "1200-baud touch: cannot open %s", tty);
	/* every step below may fail once the board starts rebooting: that is the goal */
	if (ioctl(fd, TIOCMBIS, &dtr) < 0)
		log_debug_errno(-errno, "1200-baud touch: raising DTR on %s", tty);
	if (tcgetattr(fd, &t) == 0) {
		(void)cfsetispeed(&t, B1200);
		(void)cfsetospeed(&t, B1200);
		if (tcsetattr(fd, TCSANOW, &t) < 0)
			log_debug_errno(-errno, "1200-baud touch: setting 1200 baud on %s", tty);
	}
	if (ioctl(fd, TIOCMBIC, &dtr) < 0)
		log_debug_errno(-errno, "1200-baud touch: dropping DTR on %s", tty);
	close(fd);
	return 0;
}
