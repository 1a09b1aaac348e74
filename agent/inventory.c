/* SPDX-License-Identifier: MIT */
/*
 * kawarimi-agent: what hardware the guest has (PCI via libpci, verbs
 * devices via libibverbs, netdevs via getifaddrs and sysfs), PCI rescan,
 * and who holds a uverbs device open.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <pci/pci.h>

#include "agent_priv.h"

#define MAX_GIDS 16

/* ---- small sysfs helpers -------------------------------------------------- */

/* Reads the first line of a small file into buf; 0 or -1. */
static int read_line(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "re");
	size_t len;

	if (!f)
		return -1;
	if (!fgets(buf, (int)n, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	len = strlen(buf);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	return 0;
}

static bool is_pci_addr(const char *s)
{
	unsigned d, b, sl, f;
	char tail;

	return strlen(s) == 12 && sscanf(s, "%4x:%2x:%2x.%1u%c", &d, &b, &sl, &f, &tail) == 4;
}

/* The PCI address a sysfs "device" link points to, or "".  A virtio
 * netdev's link ends in virtio0, whose parent is the PCI function. */
static void device_pci(const char *link, char *out, size_t n)
{
	char target[PATH_MAX];
	char *base;

	out[0] = '\0';
	if (!realpath(link, target))
		return;
	for (int up = 0; up < 2; up++) {
		base = strrchr(target, '/');
		if (!base)
			return;
		if (is_pci_addr(base + 1)) {
			snprintf(out, n, "%s", base + 1);
			return;
		}
		*base = '\0';
	}
}

/* The netdev behind a verbs device: RoCE's gid_attrs, rxe's "parent", or
 * the PCI function's net/ directory (IPoIB). "" when none. */
static void verbs_netdev(const struct agent_opts *o, const char *dev, char *out, size_t n)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *de;

	out[0] = '\0';
	snprintf(path, sizeof(path), "%s/class/infiniband/%s/ports/1/gid_attrs/ndevs/0", o->sys_root, dev);
	if (read_line(path, out, n) == 0 && out[0])
		return;
	snprintf(path, sizeof(path), "%s/class/infiniband/%s/parent", o->sys_root, dev);
	if (read_line(path, out, n) == 0 && out[0])
		return;
	out[0] = '\0';
	snprintf(path, sizeof(path), "%s/class/infiniband/%s/device/net", o->sys_root, dev);
	d = opendir(path);
	if (!d)
		return;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			snprintf(out, n, "%.15s", de->d_name);
			break;
		}
	closedir(d);
}

/* ---- PCI -------------------------------------------------------------------- */

/* libpci reports fatal errors through a callback that must not return. */
static jmp_buf pci_jmp;
static char pci_errmsg[256];

__attribute__((format(printf, 1, 2), noreturn))
static void pci_fatal(char *msg, ...)
{
	va_list ap;

	va_start(ap, msg);
	vsnprintf(pci_errmsg, sizeof(pci_errmsg), msg, ap);
	va_end(ap);
	longjmp(pci_jmp, 1);
}

__attribute__((format(printf, 1, 2)))
static void pci_quiet(char *msg, ...)
{
	(void)msg;
}

static int cmp_addr(const void *x, const void *y)
{
	json_object *const *a = x, *const *b = y;
	json_object *va, *vb;

	json_object_object_get_ex(*a, "address", &va);
	json_object_object_get_ex(*b, "address", &vb);
	return strcmp(json_object_get_string(va), json_object_get_string(vb));
}

/* PCI addresses of functions with a verbs device on them or on their netdev. */
static json_object *rdma_addresses(const struct agent_opts *o)
{
	json_object *set = json_object_new_object();
	char path[PATH_MAX], addr[32], nd[IF_NAMESIZE + 1];
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/class/infiniband", o->sys_root);
	d = opendir(path);
	if (!d)
		return set;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/class/infiniband/%s/device", o->sys_root, de->d_name);
		device_pci(path, addr, sizeof(addr));
		if (addr[0])
			json_object_object_add(set, addr, json_object_new_string(de->d_name));
		verbs_netdev(o, de->d_name, nd, sizeof(nd));
		if (!nd[0])
			continue;
		snprintf(path, sizeof(path), "%s/class/net/%s/device", o->sys_root, nd);
		device_pci(path, addr, sizeof(addr));
		if (addr[0])
			json_object_object_add(set, addr, json_object_new_string(de->d_name));
	}
	closedir(d);
	return set;
}

