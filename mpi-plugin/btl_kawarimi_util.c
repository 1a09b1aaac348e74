/*
 * kawarimi BTL: what every layer calls (the log, the clock, waking the
 * other thread), at the bottom: it calls nothing else of the BTL, so the
 * layers above (paths, connection management, reliability layer, agent
 * control, network thread, component) call only downwards.
 */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "btl_kawarimi.h"

void kw_log(int level, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n;

	if (level > kw.verbose)
		return;
	n = snprintf(buf, sizeof(buf), "[%s:%d] btl:kawarimi rank %u: ", kw.hostname,
		     (int)getpid(), kw.me.vpid);
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	/* One write per line keeps lines from different threads whole. */
	if (write(STDERR_FILENO, buf, n) < 0)
		return;
}

uint64_t kw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void kw_wake(void)
{
	uint64_t one = 1;

	if (kw.wake_fd >= 0 && write(kw.wake_fd, &one, sizeof(one)) < 0)
		return;	/* counter full: the thread is awake anyway */
}

int kw_app_active(uint64_t now)
{
	return kw.app_poll &&
	       now < atomic_load_explicit(&kw.app_last_ms, memory_order_relaxed) + KW_APP_IDLE_MS;
}

void kw_app_notify(void)
{
	atomic_store_explicit(&kw.app_work, 1, memory_order_release);
}
