/* SPDX-License-Identifier: MIT */
/*
 * Endpoints and the ssh transport of the connection core; see conn.h.
 *
 * An ssh:// endpoint is a unix socket on another host.  We run the
 * operator's own OpenSSH client (their ~/.ssh/config, agent and
 * known_hosts), never with a prompt (BatchMode=yes), and share one
 * connection per host between all its sockets: a master started once
 * (ControlMaster, ControlPersist so that a series of `kawarimi qmp` calls
 * reuses it and it goes away on its own when idle), then per socket a mux
 * session running `socat - UNIX-CONNECT:PATH` on that host, whose stdio is
 * our socketpair.  Why socat and not stream-local forwarding:
 * docs/cluster-file.md, "Endpoints on other hosts".
 *
 * Everything that can block (taking the per-host lock, authenticating the
 * master) happens in a forked helper that then becomes the session's ssh,
 * so connecting returns at once and an event loop sees failures as EOF on
 * the fd, with ssh's own words kept from its stderr for the message.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "kqmp_internal.h"

/* How long an idle master stays for the next command (ssh's ControlPersist). */
#define KJ_SSH_PERSIST_S	"60"
/* The last bytes of ssh's stderr kept for the failure message. */
#define KJ_SSH_TAIL		1024

struct kqmp_conn_ssh {
	pid_t pid;		/* the helper, then the session's ssh */
	bool reaped;
	int status;		/* once reaped */
	int err_fd;		/* its stderr, non-blocking */
	char tail[KJ_SSH_TAIL];
	size_t tlen;
	struct kqmp_conn_endpoint ep;
};

/* ---- endpoints --------------------------------------------------------- */

#define EP_FORM "write ssh://[USER@]HOST[:PORT]/PATH, e.g. ssh://root@siteb/run/kawarimi/n1.qmp"

static int ep_err(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int ep_err(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, len, fmt, ap);
	va_end(ap);
	return -1;
}

/* Host names and config aliases; never a leading '-' (an ssh option). */
static bool host_ok(const char *s, size_t n)
{
	if (!n || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(".-_", s[i]))
			return false;
	return true;
}

/* The remote path goes through a shell word and a socat address, so only
 * characters that mean nothing to either. */
static bool path_ok(const char *s)
{
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._/+-@=%~", *s))
			return false;
	return true;
}

static int parse_authority(const char *uri, const char *a, size_t n,
			   struct kqmp_conn_endpoint *ep, char *err, size_t len)
{
	const char *at = memchr(a, '@', n), *h, *colon = NULL;
	size_t hn;