static json_object *pci_device_json(struct pci_access *pacc, struct pci_dev *dev, json_object *rdma)
{
	json_object *o = json_object_new_object(), *v = NULL;
	char addr[32], name[256];
	char *drv;

	pci_fill_info(dev, PCI_FILL_IDENT | PCI_FILL_CLASS | PCI_FILL_DRIVER);
	snprintf(addr, sizeof(addr), "%04x:%02x:%02x.%d", dev->domain & 0xffff, dev->bus, dev->dev,
		 dev->func);
	json_object_object_add(o, "address", json_object_new_string(addr));
	json_object_object_add(o, "vendor-id", json_object_new_int(dev->vendor_id));
	json_object_object_add(o, "device-id", json_object_new_int(dev->device_id));
	json_object_object_add(o, "class", json_object_new_int(dev->device_class));
	json_object_object_add(o, "vendor", json_object_new_string(
		pci_lookup_name(pacc, name, sizeof(name), PCI_LOOKUP_VENDOR, dev->vendor_id)));
	json_object_object_add(o, "device", json_object_new_string(
		pci_lookup_name(pacc, name, sizeof(name), PCI_LOOKUP_DEVICE, dev->vendor_id, dev->device_id)));
	json_object_object_add(o, "class-name", json_object_new_string(
		pci_lookup_name(pacc, name, sizeof(name), PCI_LOOKUP_CLASS, dev->device_class)));
	drv = pci_get_string_property(dev, PCI_FILL_DRIVER);
	json_object_object_add(o, "driver", drv ? json_object_new_string(drv) : NULL);
	json_object_object_get_ex(rdma, addr, &v);
	json_object_object_add(o, "rdma", json_object_new_boolean(dev->device_class == 0x0207 || v));
	json_object_object_add(o, "verbs", v ? json_object_get(v) : NULL);
	return o;
}

json_object *agent_inv_pci(const struct agent_opts *o, struct schema_err *e)
{
	struct pci_access *volatile pacc = pci_alloc();
	json_object *volatile list = json_object_new_array();
	json_object *volatile rdma = rdma_addresses(o);
	char syspath[PATH_MAX];

	if (!pacc) {
		schema_err_set(e, "GenericError", "libpci: out of memory");
		goto fail;
	}
	pacc->error = pci_fatal;
	pacc->warning = pci_quiet;
	pacc->debug = pci_quiet;
	if (setjmp(pci_jmp)) {
		schema_err_set(e, "GenericError", "libpci: %s%s%s", pci_errmsg,
			   o->pci_dump ? "; check the dump file " : "", o->pci_dump ? o->pci_dump : "");
		goto fail;
	}
	if (o->pci_dump) {
		pacc->method = PCI_ACCESS_DUMP;
		pci_set_param(pacc, "dump.name", (char *)o->pci_dump);
	} else if (strcmp(o->sys_root, "/sys")) {
		snprintf(syspath, sizeof(syspath), "%s/bus/pci", o->sys_root);
		pacc->method = PCI_ACCESS_SYS_BUS_PCI;
		pci_set_param(pacc, "sysfs.path", syspath);
	}
	pci_init(pacc);
	pci_scan_bus(pacc);
	for (struct pci_dev *dev = pacc->devices; dev; dev = dev->next)
		json_object_array_add(list, pci_device_json(pacc, dev, rdma));
	json_object_array_sort(list, cmp_addr);
	pci_cleanup(pacc);
	json_object_put(rdma);
	return list;
fail:
	if (pacc)
		pci_cleanup(pacc);
	json_object_put(list);
	json_object_put(rdma);
	return NULL;
}

