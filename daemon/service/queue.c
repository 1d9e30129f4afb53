/* SPDX-License-Identifier: GPL-2.0-or-later */
/* queue: inotify on the queue directory, pickup, store, reject (see queue.h). */
#include "service/queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "log.h"
#include "util.h"

#define WATCH_MASK (IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF)

struct watch {
	int wd;
	char *queue; /* NULL for the top directory */
	char *path;
};

struct queue {
	sd_event *loop;
	const struct config *cfg;
	struct store *store;
	struct queue_callbacks cb;
	void *userdata;
	int inotify_fd;
	sd_event_source *source;
	struct watch *watches;
	size_t n_watches;
	char *rejected_dir;
	size_t waiting;
};

static const char *const image_exts[] = {"bin", "hex", "elf", "uf2", "ihex"};

char *
queue_rejected_dir(const struct config *cfg)
{
	return xasprintf("%s/rejected", cfg->state_dir);
}

size_t
queue_waiting(const struct queue *q)
{
	return q->waiting;
}

static bool
is_temp_name(const char *name)
{
	static const char *const suffixes[] = {".tmp", ".part", ".partial", "~", ".swp"};
	size_t len = strlen(name);

	if (name[0] == '.')
		return true;
	for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
		size_t sl = strlen(suffixes[i]);

		if (len >= sl && strcmp(name + len - sl, suffixes[i]) == 0)
			return true;
	}
	return false;
}

static bool
has_control_chars(const char *name)
{
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

/* "octopus.bin" -> queue "octopus"; "skr-1.4-turbo.bin" -> "skr-1.4-turbo" */
static char *
queue_of_top_file(const char *name)
{
	const char *dot = strrchr(name, '.');

	if (!dot || dot == name)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(image_exts); i++)
		if (strcasecmp(dot + 1, image_exts[i]) == 0)
			return xstrndup(name, (size_t)(dot - name));
	return NULL;
}

static int
write_reason(const char *path, const char *name, const char *queue, const char *reason)
{
	char esc[PATH_MAX], when[32];
	char *text;
	int r;

	escape_name(name, esc, sizeof(esc));
	format_time_iso(now_realtime_sec(), when, sizeof(when));
	text = xasprintf("file: %s\nqueue: %s\nrejected: %s\nreason: %s\n", esc,
			 queue ? queue : "-", when, reason);
	r = write_file_atomic(path, text, strlen(text), 0640);
	free(text);
	return r;
}

/* Move a refused entry aside; it keeps its name (with .N if taken) next to <name>.reason. */
static void
reject(struct queue *q, int dirfd, const char *name, const char *queue, const char *reason)
{
	char esc[PATH_MAX];
	char *target = NULL, *reason_path = NULL;
	struct log_fields f = {.message_id = LOG_MID_FIRMWARE_REJECTED, .profile = queue};
	int r;

	escape_name(name, esc, sizeof(esc));
	r = mkdir_p(q->rejected_dir, 0770);
	for (unsigned n = 0; r >= 0 && n < 1000; n++) {
		struct stat st;

		free(target);
		target = n ? xasprintf("%s/%s.%u", q->rejected_dir, name, n)
			   : xasprintf("%s/%s", q->rejected_dir, name);
		if (lstat(target, &st) < 0 && errno == ENOENT)
			break;
	}
	if (r >= 0) {
		reason_path = xasprintf("%s.reason", target);
		r = write_reason(reason_path, name, queue, reason);
	}
	if (r >= 0 && renameat(dirfd, name, AT_FDCWD, target) < 0)
		r = -errno;
	if (r < 0) {
		/* it stays where it is: refused files are never deleted */
		log_full(LOG_ERR, r, &f, "firmware '%s' refused (%s), and moving it to %s failed",
			 esc, reason, q->rejected_dir);
	} else {
		(void)fsync(dirfd);
		log_full(LOG_ERR, 0, &f, "firmware '%s' refused: %s; moved to %s", esc, reason,
			 target);
	}
	if (q->cb.rejected)
		q->cb.rejected(q->userdata, name, reason);
	free(target);
	free(reason_path);
}

static bool
owner_allowed(const struct queue *q, const struct stat *st)
{
	if (st->st_uid == 0 || st->st_uid == geteuid())
		return true;
	return q->cfg->has_drop_gid && st->st_gid == q->cfg->drop_gid;
}

/* A read lease can only be taken while nobody has the file open for writing: the way to
 * tell a finished file from one whose producer ignored the rename contract. Only the owner
 * (or CAP_LEASE) may take one; otherwise the contract is trusted. */
static int
check_not_being_written(int fd)
{
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
		return errno == EAGAIN ? -EBUSY : 0;
	return 1;
}