	if (at) {
		size_t un = (size_t)(at - a);

		if (!un || un >= sizeof(ep->user) || a[0] == '-' ||
		    strspn(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") < un)
			return ep_err(err, len, "'%s': '%.*s' is not a user name; %s",
				      uri, (int)un, a, EP_FORM);
		memcpy(ep->user, a, un);
		ep->user[un] = '\0';
		n -= un + 1;
		a = at + 1;
	}
	h = a;
	hn = n;
	if (n && a[0] == '[') {
		const char *rb = memchr(a, ']', n);

		if (!rb || rb == a + 1 || strspn(a + 1, "0123456789abcdefABCDEF:.") <
		    (size_t)(rb - a - 1))
			return ep_err(err, len, "'%s': '%.*s' is not an IPv6 address in brackets; %s",
				      uri, (int)n, a, EP_FORM);
		h = a + 1;
		hn = (size_t)(rb - h);
		if (rb + 1 < a + n) {
			if (rb[1] != ':')
				return ep_err(err, len, "'%s': junk after ']'; %s", uri, EP_FORM);
			colon = rb + 1;
		}
	} else {
		colon = memchr(a, ':', n);
		if (colon)
			hn = (size_t)(colon - a);
		if (!host_ok(h, hn) || hn >= sizeof(ep->host))
			return ep_err(err, len, "'%s': '%.*s' is not a host name; %s",
				      uri, (int)hn, h, EP_FORM);
	}
	memcpy(ep->host, h, hn);
	ep->host[hn] = '\0';
	if (colon) {
		size_t pn = (size_t)(a + n - colon - 1);
		char digits[8] = "";
		long p = 0;

		if (pn && pn < sizeof(digits)) {
			memcpy(digits, colon + 1, pn);
			digits[pn] = '\0';
			p = strspn(digits, "0123456789") == pn ? strtol(digits, NULL, 10) : 0;
		}
		if (p < 1 || p > 65535)
			return ep_err(err, len, "'%s': '%.*s' is not a port (1-65535); %s",
				      uri, (int)pn, colon + 1, EP_FORM);
		ep->port = (int)p;
	}
	return 0;
}

int kqmp_conn_parse_endpoint(const char *uri, struct kqmp_conn_endpoint *ep,
			  char *err, size_t len)
{
	const char *a, *slash;

	memset(ep, 0, sizeof(*ep));
	if (!uri || !*uri)
		return ep_err(err, len, "no socket given; write a path or %s", EP_FORM);
	if (strncmp(uri, "ssh://", 6)) {
		const char *p = strncmp(uri, "unix:", 5) ? uri : uri + 5;

		if (strstr(uri, "://"))
			return ep_err(err, len, "'%s' is neither a unix socket path nor an "
				      "ssh:// endpoint; write e.g. /run/kawarimi/n1.qmp or "
				      "ssh://root@siteb/run/kawarimi/n1.qmp", uri);
		if (strlen(p) >= sizeof(ep->path))
			return ep_err(err, len, "socket path '%s' is %zu bytes; unix sockets allow at most %zu",
				      p, strlen(p), sizeof(ep->path) - 1);
		strcpy(ep->path, p);
		return 0;
	}
	ep->ssh = true;
	a = uri + 6;
	slash = strchr(a, '/');
	if (!slash)
		return ep_err(err, len, "'%s' has no socket path after the host; %s", uri, EP_FORM);
	if (parse_authority(uri, a, (size_t)(slash - a), ep, err, len) < 0)
		return -1;
	if (strlen(slash) >= sizeof(ep->path) || slash[1] == '\0')
		return ep_err(err, len, "'%s': the remote socket path must be 1 to %zu bytes; %s",
			      uri, sizeof(ep->path) - 1, EP_FORM);
	if (!path_ok(slash))
		return ep_err(err, len, "'%s': the remote socket path '%s' may only hold letters, "
			      "digits and ._/+-@=%%~ (it passes through the remote shell)",
			      uri, slash);
	strcpy(ep->path, slash);
	return 0;
}

/* ---- where the masters live -------------------------------------------- */

/* A private directory: $XDG_RUNTIME_DIR/kawarimi-ssh or /tmp/kawarimi-ssh-UID,
 * ours and closed to everyone else (a control socket is a login). */
static int runtime_dir(char *dir, size_t len, struct kqmp_error *err)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	struct stat st;

	if (xdg && *xdg)
		snprintf(dir, len, "%s/kawarimi-ssh", xdg);
	else
		snprintf(dir, len, "/tmp/kawarimi-ssh-%u", (unsigned)getuid());
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		kqmp_seterr(err, KQMP_E_CONNECT, "cannot create '%s' for ssh's control sockets: %s",
			  dir, strerror(errno));
		return -1;
	}
	if (lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
	    (st.st_mode & 077)) {
		kqmp_seterr(err, KQMP_E_CONNECT, "'%s' is not a directory of ours closed to others "
			  "(mode 0700); remove it, kawarimi makes it again", dir);
		return -1;
	}
	return 0;
}

/* Names one master per user@host:port (FNV-1a; ssh adds up to 17 bytes to
 * a control path while binding it, so the name stays short). */
static uint64_t ep_hash(const struct kqmp_conn_endpoint *ep)
{
	char key[sizeof(ep->user) + sizeof(ep->host) + 16];
	uint64_t h = 14695981039346656037ull;

	snprintf(key, sizeof(key), "%s@%s:%d", ep->user, ep->host, ep->port);
	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	return h;
}