int agent_inv_pci_rescan(const struct agent_opts *o, struct schema_err *e)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/bus/pci/rescan", o->sys_root);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "1", 1) != 1) {
		schema_err_set(e, "GenericError", "PCI rescan through %s failed: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* ---- verbs ------------------------------------------------------------------- */

static const char *link_layer_name(uint8_t ll)
{
	switch (ll) {
	case IBV_LINK_LAYER_INFINIBAND:
		return "InfiniBand";
	case IBV_LINK_LAYER_ETHERNET:
		return "Ethernet";
	default:
		return "unknown";
	}
}

/* Spelled as sysfs does ("4: ACTIVE"), so both sources agree. */
static const char *port_state_name(enum ibv_port_state st)
{
	switch (st) {
	case IBV_PORT_NOP:
		return "NOP";
	case IBV_PORT_DOWN:
		return "DOWN";
	case IBV_PORT_INIT:
		return "INIT";
	case IBV_PORT_ARMED:
		return "ARMED";
	case IBV_PORT_ACTIVE:
		return "ACTIVE";
	case IBV_PORT_ACTIVE_DEFER:
		return "ACTIVE_DEFER";
	}
	return "UNKNOWN";
}

static json_object *port_json(struct ibv_context *ctx, uint8_t port, bool *active)
{
	struct ibv_port_attr pa;
	json_object *o = json_object_new_object(), *gids = json_object_new_array();
	const char *st;

	json_object_object_add(o, "port", json_object_new_int(port));
	if (ibv_query_port(ctx, port, &pa)) {
		json_object_object_add(o, "error", json_object_new_string(strerror(errno)));
		json_object_put(gids);
		return o;
	}
	if (pa.state == IBV_PORT_ACTIVE)
		*active = true;
	st = port_state_name(pa.state);
	json_object_object_add(o, "state", json_object_new_string(st));
	json_object_object_add(o, "link-layer", json_object_new_string(link_layer_name(pa.link_layer)));
	json_object_object_add(o, "lid", json_object_new_int(pa.lid));
	json_object_object_add(o, "active-mtu", json_object_new_int(128 << pa.active_mtu));
	for (int i = 0; i < pa.gid_tbl_len && i < MAX_GIDS; i++) {
		union ibv_gid gid;
		static const uint8_t zero[16];
		char text[INET6_ADDRSTRLEN];

		if (ibv_query_gid(ctx, port, i, &gid) || !memcmp(gid.raw, zero, 16))
			continue;
		inet_ntop(AF_INET6, gid.raw, text, sizeof(text));
		json_object_array_add(gids, json_object_new_string(text));
	}
	json_object_object_add(o, "gids", gids);
	return o;
}

/* Ports read from sysfs only: "4: ACTIVE" in ports/N/state. */
static json_object *ports_sysfs(const struct agent_opts *o, const char *dev, bool *active)
{
	json_object *ports = json_object_new_array();
	char path[PATH_MAX], line[64];

	for (int p = 1; p <= 8; p++) {
		json_object *po;
		const char *st;

		snprintf(path, sizeof(path), "%s/class/infiniband/%s/ports/%d/state", o->sys_root, dev, p);
		if (read_line(path, line, sizeof(line)) < 0)
			break;
		st = strchr(line, ':') ? strchr(line, ':') + 2 : line;
		po = json_object_new_object();
		json_object_object_add(po, "port", json_object_new_int(p));
		json_object_object_add(po, "state", json_object_new_string(st));
		if (!strcmp(st, "ACTIVE"))
			*active = true;
		json_object_array_add(ports, po);
	}
	return ports;
}

json_object *agent_inv_verbs(const struct agent_opts *o, bool open_devices, bool *any_active)
{
	json_object *list = json_object_new_array();
	struct ibv_device **devs;
	int n = 0;

	*any_active = false;
	devs = ibv_get_device_list(&n);
	for (int i = 0; devs && i < n; i++) {
		const char *name = ibv_get_device_name(devs[i]);
		json_object *d = json_object_new_object(), *ports;
		char path[PATH_MAX], addr[32], nd[IF_NAMESIZE + 1];
		uint64_t guid = be64toh(ibv_get_device_guid(devs[i]));
		char gs[32];
		bool active = false;

		snprintf(gs, sizeof(gs), "%04x:%04x:%04x:%04x", (unsigned)(guid >> 48) & 0xffff,
			 (unsigned)(guid >> 32) & 0xffff, (unsigned)(guid >> 16) & 0xffff,
			 (unsigned)guid & 0xffff);
		json_object_object_add(d, "name", json_object_new_string(name));
		json_object_object_add(d, "node-guid", json_object_new_string(gs));
		json_object_object_add(d, "transport", json_object_new_string(
			devs[i]->transport_type == IBV_TRANSPORT_IB ? "InfiniBand" :
			devs[i]->transport_type == IBV_TRANSPORT_IWARP ? "iWARP" : "other"));
		snprintf(path, sizeof(path), "%s/class/infiniband/%s/device", o->sys_root, name);
		device_pci(path, addr, sizeof(addr));
		json_object_object_add(d, "pci", addr[0] ? json_object_new_string(addr) : NULL);
		verbs_netdev(o, name, nd, sizeof(nd));
		json_object_object_add(d, "netdev", nd[0] ? json_object_new_string(nd) : NULL);
		if (open_devices) {
			struct ibv_context *ctx = ibv_open_device(devs[i]);
			struct ibv_device_attr da;

			ports = json_object_new_array();
			if (!ctx || ibv_query_device(ctx, &da)) {
				json_object_object_add(d, "error", json_object_new_string(strerror(errno)));
			} else {
				for (uint8_t p = 1; p <= da.phys_port_cnt; p++)
					json_object_array_add(ports, port_json(ctx, p, &active));
			}
			if (ctx)
				ibv_close_device(ctx);
		} else {
			ports = ports_sysfs(o, name, &active);
		}
		json_object_object_add(d, "ports", ports);
		json_object_object_add(d, "active", json_object_new_boolean(active));
		*any_active = *any_active || active;
		json_object_array_add(list, d);
	}
	if (devs)
		ibv_free_device_list(devs);
	return list;
}

bool agent_inv_verbs_active(const struct agent_opts *o)
{
	bool active = false;
	json_object *v = agent_inv_verbs(o, true, &active);

	json_object_put(v);
	return active;
}

/* ---- netdevs ------------------------------------------------------------------- */

static json_object *netdev_get(json_object *map, const char *name)
{
	json_object *d;

	if (json_object_object_get_ex(map, name, &d))
		return d;
	d = json_object_new_object();
	json_object_object_add(d, "name", json_object_new_string(name));
	json_object_object_add(d, "addresses", json_object_new_array());
	json_object_object_add(map, name, d);
	return d;
}

static int prefix_len(const struct sockaddr *mask)
{
	const uint8_t *b;
	size_t n;
	int bits = 0;

	if (!mask)
		return 0;
	if (mask->sa_family == AF_INET) {
		b = (const uint8_t *)&((const struct sockaddr_in *)(const void *)mask)->sin_addr;
		n = 4;
	} else {
		b = ((const struct sockaddr_in6 *)(const void *)mask)->sin6_addr.s6_addr;
		n = 16;
	}
	for (size_t i = 0; i < n; i++)
		bits += __builtin_popcount(b[i]);
	return bits;
}

static void add_ifaddr(json_object *map, struct ifaddrs *ifa)
{
	json_object *d = netdev_get(map, ifa->ifa_name), *addrs;
	char text[80], ip[INET6_ADDRSTRLEN];
	int fam = ifa->ifa_addr->sa_family;

	json_object_object_add(d, "up", json_object_new_boolean(!!(ifa->ifa_flags & IFF_UP)));
	json_object_object_add(d, "loopback", json_object_new_boolean(!!(ifa->ifa_flags & IFF_LOOPBACK)));
	if (fam == AF_PACKET) {
		const struct sockaddr_ll *ll = (const void *)ifa->ifa_addr;
		char mac[3 * 20] = "";

		for (int i = 0; i < ll->sll_halen && i < 20; i++)
			snprintf(mac + strlen(mac), sizeof(mac) - strlen(mac), "%s%02x",
				 i ? ":" : "", ll->sll_addr[i]);
		if (mac[0])
			json_object_object_add(d, "mac", json_object_new_string(mac));
		return;
	}
	if (fam == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)ifa->ifa_addr)->sin_addr, ip, sizeof(ip));
	else
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)ifa->ifa_addr)->sin6_addr, ip, sizeof(ip));
	snprintf(text, sizeof(text), "%s/%d", ip, prefix_len(ifa->ifa_netmask));
	json_object_object_get_ex(d, "addresses", &addrs);
	json_object_array_add(addrs, json_object_new_string(text));
}

