/*
 * kawarimi BTL, verbs path: device discovery. Which RDMA device has an
 * ACTIVE port, and which IP interfaces (netdevs) belong to it: the
 * addresses the path advertises are those of these interfaces.
 */
#include <dirent.h>
#include <limits.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "btl_kawarimi_verbs_priv.h"

static int read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	int ok;

	if (!f)
		return -1;
	ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	if (!ok)
		return -1;
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static void add_netdev(const char *name)
{
	int i;

	if (!*name || strlen(name) >= KW_IFNAME_LEN)
		return;
	for (i = 0; i < kwv.nnetdevs; i++)
		if (!strcmp(kwv.netdevs[i], name))
			return;
	if (kwv.nnetdevs < KWV_MAX_NETDEVS)
		strcpy(kwv.netdevs[kwv.nnetdevs++], name);
}

/*
 * The IP interfaces of an RDMA device port, from sysfs: rxe/siw name their
 * netdev in "parent"; RoCE ports list theirs per GID (gid_attrs/ndevs);
 * IPoIB interfaces (type 32) share the HCA's PCI device.
 */
static void find_netdevs(const char *dev, int port)
{
	char p[PATH_MAX], v[64], devpath[PATH_MAX], np[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int i;

	snprintf(p, sizeof(p), "/sys/class/infiniband/%s/parent", dev);
	if (!read_line(p, v, sizeof(v)))
		add_netdev(v);
	for (i = 0; i < 16; i++) {
		snprintf(p, sizeof(p), "/sys/class/infiniband/%s/ports/%d/gid_attrs/ndevs/%d",
			 dev, port, i);
		if (!read_line(p, v, sizeof(v)))
			add_netdev(v);
	}
	snprintf(p, sizeof(p), "/sys/class/infiniband/%s/device", dev);
	if (!realpath(p, devpath) || !(d = opendir("/sys/class/net")))
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/sys/class/net/%s/type", e->d_name);
		if (read_line(p, v, sizeof(v)) || atoi(v) != ARPHRD_INFINIBAND)
			continue;
		snprintf(p, sizeof(p), "/sys/class/net/%s/device", e->d_name);
		if (realpath(p, np) && !strcmp(np, devpath))
			add_netdev(e->d_name);
	}
	closedir(d);
}

int kw_verbs_device_any(void)
{
	DIR *d = opendir("/sys/class/infiniband");
	struct dirent *e;
	int n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/*
 * One look through libibverbs (a fresh device list each time, freed):
 * records every device with an ACTIVE port and its netdevs. Each context
 * is closed again at once.
 */
static int scan_active(void)
{
	struct ibv_device **list;
	int n, i, found = 0;

	kwv.nnetdevs = 0;
	list = kwv_lib.get_device_list(&n);
	if (!list)
		return 0;
	for (i = 0; i < n; i++) {
		struct ibv_context *ctx = kwv_lib.open_device(list[i]);
		struct ibv_device_attr da;
		int p;

		if (!ctx)
			continue;
		if (!kwv_lib.query_device(ctx, &da))
			for (p = 1; p <= da.phys_port_cnt; p++) {
				struct ibv_port_attr pa;

				memset(&pa, 0, sizeof(pa));
				if (kwv_lib.query_port(ctx, (uint8_t)p, &pa) || pa.state != IBV_PORT_ACTIVE)
					continue;
				if (!found++) {
					snprintf(kwv.device, sizeof(kwv.device), "%s",
						 kwv_lib.get_device_name(list[i]));
					kwv.devport = p;
				}
				find_netdevs(kwv_lib.get_device_name(list[i]), p);
			}
		kwv_lib.close_device(ctx);
	}
	kwv_lib.free_device_list(list);
	return found;
}

int kw_verbs_device_wait_active(int wait_ms)
{
	uint64_t start = kw_now_ms();

	for (;;) {
		if (scan_active())
			break;
		if (kw_now_ms() - start >= (uint64_t)wait_ms) {
			kwv.waited_ms = (int64_t)(kw_now_ms() - start);
			return 0;
		}
		usleep(100000);
	}
	kwv.waited_ms = (int64_t)(kw_now_ms() - start);
	return 1;
}
