/*
 * kwv-devlist SECONDS [OPEN-FLAG-FILE]: how libibverbs' device list behaves
 * in ONE process while an RDMA device goes away and a new one appears
 * (tests/verbs/lab-verbs.sh runs it in a guest across the HCA unplug and
 * plug). Every 200 ms it calls ibv_get_device_list (freeing the list each
 * time) and prints a line whenever the set of names changes. It never
 * opens a device on its own (an open uverbs descriptor would block the
 * unplug); once OPEN-FLAG-FILE exists it opens each listed device once and
 * prints its port 1 state, to show the re-added device is usable from the
 * same process. Ends with "KWV_DEVLIST END changes=N".
 */
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void open_and_query(struct ibv_device **list, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		struct ibv_context *ctx = ibv_open_device(list[i]);
		struct ibv_port_attr pa;

		if (!ctx) {
			printf("KWV_DEVLIST OPEN %s failed\n", ibv_get_device_name(list[i]));
			continue;
		}
		memset(&pa, 0, sizeof(pa));
		if (ibv_query_port(ctx, 1, &pa))
			printf("KWV_DEVLIST OPEN %s query_port failed\n", ibv_get_device_name(list[i]));
		else
			printf("KWV_DEVLIST OPEN %s port1 %s\n", ibv_get_device_name(list[i]),
			       ibv_port_state_str(pa.state));
		ibv_close_device(ctx);
	}
}

int main(int argc, char **argv)
{
	double end, t0 = now();
	char last[512] = "?";
	int changes = 0, opened = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: kwv-devlist SECONDS [OPEN-FLAG-FILE]\n");
		return 2;
	}
	end = t0 + atof(argv[1]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (now() < end) {
		struct ibv_device **list;
		char cur[512] = "";
		int n = 0, i;

		list = ibv_get_device_list(&n);
		for (i = 0; list && i < n; i++) {
			size_t l = strlen(cur);

			snprintf(cur + l, sizeof(cur) - l, "%s%s", l ? "," : "",
				 ibv_get_device_name(list[i]));
		}
		if (!n)
			snprintf(cur, sizeof(cur), "none");
		if (strcmp(cur, last)) {
			printf("KWV_DEVLIST %.1f %s\n", now() - t0, cur);
			changes++;
			snprintf(last, sizeof(last), "%s", cur);
		}
		if (!opened && n && argc > 2 && access(argv[2], F_OK) == 0) {
			open_and_query(list, n);
			opened = 1;
		}
		if (list)
			ibv_free_device_list(list);
		if (opened)
			break;
		usleep(200000);
	}
	printf("KWV_DEVLIST END changes=%d\n", changes);
	return 0;
}