static int cmp_name(const void *x, const void *y)
{
	json_object *const *a = x, *const *b = y;
	json_object *va, *vb;

	json_object_object_get_ex(*a, "name", &va);
	json_object_object_get_ex(*b, "name", &vb);
	return strcmp(json_object_get_string(va), json_object_get_string(vb));
}

json_object *agent_inv_netdevs(const struct agent_opts *o)
{
	json_object *map = json_object_new_object(), *list = json_object_new_array();
	struct ifaddrs *ifas = NULL;

	if (getifaddrs(&ifas) == 0) {
		for (struct ifaddrs *ifa = ifas; ifa; ifa = ifa->ifa_next) {
			int fam = ifa->ifa_addr ? ifa->ifa_addr->sa_family : -1;

			if (fam == AF_INET || fam == AF_INET6 || fam == AF_PACKET)
				add_ifaddr(map, ifa);
			else
				netdev_get(map, ifa->ifa_name);
		}
		freeifaddrs(ifas);
	}
	json_object_object_foreach(map, name, d) {
		char path[PATH_MAX], addr[32];

		snprintf(path, sizeof(path), "%s/class/net/%s/device", o->sys_root, name);
		device_pci(path, addr, sizeof(addr));
		json_object_object_add(d, "pci", addr[0] ? json_object_new_string(addr) : NULL);
		json_object_array_add(list, json_object_get(d));
	}
	json_object_put(map);
	json_object_array_sort(list, cmp_name);
	return list;
}