static int
read_all(int fd, uint8_t *buf, size_t size)
{
	size_t got = 0;

	while (got < size) {
		ssize_t n = pread(fd, buf + got, size - got, (off_t)got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -ENODATA;
		got += (size_t)n;
	}
	return 0;
}

static void
pick_up(struct queue *q, int dirfd, const char *name, const char *queue)
{
	const struct config_profile *p = queue ? config_find_queue(q->cfg, queue) : NULL;
	char esc[PATH_MAX], sha[SHA256_HEX_LEN + 1], *reason = NULL;
	const char *format = NULL;
	struct store_desired d;
	uint8_t *data = NULL;
	struct log_fields f;
	struct stat st;
	int fd, r, lease = 0;

	if (is_temp_name(name))
		return;
	escape_name(name, esc, sizeof(esc));
	if (has_control_chars(name)) {
		reject(q, dirfd, name, queue,
		       "the file name contains control characters; rename it to plain text");
		return;
	}
	if (!p) {
		char *why = xasprintf("no profile takes queue '%s'; use the name of a profile in "
				      "%s, or add a profile",
				      queue ? queue : name,
				      q->cfg->path ? q->cfg->path
						   : "the configuration (or, with none, a board "
						     "name `skrflashctl catalog` lists)");
		reject(q, dirfd, name, queue, why);
		free(why);
		return;
	}
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ELOOP)
			reject(q, dirfd, name, queue,
			       "it is a symbolic link; copy the file itself into the queue");
		else if (errno != ENOENT)
			log_warn_errno(-errno, "cannot open queued file '%s'", esc);
		return;
	}
	if (fstat(fd, &st) < 0) {
		log_warn_errno(-errno, "cannot stat queued file '%s'", esc);
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		reject(q, dirfd, name, queue, "it is a directory, not a firmware file");
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		reject(q, dirfd, name, queue,
		       S_ISFIFO(st.st_mode) ? "it is a FIFO, not a regular file"
					    : "it is not a regular file");
		goto out;
	}
	if (st.st_nlink != 1) {
		reject(q, dirfd, name, queue,
		       "it has more than one hard link, so it could change after it was checked; "
		       "drop a copy instead");
		goto out;
	}
	if (!owner_allowed(q, &st)) {
		char *why = xasprintf("it is owned by uid %u gid %u, who may not drop firmware; "
				      "use a member of the drop group",
				      (unsigned)st.st_uid, (unsigned)st.st_gid);
		reject(q, dirfd, name, queue, why);
		free(why);
		goto out;
	}
	lease = check_not_being_written(fd);
	if (lease == -EBUSY) {
		/* the writer's close brings IN_CLOSE_WRITE and another try */
		log_debug("queued file '%s' is still being written", esc);
		q->waiting++;
		lease = 0;
		goto out;
	}
	if (st.st_size == 0) {
		reject(q, dirfd, name, queue, "the file is empty");
		goto out;
	}
	if ((uint64_t)st.st_size > catalog_max_flash_size()) {
		char *why = xasprintf("%llu bytes is larger than any supported board's flash",
				      (unsigned long long)st.st_size);
		reject(q, dirfd, name, queue, why);
		free(why);
		goto out;
	}
	data = xmalloc((size_t)st.st_size);
	r = read_all(fd, data, (size_t)st.st_size);
	if (r < 0) {
		log_warn_errno(r, "cannot read queued file '%s'; will retry when it changes", esc);
		goto out;
	}
	sha256_hex(data, (size_t)st.st_size, sha);
	if (q->cb.validate) {
		r = q->cb.validate(q->userdata, p, name, data, (size_t)st.st_size, &format,
				   &reason);
		if (r < 0) {
			reject(q, dirfd, name, queue, reason ? reason : "refused by validation");
			goto out;
		}
	}
	r = store_firmware_put(q->store, sha, data, (size_t)st.st_size, format, name);
	if (r < 0) {
		log_error_errno(r, "cannot store firmware '%s'; it stays queued", esc);
		goto out;
	}
	memset(&d, 0, sizeof(d));
	(void)str_copy(d.profile, sizeof(d.profile), p->name);
	(void)str_copy(d.sha, sizeof(d.sha), sha);
	(void)str_copy(d.source, sizeof(d.source), esc);
	d.size = (uint64_t)st.st_size;
	r = store_desired_set(q->store, &d);
	if (r < 0) {
		log_error_errno(r, "cannot record firmware '%s'; it stays queued", esc);
		goto out;
	}
	/* stored and recorded: only now may it leave the queue */
	if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
		log_warn_errno(-errno, "cannot remove picked-up file '%s' from the queue", esc);
	(void)fsync(dirfd);
	memset(&f, 0, sizeof(f));
	f.message_id = LOG_MID_FIRMWARE_QUEUED;
	f.profile = p->name;
	f.sha256 = sha;
	log_full(LOG_NOTICE, 0, &f, "firmware queued: '%s' (%llu bytes%s%s) for profile '%s'", esc,
		 (unsigned long long)st.st_size, format ? ", " : "", format ? format : "", p->name);
	if (q->cb.accepted)
		q->cb.accepted(q->userdata, p, sha, name);
