/* Unit tests of the BTL's address handling: the if_include spec, wire
 * encoding, and which address pair a connection picks. */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "btl_kawarimi_proc.h"
#include "../check.h"

static struct kw_addr addr(const char *ip, int prefix, int pref)
{
	struct kw_addr a = { .pref = (uint8_t)pref, .prefixlen = (uint8_t)prefix };

	inet_pton(AF_INET, ip, &a.ip);
	return a;
}

static void test_spec(void)
{
	char err[256];

	CHECK(!kw_addrs_spec_check("", err, sizeof(err)), "empty spec");
	CHECK(!kw_addrs_spec_check("ib0,eth*,10.0.0.0/8", err, sizeof(err)), "good spec: %s", err);
	CHECK(kw_addrs_spec_check("10.0.0.0/33", err, sizeof(err)), "bad prefix accepted");
	CHECK(strstr(err, "\"10.0.0.0/33\""), "error does not quote the entry: %s", err);
	CHECK(kw_addrs_spec_check("300.1.1.1/8", err, sizeof(err)), "bad address accepted");
	CHECK(kw_addrs_spec_check("averyveryverylongname0", err, sizeof(err)),
	      "over-long interface name accepted");
}

static void test_encoding(void)
{
	struct kw_addrs in = { .port = 4242, .n = 2 }, out;
	unsigned char buf[1024];
	char err[256];
	int n;

	in.a[0] = addr("10.77.1.1", 24, 0);
	in.a[1] = addr("10.77.2.1", 24, 1);
	strcpy(in.a[0].ifname, "fast0");
	n = kw_addrs_encode(&in, buf, sizeof(buf));
	CHECK(n > 0, "encode failed");
	CHECK(!kw_addrs_decode(buf, n, &out, err, sizeof(err)), "decode failed: %s", err);
	CHECK(out.port == 4242 && out.n == 2 && out.a[1].ip == in.a[1].ip &&
	      !strcmp(out.a[0].ifname, "fast0"), "round trip changed the list");
	CHECK(kw_addrs_decode(buf, n - 1, &out, err, sizeof(err)), "truncated list accepted");
	buf[0] ^= 0xff;
	CHECK(kw_addrs_decode(buf, n, &out, err, sizeof(err)) && strstr(err, "magic"),
	      "bad magic accepted or not named: %s", err);
}

static void test_candidates(void)
{
	struct kw_addrs me = { .port = 1 }, peer = { .port = 2 };
	struct kw_cand c[KW_MAX_CAND];
	char a[24];
	int n;

	me.a[me.n++] = addr("10.77.2.1", 24, 1);	/* slow listed first */
	me.a[me.n++] = addr("10.77.1.1", 24, 0);	/* fast preferred */
	peer.a[peer.n++] = addr("10.77.1.2", 24, 0);
	peer.a[peer.n++] = addr("10.77.2.2", 24, 1);
	n = kw_addrs_candidates(&me, &peer, c, KW_MAX_CAND);
	kw_ip_str(c[0].remote.ip, a, sizeof(a));
	CHECK(n == 2 && !strcmp(a, "10.77.1.2") && c[0].port == 2,
	      "both have fast: first pick %s of %d", a, n);

	peer.n = 0;
	peer.a[peer.n++] = addr("10.77.2.2", 24, 1);	/* peer lost its fast link */
	n = kw_addrs_candidates(&me, &peer, c, KW_MAX_CAND);
	kw_ip_str(c[0].remote.ip, a, sizeof(a));
	CHECK(n == 1 && !strcmp(a, "10.77.2.2"), "peer without fast: pick %s of %d", a, n);

	peer.n = 0;
	peer.a[peer.n++] = addr("192.168.5.5", 24, 0);	/* no shared subnet: routed */
	n = kw_addrs_candidates(&me, &peer, c, KW_MAX_CAND);
	CHECK(n == 1 && c[0].local.ip == 0, "routed fallback must not bind a source");
}

int main(void)
{
	test_spec();
	test_encoding();
	test_candidates();
	if (failures)
		printf("%d failures\n", failures);
	else
		printf("all proc tests passed\n");
	return failures ? 1 : 0;
}