/* The first IPv4 address of a netdev in the list, without its prefix. */
static bool netdev_ipv4(json_object *netdevs, const char *name, char *out, size_t n)
{
	for (size_t i = 0; i < json_object_array_length(netdevs); i++) {
		json_object *d = json_object_array_get_idx(netdevs, i), *v, *addrs;

		json_object_object_get_ex(d, "name", &v);
		if (strcmp(json_object_get_string(v), name))
			continue;
		json_object_object_get_ex(d, "addresses", &addrs);
		for (size_t k = 0; k < json_object_array_length(addrs); k++) {
			const char *a = json_object_get_string(json_object_array_get_idx(addrs, k));

			if (strchr(a, ':'))
				continue;
			snprintf(out, n, "%.*s", (int)strcspn(a, "/"), a);
			return true;
		}
	}
	return false;
}

static void add_fabric(json_object *list, const char *kind, const char *ifname, const char *addr)
{
	json_object *f = json_object_new_object();

	json_object_object_add(f, "name", json_object_new_string(kind));
	json_object_object_add(f, "ifname", json_object_new_string(ifname));
	json_object_object_add(f, "addr", json_object_new_string(addr));
	json_object_array_add(list, f);
}

json_object *agent_inv_fabrics(json_object *verbs, json_object *netdevs)
{
	json_object *list = json_object_new_array();
	char ip[INET6_ADDRSTRLEN];

	/* verbs: a device with an ACTIVE port and an IP on its netdev (the
	 * ranks reach it through librdmacm, which addresses by IP). */
	for (size_t i = 0; i < json_object_array_length(verbs); i++) {
		json_object *d = json_object_array_get_idx(verbs, i), *act, *nd;

		json_object_object_get_ex(d, "active", &act);
		json_object_object_get_ex(d, "netdev", &nd);
		if (json_object_get_boolean(act) && nd &&
		    netdev_ipv4(netdevs, json_object_get_string(nd), ip, sizeof(ip)))
			add_fabric(list, "verbs", json_object_get_string(nd), ip);
	}
	for (size_t i = 0; i < json_object_array_length(netdevs); i++) {
		json_object *d = json_object_array_get_idx(netdevs, i), *v, *up, *lo;

		json_object_object_get_ex(d, "name", &v);
		json_object_object_get_ex(d, "up", &up);
		json_object_object_get_ex(d, "loopback", &lo);
		if (json_object_get_boolean(up) && !json_object_get_boolean(lo) &&
		    netdev_ipv4(netdevs, json_object_get_string(v), ip, sizeof(ip)))
			add_fabric(list, "tcp", json_object_get_string(v), ip);
	}
	return list;
}

/* ---- who holds /dev/infiniband/uverbs* ------------------------------------------- */

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

static void scan_pid(const struct agent_opts *o, const char *pid, const char *prefix,
		     json_object *holders, int *unreadable)
{
	char path[PATH_MAX], target[PATH_MAX], comm[64] = "?";
	struct dirent *de;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s/fd", o->proc_root, pid);
	d = opendir(path);
	if (!d) {
		if (errno == EACCES)
			(*unreadable)++;
		return;
	}
	while ((de = readdir(d))) {
		ssize_t n;

		if (de->d_name[0] == '.')
			continue;
		n = readlinkat(dirfd(d), de->d_name, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, prefix, strlen(prefix)))
			continue;
		json_object *h = json_object_new_object();

		snprintf(path, sizeof(path), "%s/%s/comm", o->proc_root, pid);
		read_line(path, comm, sizeof(comm));
		json_object_object_add(h, "pid", json_object_new_int64(strtoll(pid, NULL, 10)));
		json_object_object_add(h, "comm", json_object_new_string(comm));
		json_object_object_add(h, "path", json_object_new_string(target));
		json_object_array_add(holders, h);
		break;	/* one line per process is enough */
	}
	closedir(d);
}

json_object *agent_inv_uverbs_holders(const struct agent_opts *o, int *unreadable)
{
	json_object *holders = json_object_new_array();
	char prefix[PATH_MAX], self[32];
	struct dirent *de;
	DIR *d;

	*unreadable = 0;
	snprintf(prefix, sizeof(prefix), "%s/infiniband/uverbs", o->dev_root);
	snprintf(self, sizeof(self), "%d", (int)getpid());
	d = opendir(o->proc_root);
	if (!d)
		return holders;
	while ((de = readdir(d)))
		if (all_digits(de->d_name) && strcmp(de->d_name, self))
			scan_pid(o, de->d_name, prefix, holders, unreadable);
	closedir(d);
	return holders;
}