/* ---- the helper (runs between fork and exec) ---------------------------- */

struct plan {
	char *master[24], *session[24];	/* argv */
	char ctl[108], lock[120], log[120];
	char port[8];
	char remote[160];
	char exec_failed[160];
};

static void say(const char *s)
{
	ssize_t r = write(2, s, strlen(s));

	(void)r;
}

/* A master listens on ctl: a connect succeeds.  Only a refused or
 * missing socket means none: a full backlog (many sessions starting at
 * once) is a busy master, asked again for up to a second.  Only syscalls,
 * since we are in a forked child. */
static bool master_alive(const char *ctl)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	memcpy(sa.sun_path, ctl, strlen(ctl) + 1);
	for (int i = 0; i < 100; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int r, e;

		if (fd < 0)
			return false;
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		e = errno;
		close(fd);
		if (r == 0)
			return true;
		if (e != EAGAIN && e != EINTR)
			return false;
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
	return true;	/* still busy: alive, and the session will wait its turn */
}

/* Copies the master's log (its stderr) to ours, for the parent to quote. */
static void copy_log(const char *log)
{
	char buf[2048];
	int fd = open(log, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	while (fd >= 0 && (n = read(fd, buf, sizeof(buf))) > 0)
		if (write(2, buf, (size_t)n) != n)
			break;
	if (fd >= 0)
		close(fd);
}

/* ssh -f returns once the master is authenticated and listening; the
 * master itself stays behind, detached, its stderr in the log file. */
static int start_master(const struct plan *p)
{
	int status, fd;
	pid_t pid;

	unlink(p->ctl);		/* a dead master's socket */
	fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		say("kawarimi: cannot create the ssh master's log file\n");
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execvp(p->master[0], p->master);
		_exit(127);
	}
	close(fd);
	if (pid < 0 || waitpid(pid, &status, 0) < 0) {
		say("kawarimi: cannot start the ssh master\n");
		return -1;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		say(p->exec_failed);
	else
		copy_log(p->log);
	return -1;
}

static void __attribute__((noreturn)) helper(const struct plan *p, int sock, int errw)
{
	int lk;

	if (dup2(sock, 0) < 0 || dup2(sock, 1) < 0 || dup2(errw, 2) < 0)
		_exit(126);
	/* One master per host even when many connections start at once, in
	 * this process or another: the first starts it, the rest wait. */
	lk = open(p->lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lk < 0 || flock(lk, LOCK_EX) < 0) {
		say("kawarimi: cannot lock the ssh master's lock file\n");
		_exit(255);
	}
	if (!master_alive(p->ctl) && start_master(p) < 0)
		_exit(255);
	close(lk);
	execvp(p->session[0], p->session);
	say(p->exec_failed);
	_exit(127);
}

/* ---- the parent's side ------------------------------------------------- */

static void plan_common(char **v, int *n, const struct plan *p,
			const struct kqmp_conn_endpoint *ep)
{
	if (ep->port) {
		v[(*n)++] = "-p";
		v[(*n)++] = (char *)p->port;
	}
	if (*ep->user) {
		v[(*n)++] = "-l";
		v[(*n)++] = (char *)ep->user;
	}
	v[(*n)++] = "-o";
	v[(*n)++] = "BatchMode=yes";
	v[(*n)++] = "-S";
	v[(*n)++] = (char *)p->ctl;
}

/* Both command lines, built before fork so the helper only calls exec. */
static int make_plan(struct plan *p, const struct kqmp_conn_ssh *t, const char *dir,
		     struct kqmp_error *err)
{
	const char *prog = getenv("KAWARIMI_SSH");
	const struct kqmp_conn_endpoint *ep = &t->ep;
	uint64_t h = ep_hash(ep);
	int m = 0, s = 0;

	if (!prog || !*prog)
		prog = "ssh";
	if ((size_t)snprintf(p->ctl, sizeof(p->ctl), "%s/%016" PRIx64, dir, h) + 17 >=
	    sizeof(p->ctl)) {
		kqmp_seterr(err, KQMP_E_CONNECT, "'%s' is too long a directory for ssh's control "
			  "sockets; set XDG_RUNTIME_DIR to a shorter one", dir);
		return -1;
	}
	snprintf(p->lock, sizeof(p->lock), "%s.lock", p->ctl);
	snprintf(p->log, sizeof(p->log), "%s.log", p->ctl);
	snprintf(p->port, sizeof(p->port), "%d", ep->port);
	snprintf(p->remote, sizeof(p->remote), "exec socat - UNIX-CONNECT:'%s'", ep->path);
	snprintf(p->exec_failed, sizeof(p->exec_failed),
		 "kawarimi: cannot run '%s': install openssh-client, or point KAWARIMI_SSH "
		 "at an ssh\n", prog);

	p->master[m++] = (char *)prog;
	plan_common(p->master, &m, p, ep);
	p->master[m++] = "-o";
	p->master[m++] = "ControlMaster=yes";
	p->master[m++] = "-o";
	p->master[m++] = "ControlPersist=" KJ_SSH_PERSIST_S;
	/* A host that vanishes without a FIN must still end the sessions. */
	p->master[m++] = "-o";
	p->master[m++] = "ServerAliveInterval=10";
	p->master[m++] = "-o";
	p->master[m++] = "ServerAliveCountMax=3";
	p->master[m++] = "-f";
	p->master[m++] = "-N";
	p->master[m++] = "--";
	p->master[m++] = (char *)ep->host;
	p->master[m] = NULL;

	p->session[s++] = (char *)prog;
	plan_common(p->session, &s, p, ep);
	p->session[s++] = "-o";
	p->session[s++] = "ControlMaster=no";
	p->session[s++] = "-T";
	p->session[s++] = "--";
	p->session[s++] = (char *)ep->host;
	p->session[s++] = p->remote;
	p->session[s] = NULL;
	return 0;
}

/* The helper dup2()s the child's ends onto 0, 1 and 2: one that already is
 * one of those (a caller that closed its stdin) would keep its
 * close-on-exec flag there and vanish at exec. */
static int above_stdio(int *fd)
{
	int n;

	if (*fd > 2)
		return 0;
	n = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
	if (n < 0)
		return -1;
	close(*fd);
	*fd = n;
	return 0;
}

struct kqmp_conn_ssh *kqmp_conn_ssh_open(const struct kqmp_conn_endpoint *ep, int *fd,
				   struct kqmp_error *err)
{
	struct kqmp_conn_ssh *t = calloc(1, sizeof(*t));
	struct plan *p = calloc(1, sizeof(*p));
	int sv[2] = { -1, -1 }, ev[2] = { -1, -1 };
	char dir[96];

	if (!t || !p) {
		kqmp_seterr(err, KQMP_E_NOMEM, "out of memory starting ssh");
		goto fail;
	}
	t->ep = *ep;
	t->err_fd = -1;
	if (runtime_dir(dir, sizeof(dir), err) < 0 || make_plan(p, t, dir, err) < 0)
		goto fail;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 ||
	    pipe2(ev, O_CLOEXEC) < 0 || above_stdio(&sv[1]) < 0 || above_stdio(&ev[1]) < 0) {
		kqmp_seterr(err, KQMP_E_CONNECT, "cannot make ssh's pipes: %s", strerror(errno));
		goto fail;
	}
	t->pid = fork();
	if (t->pid < 0) {
		kqmp_seterr(err, KQMP_E_CONNECT, "cannot start ssh: fork: %s", strerror(errno));
		goto fail;
	}
	if (t->pid == 0)
		helper(p, sv[1], ev[1]);
	close(sv[1]);
	close(ev[1]);
	free(p);
	t->err_fd = ev[0];
	fcntl(t->err_fd, F_SETFL, O_NONBLOCK);
	*fd = sv[0];
	return t;
fail:
	for (int i = 0; i < 2; i++) {
		if (sv[i] >= 0)
			close(sv[i]);
		if (ev[i] >= 0)
			close(ev[i]);
	}
	free(p);
	free(t);
	return NULL;
}

