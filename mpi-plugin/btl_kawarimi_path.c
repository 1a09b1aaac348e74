/*
 * kawarimi BTL: the table of paths, and what is common to all of them.
 * The only file outside the paths' own that names them; everything else
 * loops over kw_paths[].
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>

#include "btl_kawarimi_path.h"
#include "btl_kawarimi_tcp.h"
#include "btl_kawarimi_verbs.h"

const struct kw_path_ops *const kw_paths[KW_NPATHS] = {
	&kw_tcp_path,
	&kw_verbs_path,
};

const struct kw_path_ops *kw_path_for_fabric(uint8_t fabric)
{
	int i;

	for (i = 0; i < KW_NPATHS; i++)
		if (kw_paths[i]->fabric == fabric)
			return kw_paths[i];
	return kw_paths[0];
}

void kw_path_conn_str(const struct kw_conn *c, char *buf, size_t len)
{
	char l[24], r[24];

	kw_ip_str(c->cand.local.ip, l, sizeof(l));
	kw_ip_str(c->cand.remote.ip, r, sizeof(r));
	snprintf(buf, len, "%s %s%s%s -> %s:%u", c->ops->name, l,
		 c->cand.local.ifname[0] ? "@" : "", c->cand.local.ifname, r, c->cand.port);
}

void kw_path_release_all(void)
{
	int i;

	for (i = 0; i < KW_NPATHS; i++)
		kw_paths[i]->release();
}

static const struct kw_path_ops *probe_path(void)
{
	int i;

	for (i = 0; i < KW_NPATHS; i++)
		if (kw_paths[i]->probe)
			return kw_paths[i];
	return NULL;
}

int kw_path_probe(uint32_t local_ip, uint32_t remote_ip, uint16_t port, int *err)
{
	const struct kw_path_ops *p = probe_path();

	if (!p) {
		*err = EOPNOTSUPP;
		return -1;
	}
	return p->probe(local_ip, remote_ip, port, err);
}

int kw_path_probe_result(int fd)
{
	return probe_path()->probe_result(fd);
}