out:
	if (lease > 0)
		(void)fcntl(fd, F_SETLEASE, F_UNLCK);
	free(reason);
	free(data);
	close_fd(fd);
}

static struct watch *
find_watch_wd(struct queue *q, int wd)
{
	for (size_t i = 0; i < q->n_watches; i++)
		if (q->watches[i].wd == wd)
			return &q->watches[i];
	return NULL;
}

static struct watch *
find_watch_queue(struct queue *q, const char *queue)
{
	for (size_t i = 0; i < q->n_watches; i++)
		if (q->watches[i].queue && strcmp(q->watches[i].queue, queue) == 0)
			return &q->watches[i];
	return NULL;
}

static void scan_dir(struct queue *q, const struct watch *w);

static struct watch *
add_watch(struct queue *q, const char *path, const char *queue)
{
	struct watch *w;
	int wd = inotify_add_watch(q->inotify_fd, path, WATCH_MASK | IN_ONLYDIR | IN_DONT_FOLLOW);

	if (wd < 0) {
		log_warn_errno(-errno, "cannot watch queue directory %s", path);
		return NULL;
	}
	w = find_watch_wd(q, wd);
	if (w)
		return w;
	q->watches = xreallocarray(q->watches, q->n_watches + 1, sizeof(*q->watches));
	w = &q->watches[q->n_watches++];
	w->wd = wd;
	w->queue = queue ? xstrdup(queue) : NULL;
	w->path = xstrdup(path);
	return w;
}

/* A directory directly under queue/: a profile's queue, or something to move aside. */
static void
top_dir_entry(struct queue *q, int dirfd, const char *name)
{
	struct watch *w;
	char *path;

	if (is_temp_name(name))
		return;
	if (!config_find_queue(q->cfg, name)) {
		/* the queue of a profile that is gone (the catalog's, when a first config file
		 * arrives): an empty one simply goes, one with files in it goes aside */
		if (unlinkat(dirfd, name, AT_REMOVEDIR) == 0) {
			log_debug("removed the empty queue directory '%s': no profile uses it",
				  name);
			return;
		}
		pick_up(q, dirfd, name, name);
		return;
	}
	if (find_watch_queue(q, name))
		return;
	path = xasprintf("%s/%s", q->cfg->queue_dir, name);
	w = add_watch(q, path, name);
	free(path);
	if (w)
		scan_dir(q, w);
}

static void
entry(struct queue *q, const struct watch *w, int dirfd, const char *name, bool is_dir)
{
	char *queue;

	if (w->queue) {
		pick_up(q, dirfd, name, w->queue);
		return;
	}
	if (is_dir) {
		top_dir_entry(q, dirfd, name);
		return;
	}
	if (is_temp_name(name))
		return;
	queue = queue_of_top_file(name);
	if (!queue) {
		reject(q, dirfd, name, NULL,
		       "files directly in the queue must be named <profile>.bin (or .hex, .elf, "
		       ".uf2); or put the file into queue/<profile>/");
		return;
	}
	pick_up(q, dirfd, name, queue);
	free(queue);
}

static void
scan_dir(struct queue *q, const struct watch *w)
{
	int dirfd = open(w->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *de;
	char **names = NULL;
	bool *dirs = NULL;
	size_t n = 0;
	char *queue = w->queue ? xstrdup(w->queue) : NULL;
	char *path = xstrdup(w->path);

	if (dirfd < 0) {
		log_warn_errno(-errno, "cannot scan queue directory %s", w->path);
		goto done;
	}
	d = fdopendir(dup(dirfd));
	if (!d)
		goto done;
	/* collect first: pickup changes the directory while we read it */
	while ((de = readdir(d))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		names = xreallocarray(names, n + 1, sizeof(*names));
		dirs = xreallocarray(dirs, n + 1, sizeof(*dirs));
		names[n] = xstrdup(de->d_name);
		dirs[n++] = de->d_type == DT_DIR;
	}
	closedir(d);
	for (size_t i = 0; i < n; i++) {
		struct watch tmp = {.wd = -1, .queue = queue, .path = path};

		/* w may move when top_dir_entry adds watches: use the copy */
		entry(q, &tmp, dirfd, names[i], dirs[i]);
	}
done:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(dirs);
	free(queue);
	free(path);
	close_fd(dirfd);
}

static int
on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct queue *q = userdata;
	union {
		struct inotify_event ev;
		char buf[16 * (sizeof(struct inotify_event) + NAME_MAX + 1)];
	} u;

	(void)s;
	(void)revents;
	for (;;) {
		ssize_t len = read(fd, u.buf, sizeof(u.buf));

		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0)
			break;
		for (char *p = u.buf; p < u.buf + len;) {
			struct inotify_event *ev = (struct inotify_event *)(void *)p;
			struct watch *w = find_watch_wd(q, ev->wd);

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				/* events were lost: a full rescan finds whatever they announced */
				for (size_t i = 0; i < q->n_watches; i++) {
					struct watch copy = q->watches[i];
					scan_dir(q, &copy);
				}
				continue;
			}
			if (!w || !ev->len)
				continue;
			if ((ev->mask & IN_CREATE) && !(ev->mask & IN_ISDIR))
				continue; /* a file being created: wait for its close or rename */
			{
				struct watch copy = *w;
				int dirfd = open(copy.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

				if (dirfd < 0)
					continue;
				if (ev->mask & IN_CLOSE_WRITE && q->waiting)
					q->waiting--;
				entry(q, &copy, dirfd, ev->name, (ev->mask & IN_ISDIR) != 0);
				close_fd(dirfd);
			}
		}
	}
	return 0;
}