int kqmp_conn_open_endpoint(const char *uri, struct kqmp_conn_endpoint *ep,
			 struct kqmp_conn_ssh **t, int *fd, struct kqmp_error *err)
{
	char msg[400];

	*t = NULL;
	*fd = -1;
	if (kqmp_conn_parse_endpoint(uri, ep, msg, sizeof(msg)) < 0) {
		kqmp_seterr(err, KQMP_E_INVAL, "%s", msg);
		return -1;
	}
	if (ep->ssh && !(*t = kqmp_conn_ssh_open(ep, fd, err)))
		return -1;
	return 0;
}

void kqmp_conn_ssh_drain(struct kqmp_conn_ssh *t)
{
	char buf[4096];
	ssize_t n;

	while ((n = read(t->err_fd, buf, sizeof(buf))) > 0) {
		size_t k = (size_t)n;

		if (k >= KJ_SSH_TAIL) {
			memcpy(t->tail, buf + k - KJ_SSH_TAIL, KJ_SSH_TAIL);
			t->tlen = KJ_SSH_TAIL;
			continue;
		}
		if (t->tlen + k > KJ_SSH_TAIL) {
			size_t drop = t->tlen + k - KJ_SSH_TAIL;

			memmove(t->tail, t->tail + drop, t->tlen - drop);
			t->tlen -= drop;
		}
		memcpy(t->tail + t->tlen, buf, k);
		t->tlen += k;
	}
}

