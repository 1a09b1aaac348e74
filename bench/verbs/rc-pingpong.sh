#!/bin/sh
# bench/verbs/rc-pingpong.sh PEER MAX_LOG [DEVICE [GID_INDEX]]: raw verbs
# ping-pong (rdma-core's ibv_rc_pingpong, one RC QP, SEND/RECV, busy
# polling) from this guest to PEER, sizes 2^0..2^MAX_LOG, printed in
# kawarimi-pingpong's IMB format so bench-verbs.sh tabulates it alike.
#
# Runs inside a lab guest (busybox sh); the server side is started on PEER
# through kw-ssh, one ibv_rc_pingpong pair per size.  The repetitions are
# IMB's, min(1000, 40 MiB / size).  ibv_rc_pingpong reports usec/iter for
# one full exchange (a send each way, timed after the QPs are connected),
# so t = usec/iter / 2 is the half round trip IMB reports, MB/s = bytes / t.
# Size 0 is not measured: ibv_rc_pingpong cannot register an empty buffer.
#
# This is the device's floor, not an MPI transport: no tag matching, no
# protocol headers, no flow control or reliability layer above RC.
peer=$1
max=$2
dev=${3:-rxe0}
gid=${4:-1}
[ -n "$peer" ] && [ -n "$max" ] || {
	echo "usage: rc-pingpong.sh PEER MAX_LOG [DEVICE [GID_INDEX]]" >&2
	exit 2
}
echo "# ibv_rc_pingpong -d $dev -g $gid to $peer; t = usec/iter / 2"
echo "       #bytes #repetitions      t[usec]   Mbytes/sec"
k=0
while [ "$k" -le "$max" ]; do
	s=$((1 << k))
	r=$((41943040 / s))
	[ "$r" -gt 1000 ] && r=1000
	[ "$r" -lt 1 ] && r=1
	port=$((18600 + k))
	kw-ssh "$peer" "ibv_rc_pingpong -d $dev -g $gid -p $port -s $s -n $r" >/tmp/rcpp-server.$k 2>&1 &
	spid=$!
	# The server needs a moment to listen (ssh under TCG takes seconds):
	# retry only a refused connection, nothing else.
	i=0
	while :; do
		out=$(ibv_rc_pingpong -d "$dev" -g "$gid" -p "$port" -s "$s" -n "$r" "$peer" 2>&1) && break
		case $out in
		*"Couldn't connect"*) ;;
		*) break ;;
		esac
		i=$((i + 1))
		[ "$i" -ge 60 ] && break
		sleep 1
	done
	wait "$spid"
	line=$(echo "$out" | grep 'usec/iter')
	if [ -z "$line" ]; then
		echo "rc-pingpong.sh: size $s failed: $(echo "$out" | tail -2)" >&2
		cat "/tmp/rcpp-server.$k" >&2
		exit 1
	fi
	echo "$line" | awk -v s="$s" -v r="$r" '{
		for (i = 1; i <= NF; i++) if ($i == "usec/iter") u = $(i - 1)
		t = u / 2
		printf " %12d %12d %12.2f %12.2f\n", s, r, t, s / t
	}'
	k=$((k + 1))
done