static void
watch_all(struct queue *q)
{
	struct watch *top;
	bool have_top = add_watch(q, q->cfg->queue_dir, NULL) != NULL;

	for (size_t i = 0; i < q->cfg->n_profiles; i++) {
		const char *name = q->cfg->profiles[i].queue;
		char *path = xasprintf("%s/%s", q->cfg->queue_dir, name);

		if (mkdir(path, 0770) < 0 && errno != EEXIST)
			log_warn_errno(-errno, "cannot create queue directory %s", path);
		else if (!find_watch_queue(q, name))
			(void)add_watch(q, path, name);
		free(path);
	}
	/* armed everywhere: now whatever was dropped before is picked up (looked up again:
	 * adding watches moves the array) */
	top = NULL;
	for (size_t i = 0; have_top && i < q->n_watches && !top; i++)
		if (!q->watches[i].queue)
			top = &q->watches[i];
	if (top) {
		struct watch copy = *top;
		scan_dir(q, &copy);
	}
	for (size_t i = 0; i < q->n_watches; i++) {
		struct watch copy = q->watches[i];

		if (copy.queue)
			scan_dir(q, &copy);
	}
}

int
queue_start(sd_event *loop, const struct config *cfg, struct store *store,
	    const struct queue_callbacks *cb, void *userdata, struct queue **ret)
{
	struct queue *q = xnew(struct queue);
	int r;

	q->loop = sd_event_ref(loop);
	q->cfg = cfg;
	q->store = store;
	if (cb)
		q->cb = *cb;
	q->userdata = userdata;
	q->rejected_dir = queue_rejected_dir(cfg);
	r = mkdir_p(cfg->queue_dir, 0770);
	if (r < 0) {
		log_error_errno(r, "cannot create queue directory %s", cfg->queue_dir);
		goto fail;
	}
	q->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (q->inotify_fd < 0) {
		r = -errno;
		goto fail;
	}
	r = sd_event_add_io(loop, &q->source, q->inotify_fd, EPOLLIN, on_inotify, q);
	if (r < 0)
		goto fail;
	(void)sd_event_source_set_description(q->source, "queue-inotify");
	watch_all(q);
	*ret = q;
	return 0;
fail:
	queue_free(q);
	return r;
}

/* Forget the watches of queues the new config does not have, then rescan the top directory:
 * their directories go (empty) or aside (with files) like any other stray directory. */
static void
drop_stale_watches(struct queue *q)
{
	size_t k = 0;

	for (size_t i = 0; i < q->n_watches; i++) {
		struct watch *w = &q->watches[i];

		if (!w->queue || config_find_queue(q->cfg, w->queue)) {
			q->watches[k++] = *w;
			continue;
		}
		(void)inotify_rm_watch(q->inotify_fd, w->wd);
		free(w->queue);
		free(w->path);
	}
	q->n_watches = k;
}

void
queue_set_config(struct queue *q, const struct config *cfg)
{
	q->cfg = cfg;
	free(q->rejected_dir);
	q->rejected_dir = queue_rejected_dir(cfg);
	drop_stale_watches(q);
	watch_all(q);
}

struct queue *
queue_free(struct queue *q)
{
	if (!q)
		return NULL;
	sd_event_source_disable_unref(q->source);
	if (q->inotify_fd > 0)
		close_fd(q->inotify_fd);
	for (size_t i = 0; i < q->n_watches; i++) {
		free(q->watches[i].queue);
		free(q->watches[i].path);
	}
	free(q->watches);
	free(q->rejected_dir);
	sd_event_unref(q->loop);
	free(q);
	return NULL;
}