void kqmp_conn_ssh_close(struct kqmp_conn_ssh *t)
{
	int status;

	if (!t)
		return;
	if (t->reaped)
		goto reaped;
	/* The session's end closes the remote socat and frees the QEMU
	 * monitor for its next client; TERM is quicker than socat's EOF
	 * timeout.  Reap it, waiting a second at most before KILL. */
	kill(t->pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(t->pid, &status, WNOHANG) != 0)
			goto reaped;
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
	kill(t->pid, SIGKILL);
	waitpid(t->pid, &status, 0);
reaped:
	close(t->err_fd);
	free(t);
}

/* ---- why it failed, in ssh's words ------------------------------------- */

struct hint {
	const char *said;	/* in ssh's (or the remote socat's) line */
	const char *fix;	/* {user} "user@" or "", {host}, {port}, {path} */
};

/* The first match wins, so the remote socket's errors (socat's "E
 * connect(") come before ssh's own of the same words. */
static const struct hint hints[] = {
	{ "E connect(", NULL },
	{ "command not found", "install socat on {host}: kawarimi reaches the socket through it" },
	{ "Permission denied (", "{user}{host} accepts none of the keys offered: add yours to its "
	  "authorized_keys and offer it (ssh-agent, or IdentityFile in ~/.ssh/config); kawarimi "
	  "runs ssh with BatchMode=yes, so never with a password" },
	{ "has changed", "{host}'s host key is not the one in known_hosts: if the change is "
	  "expected, remove the old entry (ssh-keygen -R) and add the new one after checking it" },
	{ "Host key verification failed", "add {host}'s host key to known_hosts after checking "
	  "its fingerprint (ssh-keyscan -p {port} {host}, or one interactive ssh): kawarimi "
	  "never answers ssh's questions" },
	{ "Could not resolve hostname", "check the host name, or its Host entry in ~/.ssh/config" },
	{ "Connection refused", "is sshd running on {host} and listening on port {port}?" },
	{ "Connection timed out", "is {host} up and port {port} reachable from here?" },
	{ "Session open refused", "{host}'s sshd refused one more session over the shared "
	  "connection: raise MaxSessions in its sshd_config (kawarimi opens one per socket)" },
	{ "cannot run", NULL },
};

