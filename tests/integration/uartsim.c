/* SPDX-License-Identifier: GPL-2.0-or-later */
/* uartsim: runs one UART ROM bootloader simulator on a pty for host tools.
 *
 *   uartsim lpc|stm32 MCU LINK DUMP [load=FILE@ADDR] [speed=X] [fault=NAME]
 *
 * Creates a pty, makes LINK a symlink to its slave, answers as the MCU's ROM bootloader
 * until SIGTERM/SIGINT, then writes the whole simulated flash to DUMP. Used by rescue_tools.sh
 * to prove the simulators against Debian's lpc21isp and stm32flash. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "an3155_sim.h"
#include "catalog.h"
#include "lpcisp_sim.h"
#include "uart_pty.h"
#include "util.h"

static int
load(struct flash *f, const char *spec)
{
	char path[512];
	const char *at = strrchr(spec, '@');
	uint8_t *data = NULL;
	size_t size = 0;
	int r;

	if (!at || (size_t)(at - spec) >= sizeof(path))
		return -EINVAL;
	memcpy(path, spec, (size_t)(at - spec));
	path[at - spec] = '\0';
	r = read_file(path, f->size, &data, &size);
	if (r < 0)
		return r;
	r = flash_load(f, (uint32_t)strtoul(at + 1, NULL, 0), data, size);
	free(data);
	return r;
}

static int
dump(struct flash *f, const char *path)
{
	FILE *fp = fopen(path, "wb");
	int r = 0;

	if (!fp)
		return -errno;
	pthread_mutex_lock(&f->lock);
	if (fwrite(f->bytes, 1, f->size, fp) != f->size)
		r = -EIO;
	pthread_mutex_unlock(&f->lock);
	if (fclose(fp) != 0 && r == 0)
		r = -errno;
	return r;
}

int
main(int argc, char **argv)
{
	const struct catalog_mcu *mcu;
	struct lpcisp_sim *lpc = NULL;
	struct an3155_sim *stm = NULL;
	struct flash *f;
	struct uart_pty pty;
	sigset_t mask;
	double speed = 0;
	int sfd, r;

	if (argc < 5 || !(mcu = catalog_mcu_find(argv[2]))) {
		fprintf(stderr, "usage: uartsim lpc|stm32 MCU LINK DUMP [load=F@ADDR] [speed=X] "
				"[fault=...]\n");
		return 2;
	}
	if (uart_pty_open(&pty) < 0) {
		perror("uartsim: pty");
		return 1;
	}
	for (int i = 5; i < argc; i++)
		if (strncmp(argv[i], "speed=", 6) == 0)
			speed = strtod(argv[i] + 6, NULL);
	if (strcmp(argv[1], "lpc") == 0) {
		lpc = lpcisp_sim_new(mcu, speed, pty.master);
		f = lpc->flash;
	} else {
		stm = an3155_sim_new(mcu, speed, pty.master);
		f = stm->flash;
	}
	for (int i = 5; i < argc; i++) {
		if (strncmp(argv[i], "load=", 5) == 0 && load(f, argv[i] + 5) < 0) {
			fprintf(stderr, "uartsim: cannot load %s\n", argv[i] + 5);
			return 1;
		}
		if (strcmp(argv[i], "fault=crp") == 0 && lpc)
			lpc->faults |= LPC_SIM_CRP;
		if (strcmp(argv[i], "fault=rdp") == 0 && stm)
			stm->faults |= STM_SIM_RDP;
		if (strcmp(argv[i], "fault=echo") == 0 && lpc)
			lpc->faults |= LPC_SIM_ECHO_QUIRKS;
	}
	(void)unlink(argv[3]);
	if (symlink(pty.path, argv[3]) < 0) {
		perror("uartsim: symlink");
		return 1;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	printf("%s\n", pty.path);
	fflush(stdout);
	r = uart_pty_run(&pty, sfd, lpc ? lpcisp_sim_feed : an3155_sim_feed,
			 lpc ? (void *)lpc : (void *)stm);
	if (r < 0)
		fprintf(stderr, "uartsim: %s\n", strerror(-r));
	r = dump(f, argv[4]);
	(void)unlink(argv[3]);
	if (lpc)
		fprintf(stderr, "uartsim: lpc syncs=%u erases=%u copies=%u went=%d\n", lpc->syncs,
			lpc->erases, lpc->copies, lpc->went);
	if (stm)
		fprintf(stderr, "uartsim: stm32 syncs=%u erases=%u writes=%u nacks=%u\n",
			stm->syncs, stm->erases, stm->writes, stm->nacks);
	lpcisp_sim_free(lpc);
	an3155_sim_free(stm);
	uart_pty_close(&pty);
	close(sfd);
	return r < 0 ? 1 : 0;
}
