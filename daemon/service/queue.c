/* SPDX-License-Identifier: GPL-2.0-or-later */
/* queue: inotify on the queue directory, pickup, store, reject (see queue.h).
 *
 * Members of the drop group write into the queue, so nothing below trusts a path: the top
 * directory and each profile's directory are opened once (O_DIRECTORY | O_NOFOLLOW), must
 * belong to the daemon, and are used only through their descriptors (openat, renameat,
 * unlinkat). inotify watches the opened inode (/proc/self/fd/N), and a watched directory that
 * is moved or deleted is dropped and replaced, never followed to where it went. */
#include "service/queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "log.h"
#include "util.h"

#define WATCH_MASK                                                                                 \
	(IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
/* setgid: dropped files get the directory's group; sticky: members cannot rename or
 * delete what is not theirs (the profile directories in the top one, others' drops) */
#define QUEUE_DIR_MODE 03770
#define PICKUPS_PER_WAKEUP 4   /* the loop answers everyone else between pickups */
#define MAX_PENDING 4096       /* beyond this, one rescan after the backlog drained */
#define SETTLE_USEC 1000000ULL /* a foreign file unchanged this long is finished */
#define RETRY_MIN_USEC 2000000ULL
#define RETRY_MAX_USEC 60000000ULL
#define CLEAN_USEC 86400000000ULL /* a day */
#define MAX_REPORTED 256
#define REJECTED_NAME_MAX 200 /* leaves room for ".NNN.reason" within NAME_MAX */

struct watch {
	int wd;
	int dirfd;
	char *queue; /* NULL for the top directory */
};

struct pending {
	char *queue; /* NULL: an entry of the top directory */
	char *name;
	bool is_dir;
};

struct queue {
	sd_event *loop;
	const struct config *cfg;
	struct store *store;
	struct queue_callbacks cb;
	void *userdata;
	int inotify_fd;
	sd_event_source *source;
	sd_event_source *work;	/* deferred, idle priority: a few pickups per turn */
	sd_event_source *retry; /* timer: settle waits and storage errors */
	sd_event_source *clean; /* timer: the rejected/ bound */
	uint64_t retry_usec;	/* storage-error backoff, 0 = none pending */
	struct watch *watches;
	size_t n_watches;
	struct pending *pending;
	size_t n_pending;
	bool rescan;  /* scan every directory (overflow, retry, backlog) */
	bool rewatch; /* a profile directory went away: make and watch it again */
	char **reported;
	size_t n_reported;
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

static char *
reported_key(const char *queue, const char *name)
{
	return xasprintf("%s/%s", queue ? queue : "", name);
}

static bool
is_reported(const struct queue *q, const char *queue, const char *name)
{
	char *key = reported_key(queue, name);
	bool found = false;

	for (size_t i = 0; i < q->n_reported && !found; i++)
		found = strcmp(q->reported[i], key) == 0;
	free(key);
	return found;
}

/* An entry that cannot be moved or opened is said once, not at every scan. true if it was
 * said before. */
static bool
was_reported(struct queue *q, const char *queue, const char *name)
{
	if (is_reported(q, queue, name))
		return true;
	if (q->n_reported == MAX_REPORTED) {
		free(q->reported[0]);
		memmove(q->reported, q->reported + 1, (MAX_REPORTED - 1) * sizeof(char *));
		q->n_reported--;
	}
	q->reported = xreallocarray(q->reported, q->n_reported + 1, sizeof(char *));
	q->reported[q->n_reported++] = reported_key(queue, name);
	return false;
}

static int
rejected_fd(struct queue *q)
{
	int fd;

	(void)mkdir(q->rejected_dir, 0750);
	fd = open(q->rejected_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* <target>.reason, created exclusively: an existing one (ours, or a dropped file named
 * X.reason that was refused before) is never replaced. */
static int
write_reason(int rej, const char *target, const char *name, const char *queue, const char *reason)
{
	char esc[PATH_MAX], when[32];
	char *path = xasprintf("%s.reason", target), *text;
	size_t len;
	int fd, r = 0;

	fd = openat(rej, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640);
	free(path);
	if (fd < 0)
		return -errno;
	escape_name(name, esc, sizeof(esc));
	format_time_iso(now_realtime_sec(), when, sizeof(when));
	text = xasprintf("file: %s\nqueue: %s\nrejected: %s\nreason: %s\n", esc,
			 queue ? queue : "-", when, reason);
	len = strlen(text);
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
		r = errno ? -errno : -EIO;
	free(text);
	close_fd(fd);
	return r;
}

/* Move dirfd/name to rejected/ under a name that is free together with its .reason; returns
 * the name used (malloc'd) or NULL. */
static char *
move_aside(struct queue *q, int dirfd, const char *name, const char *queue, const char *reason,
	   int *ret_err)
{
	char base[REJECTED_NAME_MAX + 1];
	int rej = rejected_fd(q), r = 0;

	*ret_err = 0;
	if (rej < 0) {
		*ret_err = rej;
		return NULL;
	}
	/* a name near NAME_MAX leaves no room for ".reason": keep its start */
	(void)str_copy(base, sizeof(base), name);
	for (unsigned n = 0; n < 10000; n++) {
		char *target = n ? xasprintf("%s.%u", base, n) : xstrdup(base);

		r = write_reason(rej, target, name, queue, reason);
		if (r == -EEXIST) {
			free(target);
			continue;
		}
		if (r >= 0 && renameat2(dirfd, name, rej, target, RENAME_NOREPLACE) < 0)
			r = -errno;
		if (r >= 0) {
			(void)fsync(rej);
			(void)fsync(dirfd);
			close_fd(rej);
			return target;
		}
		{
			char *rp = xasprintf("%s.reason", target);

			(void)unlinkat(rej, rp, 0);
			free(rp);
		}
		free(target);
		if (r != -EEXIST)
			break;
	}
	close_fd(rej);
	*ret_err = r < 0 ? r : -EEXIST;
	return NULL;
}

static void clean_rejected(struct queue *q);

/* Move a refused entry aside; it keeps its name (with .N if taken) next to <name>.reason. */
static void
reject(struct queue *q, int dirfd, const char *name, const char *queue, const char *reason)
{
	char esc[PATH_MAX], resc[PATH_MAX];
	struct log_fields f = {.message_id = LOG_MID_FIRMWARE_REJECTED, .profile = queue};
	char *target;
	int r;

	if (is_reported(q, queue, name))
		return;
	escape_name(name, esc, sizeof(esc));
	target = move_aside(q, dirfd, name, queue, reason, &r);
	if (!target) {
		/* it stays where it is: refused files are never deleted; said once */
		(void)was_reported(q, queue, name);
		log_full(LOG_ERR, r, &f,
			 "firmware '%s' refused (%s), and moving it to %s failed; it stays in the "
			 "queue until its owner removes it",
			 esc, reason, q->rejected_dir);
		if (r == -EACCES || r == -EPERM) {
			/* another user's directory: the kernel lets only its owner move it to
			 * another parent; say why where refused files are looked for */
			char *why = xasprintf("%s; it belongs to another user, so it stays in "
					      "the queue: remove it",
					      reason);
			int rej = rejected_fd(q);

			if (rej >= 0)
				(void)write_reason(rej, name, name, queue, why);
			close_fd(rej);
			free(why);
		}
		return;
	}
	escape_name(target, resc, sizeof(resc));
	log_full(LOG_ERR, 0, &f, "firmware '%s' refused: %s; moved to %s/%s", esc, reason,
		 q->rejected_dir, resc);
	if (q->cb.rejected)
		q->cb.rejected(q->userdata, esc, reason);
	free(target);
	clean_rejected(q);
}

/* ---- the rejected/ bound ------------------------------------------------------------ */

static void
remove_tree_at(int dirfd, const char *name, unsigned depth)
{
	int fd;
	DIR *d;
	struct dirent *de;

	if (unlinkat(dirfd, name, 0) == 0 || (errno != EISDIR && errno != EPERM) || depth > 16)
		return;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close_fd(fd);
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			remove_tree_at(fd, de->d_name, depth + 1);
	closedir(d);
	(void)unlinkat(dirfd, name, AT_REMOVEDIR);
}

struct rejected_entry {
	char *name;
	uint64_t size;
	int64_t when;
};

static int
cmp_newest_first(const void *a, const void *b)
{
	const struct rejected_entry *x = a, *y = b;

	return (x->when < y->when) - (x->when > y->when);
}

/* Oldest entries go first: those older than max_days, then while the total is over max_mib.
 * An entry and its .reason go together. */
static void
clean_rejected(struct queue *q)
{
	uint64_t limit = (uint64_t)q->cfg->rejected_max_mib << 20, total = 0;
	int64_t oldest = now_realtime_sec() - (int64_t)q->cfg->rejected_max_days * 86400;
	struct rejected_entry *e = NULL;
	size_t n = 0, removed = 0;
	struct dirent *de;
	int rej = rejected_fd(q);
	DIR *d;

	if (rej < 0)
		return;
	d = fdopendir(rej);
	if (!d) {
		close_fd(rej);
		return;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    (len > 7 && strcmp(de->d_name + len - 7, ".reason") == 0))
			continue;
		if (fstatat(rej, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		e = xreallocarray(e, n + 1, sizeof(*e));
		e[n].name = xstrdup(de->d_name);
		e[n].size = (uint64_t)st.st_blocks * 512;
		e[n++].when = st.st_ctim.tv_sec; /* when it was moved here */
	}
	if (n > 1)
		qsort(e, n, sizeof(*e), cmp_newest_first);
	for (size_t i = 0; i < n; i++) {
		total += e[i].size;
		if (e[i].when < oldest || total > limit) {
			char *rp = xasprintf("%s.reason", e[i].name);

			remove_tree_at(dirfd(d), e[i].name, 0);
			(void)unlinkat(dirfd(d), rp, 0);
			free(rp);
			removed++;
		}
		free(e[i].name);
	}
	if (removed)
		log_notice("removed %zu refused file%s from %s (older than %u days or beyond %u "
			   "MiB; see rejected in skrflash.conf(5))",
			   removed, removed == 1 ? "" : "s", q->rejected_dir,
			   q->cfg->rejected_max_days, q->cfg->rejected_max_mib);
	free(e);
	closedir(d);
}

/* ---- who may drop ------------------------------------------------------------------- */

static bool
uid_in_group(uid_t uid, gid_t gid)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	gid_t groups[256];
	int n = (int)ELEMENTSOF(groups);

	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) != 0 || !res)
		return false;
	if (pw.pw_gid == gid)
		return true;
	if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
		return false;
	for (int i = 0; i < n; i++)
		if (groups[i] == gid)
			return true;
	return false;
}

/* The owner must be root, the daemon, or a member of the drop group. A file of the drop
 * group qualifies too: only a member can give a file that group (chgrp, or creating it in
 * the setgid queue). */
static bool
owner_allowed(const struct queue *q, const struct stat *st)
{
	if (st->st_uid == 0 || st->st_uid == geteuid())
		return true;
	if (!q->cfg->has_drop_gid)
		return false;
	return st->st_gid == q->cfg->drop_gid || uid_in_group(st->st_uid, q->cfg->drop_gid);
}

/* A read lease can only be taken while nobody has the file open for writing: the way to
 * tell a finished file from one whose producer ignored the rename contract. Only the owner
 * (or CAP_LEASE) may take one: 1 taken, 0 not possible, -EBUSY being written. */
static int
check_not_being_written(int fd)
{
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
		return errno == EAGAIN ? -EBUSY : 0;
	return 1;
}

static int64_t
usec_of(const struct timespec *ts)
{
	return (int64_t)ts->tv_sec * 1000000 + ts->tv_nsec / 1000;
}

/* For a file the lease cannot vouch for (another user's): it is taken only when it has not
 * changed (data: mtime, rename or chmod: ctime) for SETTLE_USEC. A writer that keeps
 * writing keeps it waiting; its close (IN_CLOSE_WRITE) or the retry timer tries again. */
static uint64_t
settle_left(const struct stat *st)
{
	struct timespec now;
	int64_t last = usec_of(&st->st_mtim), c = usec_of(&st->st_ctim), age;

	if (c > last)
		last = c;
	(void)clock_gettime(CLOCK_REALTIME, &now);
	age = usec_of(&now) - last;
	return age >= (int64_t)SETTLE_USEC ? 0 : SETTLE_USEC - (uint64_t)(age < 0 ? 0 : age);
}

static bool
same_content_stamp(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size && usec_of(&a->st_mtim) == usec_of(&b->st_mtim) &&
	       usec_of(&a->st_ctim) == usec_of(&b->st_ctim) && a->st_ino == b->st_ino;
}

static void arm_retry(struct queue *q, uint64_t usec);

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

/* What lstat says about an entry before anything opens it: the refusals that need no
 * content. 1 = a regular file to open, 0 = handled (refused or gone). */
static int
check_entry_type(struct queue *q, int dirfd, const char *name, const char *queue)
{
	struct stat st;

	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0; /* gone already */
	if (S_ISREG(st.st_mode))
		return 1;
	reject(q, dirfd, name, queue,
	       S_ISLNK(st.st_mode)    ? "it is a symbolic link; copy the file itself into the queue"
	       : S_ISDIR(st.st_mode)  ? "it is a directory, not a firmware file"
	       : S_ISFIFO(st.st_mode) ? "it is a FIFO, not a regular file"
	       : S_ISSOCK(st.st_mode) ? "it is a socket, not a regular file"
				      : "it is not a regular file");
	return 0;
}

static void
defer_entry(struct queue *q, const char *esc, uint64_t usec, const char *why)
{
	log_debug("queued file '%s' %s; looking again in %llu ms", esc, why,
		  (unsigned long long)(usec / 1000));
	q->waiting++;
	arm_retry(q, usec);
}

/* A storage error (disk full, I/O): the file stays queued and is tried again, backing off,
 * without waiting for another event. */
static void
storage_failed(struct queue *q, int r, const char *esc, const char *what)
{
	q->retry_usec = q->retry_usec ? q->retry_usec * 2 : RETRY_MIN_USEC;
	if (q->retry_usec > RETRY_MAX_USEC)
		q->retry_usec = RETRY_MAX_USEC;
	log_error_errno(r, "cannot %s firmware '%s'; it stays queued, trying again in %llu s", what,
			esc, (unsigned long long)(q->retry_usec / 1000000));
	arm_retry(q, q->retry_usec);
}

/* One queued file on its way through pick_up(): what is known of it so far. */
struct pickup {
	struct queue *q;
	int dirfd;
	const char *name;
	const char *queue;		/* NULL: an entry of the top directory */
	const struct config_profile *p; /* the profile that takes the queue, if any */
	char esc[PATH_MAX];		/* the name as it is printed */
	int fd;
	int lease; /* 1: a read lease on fd is held */
	struct stat st;
	uint8_t *data; /* st.st_size bytes, once read */
};

static void
pickup_reject(struct pickup *e, const char *reason)
{
	reject(e->q, e->dirfd, e->name, e->queue, reason);
}

/* The refusals that need neither content nor a descriptor: the name, the type, a queue no
 * profile takes. true to open it. */
static bool
pickup_name_ok(struct pickup *e)
{
	char *why;

	if (has_control_chars(e->name)) {
		pickup_reject(e, "the file name contains control characters; rename it to plain "
				 "text");
		return false;
	}
	if (check_entry_type(e->q, e->dirfd, e->name, e->queue) <= 0)
		return false;
	if (e->p)
		return true;
	why = xasprintf("no profile takes queue '%s'; use the name of a profile in %s, or add a "
			"profile",
			e->queue ? e->queue : e->name,
			e->q->cfg->path ? e->q->cfg->path
					: "the configuration (or, with none, a board name "
					  "`skrflashctl catalog` lists)");
	pickup_reject(e, why);
	free(why);
	return false;
}

/* Opened without following a link or blocking: true with e->fd. */
static bool
pickup_open(struct pickup *e)
{
	e->fd =
	    openat(e->dirfd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (e->fd >= 0)
		return true;
	if (errno == ELOOP)
		pickup_reject(e, "it is a symbolic link; copy the file itself into the queue");
	else if (errno != ENOENT && !was_reported(e->q, e->queue, e->name))
		log_warn_errno(-errno, "cannot open queued file '%s'", e->esc);
	return false;
}

/* What the opened file is: a regular file with one link, of an owner who may drop
 * firmware. true with e->st to go on. */
static bool
pickup_stat_ok(struct pickup *e)
{
	char *why;

	if (fstat(e->fd, &e->st) < 0) {
		log_warn_errno(-errno, "cannot stat queued file '%s'", e->esc);
		return false;
	}
	if (!S_ISREG(e->st.st_mode)) {
		/* swapped between the lstat and the open */
		e->fd = close_fd(e->fd);
		(void)check_entry_type(e->q, e->dirfd, e->name, e->queue);
		return false;
	}
	if (e->st.st_nlink != 1) {
		pickup_reject(e, "it has more than one hard link, so it could change after it was "
				 "checked; drop a copy instead");
		return false;
	}
	if (owner_allowed(e->q, &e->st))
		return true;
	why = xasprintf("it is owned by uid %u gid %u, who may not drop firmware; use a member of "
			"the drop group",
			(unsigned)e->st.st_uid, (unsigned)e->st.st_gid);
	pickup_reject(e, why);
	free(why);
	return false;
}

/* Finished, and of a size some board can take: a file still being written waits for its
 * close, another user's for SETTLE_USEC without a change. true to read it. */
static bool
pickup_ready(struct pickup *e)
{
	char *why;

	/* first: a file still being written may be empty or short for now */
	e->lease = check_not_being_written(e->fd);
	if (e->lease == -EBUSY) {
		/* the writer's close brings IN_CLOSE_WRITE and another try */
		log_debug("queued file '%s' is still being written", e->esc);
		e->q->waiting++;
		e->lease = 0;
		return false;
	}
	if (e->lease == 0 && settle_left(&e->st)) {
		defer_entry(e->q, e->esc, settle_left(&e->st), "changed moments ago");
		return false;
	}
	if (e->st.st_size == 0) {
		pickup_reject(e, "the file is empty");
		return false;
	}
	if ((uint64_t)e->st.st_size <= catalog_max_flash_size())
		return true;
	/* refused before a byte is read */
	why = xasprintf("%llu bytes is larger than any supported board's flash (%u bytes)",
			(unsigned long long)e->st.st_size, catalog_max_flash_size());
	pickup_reject(e, why);
	free(why);
	return false;
}

/* The whole file, unchanged while it was read: true with e->data. */
static bool
pickup_read(struct pickup *e)
{
	struct stat st2;
	int r;

	e->data = xmalloc((size_t)e->st.st_size);
	r = read_all(e->fd, e->data, (size_t)e->st.st_size);
	if (r >= 0 && (fstat(e->fd, &st2) < 0 || !same_content_stamp(&e->st, &st2)))
		r = -EAGAIN;
	if (r == -EAGAIN || r == -ENODATA) {
		defer_entry(e->q, e->esc, SETTLE_USEC, "changed while it was read");
		return false;
	}
	if (r < 0) {
		log_warn_errno(r, "cannot read queued file '%s'; will retry when it changes",
			       e->esc);
		return false;
	}
	return true;
}

/* Stored content-addressed and recorded as the profile's desired firmware: true once both
 * are on disk (a storage error keeps it queued and retries). */
static bool
pickup_store(struct pickup *e, const char *sha, const char *format)
{
	struct queue *q = e->q;
	struct store_desired d;
	int r = store_firmware_put(q->store, sha, e->data, (size_t)e->st.st_size, format, e->esc);

	if (r < 0) {
		storage_failed(q, r, e->esc, "store");
		return false;
	}
	memset(&d, 0, sizeof(d));
	(void)str_copy(d.profile, sizeof(d.profile), e->p->name);
	(void)str_copy(d.sha, sizeof(d.sha), sha);
	(void)str_copy(d.source, sizeof(d.source), e->esc);
	d.size = (uint64_t)e->st.st_size;
	r = store_desired_set(q->store, &d);
	if (r < 0) {
		storage_failed(q, r, e->esc, "record");
		return false;
	}
	q->retry_usec = 0;
	return true;
}

/* Validated for the profile, stored and recorded: only then does it leave the queue. */
static void
pickup_accept(struct pickup *e)
{
	struct queue *q = e->q;
	char sha[SHA256_HEX_LEN + 1], *reason = NULL;
	const char *format = NULL;
	struct log_fields f;

	sha256_hex(e->data, (size_t)e->st.st_size, sha);
	if (q->cb.validate && q->cb.validate(q->userdata, e->p, e->name, e->data,
					     (size_t)e->st.st_size, &format, &reason) < 0) {
		pickup_reject(e, reason ? reason : "refused by validation");
		free(reason);
		return;
	}
	free(reason);
	if (!pickup_store(e, sha, format))
		return;
	/* stored and recorded: only now may it leave the queue */
	if (unlinkat(e->dirfd, e->name, 0) < 0 && errno != ENOENT)
		log_warn_errno(-errno, "cannot remove picked-up file '%s' from the queue", e->esc);
	(void)fsync(e->dirfd);
	memset(&f, 0, sizeof(f));
	f.message_id = LOG_MID_FIRMWARE_QUEUED;
	f.profile = e->p->name;
	f.sha256 = sha;
	log_full(LOG_NOTICE, 0, &f, "firmware queued: '%s' (%llu bytes%s%s) for profile '%s'",
		 e->esc, (unsigned long long)e->st.st_size, format ? ", " : "",
		 format ? format : "", e->p->name);
	if (q->cb.accepted)
		q->cb.accepted(q->userdata, e->p, sha, e->esc);
}

/* A queued file, from its name to the store: refused (moved to rejected/ with the reason),
 * left to wait (still being written, a storage error), or stored, recorded and removed. */
static void
pick_up(struct queue *q, int dirfd, const char *name, const char *queue)
{
	struct pickup e = {.q = q, .dirfd = dirfd, .name = name, .queue = queue, .fd = -1};

	if (is_temp_name(name))
		return;
	e.p = queue ? config_find_queue(q->cfg, queue) : NULL;
	escape_name(name, e.esc, sizeof(e.esc));
	if (!pickup_name_ok(&e) || !pickup_open(&e))
		return;
	if (pickup_stat_ok(&e) && pickup_ready(&e) && pickup_read(&e))
		pickup_accept(&e);
	if (e.lease > 0)
		(void)fcntl(e.fd, F_SETLEASE, F_UNLCK);
	free(e.data);
	close_fd(e.fd);
}

/* ---- directories and watches ---------------------------------------------------------- */

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
		if (queue ? q->watches[i].queue && strcmp(q->watches[i].queue, queue) == 0
			  : !q->watches[i].queue)
			return &q->watches[i];
	return NULL;
}

static void
drop_watch(struct queue *q, struct watch *w, bool rm)
{
	size_t i = (size_t)(w - q->watches);

	if (rm)
		(void)inotify_rm_watch(q->inotify_fd, w->wd);
	close_fd(w->dirfd);
	free(w->queue);
	memmove(w, w + 1, (q->n_watches - i - 1) * sizeof(*w));
	q->n_watches--;
}

/* Make a directory we opened ours in the way the queue needs: owned by the daemon (or root),
 * group = drop group, QUEUE_DIR_MODE whatever the umask was. -EPERM: someone else's. */
static int
secure_dir(const struct queue *q, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return -EPERM;
	if (st.st_uid != geteuid())
		return 0; /* root's: as root made it */
	if (q->cfg->has_drop_gid && st.st_gid != q->cfg->drop_gid &&
	    fchown(fd, (uid_t)-1, q->cfg->drop_gid) < 0)
		log_warn_errno(-errno, "cannot give a queue directory to group %u",
			       (unsigned)q->cfg->drop_gid);
	if ((st.st_mode & 07777) != QUEUE_DIR_MODE && fchmod(fd, QUEUE_DIR_MODE) < 0)
		return -errno;
	return 0;
}

static struct watch *
add_watch(struct queue *q, int fd, const char *queue)
{
	char path[64];
	struct watch *w;
	int wd;

	/* the inode we opened, not whatever the path names by now */
	(void)snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	wd = inotify_add_watch(q->inotify_fd, path, queue ? WATCH_MASK : WATCH_MASK | IN_DELETE);
	if (wd < 0) {
		log_warn_errno(-errno, "cannot watch queue directory %s/%s", q->cfg->queue_dir,
			       queue ? queue : "");
		close_fd(fd);
		return NULL;
	}
	w = find_watch_wd(q, wd);
	if (w) {
		close_fd(fd);
		return w;
	}
	q->watches = xreallocarray(q->watches, q->n_watches + 1, sizeof(*q->watches));
	w = &q->watches[q->n_watches++];
	w->wd = wd;
	w->dirfd = fd;
	w->queue = queue ? xstrdup(queue) : NULL;
	return w;
}

static void
add_pending(struct queue *q, const char *queue, const char *name, bool is_dir)
{
	for (size_t i = 0; i < q->n_pending; i++) {
		struct pending *p = &q->pending[i];

		if (strcmp(p->name, name) == 0 &&
		    (queue ? p->queue && strcmp(p->queue, queue) == 0 : !p->queue)) {
			p->is_dir = p->is_dir || is_dir;
			return;
		}
	}
	if (q->n_pending >= MAX_PENDING) {
		q->rescan = true; /* found again once the backlog is gone */
		return;
	}
	q->pending = xreallocarray(q->pending, q->n_pending + 1, sizeof(*q->pending));
	q->pending[q->n_pending].queue = queue ? xstrdup(queue) : NULL;
	q->pending[q->n_pending].name = xstrdup(name);
	q->pending[q->n_pending++].is_dir = is_dir;
	(void)sd_event_source_set_enabled(q->work, SD_EVENT_ONESHOT);
}

static void
scan_dir(struct queue *q, const struct watch *w)
{
	int fd = openat(w->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd))) {
		log_warn_errno(-errno, "cannot scan queue directory %s/%s", q->cfg->queue_dir,
			       w->queue ? w->queue : "");
		close_fd(fd);
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			add_pending(q, w->queue, de->d_name, de->d_type == DT_DIR);
	closedir(d);
}

/* queue/<name> for a profile: opened without following links, ours, watched, scanned. An
 * entry of that name that is not our directory (a link, a file, another user's directory)
 * is moved to rejected/ and replaced. */
static void
ensure_profile_dir(struct queue *q, const char *name)
{
	struct watch *w = find_watch_queue(q, name);

	if (w) {
		struct stat a, b;

		/* still the inode we watch under that name? */
		if (fstatat(q->watches[0].dirfd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
		    fstat(w->dirfd, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
			return;
		log_warn("queue directory %s/%s was replaced or removed; watching a new one",
			 q->cfg->queue_dir, name);
		drop_watch(q, w, true);
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		const char *why = NULL;
		int fd, r;

		if (mkdirat(q->watches[0].dirfd, name, 0700) < 0 && errno != EEXIST) {
			log_warn_errno(-errno, "cannot create queue directory %s/%s",
				       q->cfg->queue_dir, name);
			return;
		}
		fd = openat(q->watches[0].dirfd, name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = fd < 0 ? -errno : secure_dir(q, fd);
		if (r >= 0) {
			w = add_watch(q, fd, name);
			if (w)
				scan_dir(q, w);
			return;
		}
		close_fd(fd);
		why = r == -ELOOP     ? "it was a symbolic link"
		      : r == -EPERM   ? "it was another user's directory"
		      : r == -ENOTDIR ? "it was not a directory"
				      : NULL;
		if (!why) {
			log_warn_errno(r, "cannot open queue directory %s/%s", q->cfg->queue_dir,
				       name);
			return;
		}
		{
			char *reason = xasprintf("%s where the queue of profile '%s' belongs; "
						 "skrflashd made a new queue directory",
						 why, name);

			reject(q, q->watches[0].dirfd, name, NULL, reason);
			free(reason);
		}
	}
}

static void
entry(struct queue *q, const char *queue, const char *name, bool is_dir)
{
	struct watch *w = find_watch_queue(q, queue);
	char *tq;

	if (!w)
		return; /* its directory went away; the new one is scanned */
	if (queue) {
		pick_up(q, w->dirfd, name, queue);
		return;
	}
	if (is_temp_name(name))
		return;
	tq = is_dir ? NULL : queue_of_top_file(name);
	if (!tq && config_find_queue(q->cfg, name)) {
		/* queue/<profile> itself (or a link or file in its place) */
		ensure_profile_dir(q, name);
		return;
	}
	if (is_dir) {
		/* the queue of a profile that is gone (the catalog's, when a first config file
		 * arrives): an empty one simply goes, one with files in it goes aside */
		if (unlinkat(w->dirfd, name, AT_REMOVEDIR) == 0) {
			log_debug("removed the empty queue directory '%s': no profile uses it",
				  name);
			return;
		}
		pick_up(q, w->dirfd, name, name); /* a directory without a profile */
		return;
	}
	if (!tq) {
		struct stat st;

		if (fstatat(w->dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			return;
		reject(q, w->dirfd, name, NULL,
		       "files directly in the queue must be named <profile>.bin (or .hex, .elf, "
		       ".uf2); or put the file into queue/<profile>/");
		return;
	}
	pick_up(q, w->dirfd, name, tq);
	free(tq);
}

static void
ensure_all(struct queue *q)
{
	if (!find_watch_queue(q, NULL))
		return;
	for (size_t i = 0; i < q->cfg->n_profiles; i++)
		ensure_profile_dir(q, q->cfg->profiles[i].queue);
}

static void
arm_retry(struct queue *q, uint64_t usec)
{
	uint64_t now = 0, due = 0;
	int on = SD_EVENT_OFF;

	(void)sd_event_now(q->loop, CLOCK_MONOTONIC, &now);
	(void)sd_event_source_get_enabled(q->retry, &on);
	/* keep an earlier deadline */
	if (on != SD_EVENT_OFF && sd_event_source_get_time(q->retry, &due) >= 0 &&
	    due <= now + usec)
		return;
	(void)sd_event_source_set_time(q->retry, now + usec);
	(void)sd_event_source_set_enabled(q->retry, SD_EVENT_ONESHOT);
}

static int
on_retry(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct queue *q = userdata;

	(void)s;
	(void)usec;
	q->rescan = true;
	(void)sd_event_source_set_enabled(q->work, SD_EVENT_ONESHOT);
	return 0;
}

static int
on_clean(sd_event_source *s, uint64_t usec, void *userdata)
{
	struct queue *q = userdata;

	clean_rejected(q);
	(void)sd_event_source_set_time(s, usec + CLEAN_USEC);
	return 0;
}

/* The queue's share of the loop: directory upkeep, then a few entries; the rest on the next
 * turn, after whatever else is waiting (the source has idle priority). */
static int
on_work(sd_event_source *s, void *userdata)
{
	struct queue *q = userdata;

	(void)s;
	if (q->rewatch) {
		q->rewatch = false;
		ensure_all(q);
	}
	if (q->rescan && q->n_pending == 0) {
		q->rescan = false;
		q->waiting = 0;
		for (size_t i = 0; i < q->n_watches; i++)
			scan_dir(q, &q->watches[i]);
	}
	for (unsigned i = 0; i < PICKUPS_PER_WAKEUP && q->n_pending; i++) {
		struct pending p = q->pending[0];

		memmove(q->pending, q->pending + 1, (q->n_pending - 1) * sizeof(*q->pending));
		q->n_pending--;
		if (p.name)
			entry(q, p.queue, p.name, p.is_dir);
		free(p.queue);
		free(p.name);
	}
	if (q->n_pending || q->rescan || q->rewatch)
		(void)sd_event_source_set_enabled(q->work, SD_EVENT_ONESHOT);
	return 0;
}

static void
on_event(struct queue *q, const struct inotify_event *ev)
{
	struct watch *w = find_watch_wd(q, ev->wd);

	if (ev->mask & IN_Q_OVERFLOW) {
		/* events were lost: a full rescan finds whatever they announced */
		q->rescan = true;
		return;
	}
	if (!w)
		return;
	if (ev->mask & (IN_IGNORED | IN_MOVE_SELF | IN_DELETE_SELF | IN_UNMOUNT)) {
		/* the directory we watched is gone from its place: never follow it */
		if (!w->queue) {
			log_error("the queue directory %s was moved or deleted; restart skrflashd "
				  "to make a new one",
				  q->cfg->queue_dir);
			return;
		}
		log_warn("queue directory %s/%s was moved or deleted; making a new one",
			 q->cfg->queue_dir, w->queue);
		drop_watch(q, w, !(ev->mask & IN_IGNORED));
		q->rewatch = true;
		return;
	}
	if (!ev->len)
		return;
	if (ev->mask & IN_DELETE) {
		/* a directory removed from the top one: a profile's (whose own IN_DELETE_SELF
		 * waits for the descriptor we hold) is made again */
		if (!w->queue && (ev->mask & IN_ISDIR))
			q->rewatch = true;
		return;
	}
	if ((ev->mask & IN_CREATE) && !(ev->mask & IN_ISDIR))
		return; /* a file being created: wait for its close or rename */
	add_pending(q, w->queue, ev->name, (ev->mask & IN_ISDIR) != 0);
}

static int
on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
	struct queue *q = userdata;
	union {
		struct inotify_event ev;
		char buf[16 * (sizeof(struct inotify_event) + NAME_MAX + 1)];
	} u;
	ssize_t len;

	(void)s;
	(void)revents;
	/* one read per wake-up: events only note names, the work source does the rest */
	len = read(fd, u.buf, sizeof(u.buf));
	for (char *p = u.buf; len > 0 && p < u.buf + len;) {
		const struct inotify_event *ev = (const struct inotify_event *)(void *)p;

		p += sizeof(*ev) + ev->len;
		on_event(q, ev);
	}
	if (q->rescan || q->rewatch)
		(void)sd_event_source_set_enabled(q->work, SD_EVENT_ONESHOT);
	return 0;
}

static int
open_top(struct queue *q)
{
	int fd, r;

	r = mkdir_p(q->cfg->queue_dir, 0770);
	if (r < 0)
		return log_error_errno(r, "cannot create queue directory %s", q->cfg->queue_dir);
	fd = open(q->cfg->queue_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return log_error_errno(-errno,
				       "cannot open queue directory %s (it must be a "
				       "directory, not a symbolic link)",
				       q->cfg->queue_dir);
	r = secure_dir(q, fd);
	if (r < 0) {
		close_fd(fd);
		return log_error_errno(r, "queue directory %s must belong to skrflashd's user",
				       q->cfg->queue_dir);
	}
	return add_watch(q, fd, NULL) ? 0 : -EIO;
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
	q->inotify_fd = -1;
	if (cb)
		q->cb = *cb;
	q->userdata = userdata;
	q->rejected_dir = queue_rejected_dir(cfg);
	q->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (q->inotify_fd < 0) {
		r = -errno;
		goto fail;
	}
	r = sd_event_add_io(loop, &q->source, q->inotify_fd, EPOLLIN, on_inotify, q);
	if (r >= 0)
		r = sd_event_add_defer(loop, &q->work, on_work, q);
	if (r >= 0)
		r = sd_event_source_set_priority(q->work, SD_EVENT_PRIORITY_IDLE);
	if (r >= 0)
		r = sd_event_add_time_relative(loop, &q->retry, CLOCK_MONOTONIC, RETRY_MIN_USEC, 0,
					       on_retry, q);
	if (r >= 0)
		r = sd_event_source_set_enabled(q->retry, SD_EVENT_OFF);
	if (r >= 0)
		r = sd_event_add_time_relative(loop, &q->clean, CLOCK_MONOTONIC, CLEAN_USEC, 0,
					       on_clean, q);
	if (r >= 0)
		r = sd_event_source_set_enabled(q->clean, SD_EVENT_ON);
	if (r < 0)
		goto fail;
	(void)sd_event_source_set_description(q->source, "queue-inotify");
	(void)sd_event_source_set_description(q->work, "queue-work");
	r = open_top(q);
	if (r < 0)
		goto fail;
	/* armed everywhere first: whatever was dropped before is found by the scans */
	ensure_all(q);
	scan_dir(q, &q->watches[0]);
	clean_rejected(q);
	*ret = q;
	return 0;
fail:
	queue_free(q);
	return r;
}

/* Forget the watches of queues the new config does not have; the rescan that follows finds
 * their directories in the top one: they go (empty) or aside (with files) like any other
 * stray directory. */
static void
drop_stale_watches(struct queue *q)
{
	for (size_t i = q->n_watches; i-- > 0;) {
		struct watch *w = &q->watches[i];

		if (w->queue && !config_find_queue(q->cfg, w->queue))
			drop_watch(q, w, true);
	}
}

void
queue_set_config(struct queue *q, const struct config *cfg)
{
	q->cfg = cfg;
	free(q->rejected_dir);
	q->rejected_dir = queue_rejected_dir(cfg);
	drop_stale_watches(q);
	ensure_all(q);
	q->rescan = true;
	(void)sd_event_source_set_enabled(q->work, SD_EVENT_ONESHOT);
}

struct queue *
queue_free(struct queue *q)
{
	if (!q)
		return NULL;
	sd_event_source_disable_unref(q->source);
	sd_event_source_disable_unref(q->work);
	sd_event_source_disable_unref(q->retry);
	sd_event_source_disable_unref(q->clean);
	close_fd(q->inotify_fd);
	while (q->n_watches)
		drop_watch(q, &q->watches[q->n_watches - 1], false);
	free(q->watches);
	for (size_t i = 0; i < q->n_pending; i++) {
		free(q->pending[i].queue);
		free(q->pending[i].name);
	}
	free(q->pending);
	for (size_t i = 0; i < q->n_reported; i++)
		free(q->reported[i]);
	free(q->reported);
	free(q->rejected_dir);
	sd_event_unref(q->loop);
	free(q);
	return NULL;
}