/* What the remote socat says about the socket, and the fix. */
static const struct hint remote_hints[] = {
	{ "No such file", "nothing at {path} on {host}: is the QEMU there running with that socket?" },
	{ "Connection refused", "{path} on {host} exists but nothing listens on it: is its QEMU "
	  "still running?" },
	{ "Permission denied", "{user}{host} may not open {path}: log in as the QEMU's user or give "
	  "the ssh user read and write access to the socket" },
};

/* The line that says why: a known one, else the last. */
static const char *pick_line(char *text, const struct hint **h)
{
	const char *last = NULL;

	*h = NULL;
	for (char *line = strtok(text, "\r\n"); line; line = strtok(NULL, "\r\n")) {
		while (*line == ' ')
			line++;
		if (!*line)
			continue;
		last = line;
		for (size_t i = 0; i < sizeof(hints) / sizeof(hints[0]); i++) {
			if (strstr(line, hints[i].said)) {
				*h = &hints[i];
				return line;
			}
		}
	}
	return last;
}

/* socat's lines start "2026/12/02 20:36:47 socat[5796] E ": keep what
 * follows the level letter. */
static const char *strip_socat(const char *line)
{
	const char *s = strstr(line, " socat[");
	const char *e = s ? strstr(s, "] E ") : NULL;

	return e ? e + 4 : line;
}

/* Writes fmt with {user} {host} {port} {path} filled in. */
static void fmt_fix(char *out, size_t len, const char *fmt, const struct kqmp_conn_endpoint *ep)
{
	char user[sizeof(ep->user) + 1], port[8];
	const char *names[] = { "{user}", "{host}", "{port}", "{path}" };
	const char *vals[] = { user, ep->host, port, ep->path };
	size_t o = 0;

	snprintf(user, sizeof(user), "%s%s", ep->user, *ep->user ? "@" : "");
	snprintf(port, sizeof(port), "%d", ep->port ? ep->port : 22);
	while (*fmt && o + 1 < len) {
		size_t i;

		for (i = 0; i < 4; i++)
			if (!strncmp(fmt, names[i], strlen(names[i])))
				break;
		if (i == 4) {
			out[o++] = *fmt++;
			continue;
		}
		o += (size_t)snprintf(out + o, len - o, "%s", vals[i]);
		if (o >= len)
			o = len - 1;
		fmt += strlen(names[i]);
	}
	out[o] = '\0';
}

/* ssh writes its reason to stderr and closes our fd as it exits, but the
 * two may reach us in either order: give it a moment to be done. */
static void wait_exit(struct kqmp_conn_ssh *t, int ms)
{
	for (; ms > 0 && !t->reaped; ms -= 10) {
		if (waitpid(t->pid, &t->status, WNOHANG) != 0)
			t->reaped = true;
		else
			nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
}

void kqmp_conn_ssh_explain(struct kqmp_conn_ssh *t, char *desc, size_t len)
{
	char text[KJ_SSH_TAIL + 1], fix[320] = "";
	const struct hint *h;
	const char *line;
	size_t used = strlen(desc);

	wait_exit(t, 300);
	kqmp_conn_ssh_drain(t);
	memcpy(text, t->tail, t->tlen);
	text[t->tlen] = '\0';
	line = pick_line(text, &h);
	if (!line && t->reaped && WIFEXITED(t->status) && WEXITSTATUS(t->status) == 255) {
		/* A session whose master went away says nothing. */
		snprintf(desc + used, len - used, "; ssh exited with status 255: the ssh "
			 "connection to %s broke", t->ep.host);
		return;
	}
	if (!line)
		return;		/* the remote end just closed */
	if (h && !h->fix) {
		for (size_t i = 0; i < sizeof(remote_hints) / sizeof(remote_hints[0]); i++)
			if (strstr(line, remote_hints[i].said)) {
				fmt_fix(fix, sizeof(fix), remote_hints[i].fix, &t->ep);
				break;
			}
		line = strip_socat(line);
	} else if (h) {
		fmt_fix(fix, sizeof(fix), h->fix, &t->ep);
	}
	snprintf(desc + used, len - used, "; ssh: '%s'%s%s", line, *fix ? "; " : "", fix);
	kqmp_one_line(desc);
}
