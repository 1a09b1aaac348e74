# shellcheck shell=bash
# Sourced by lab/demo and bench/paper: the MPI job on a running lab, its
# checks, and one `kawarimi migrate` with its report and picture.
#
# The caller sets KW (the kawarimi binary), OUT (where reports and logs
# go), T0 (the start, for say) and KWL_PREFIX, and has brought a lab up;
# failures are collected with bad() into failed[], pictures into PLOTS[].

say() { printf '\n[%4ds] == %s\n' $(($(date +%s) - T0)) "$*"; }
bad() {
	echo "   FAILED: $*"
	failed+=("$*")
}
gexec() { "$KW" lab exec "$@"; }

# guest_kernel_faults PREFIX CONSOLE-LOG...: one bad() per log in which
# a guest kernel reported a fault: a panic, or an oops/BUG/GPF it survived
# (which can kill the agent or a rank without any panic).
GUEST_KERNEL_ERRORS='Kernel panic|Oops|(^|[^A-Z])BUG[: ]|general protection fault|Call Trace:'
guest_kernel_faults() {
	local prefix=$1 f
	shift
	for f in $(grep -lE "$GUEST_KERNEL_ERRORS" "$@" 2>/dev/null); do
		bad "${prefix}a guest kernel reported a fault ($(grep -m1 -E "$GUEST_KERNEL_ERRORS" "$f")): see $f"
	done
}

# Bytes the job has written to node N's disk so far (proof it is running).
data_bytes() {
	gexec "$1" --timeout 30 -- "stat -c %s /data/kwl-mpijob.$(($1 - 1)) 2>/dev/null || echo 0" | tr -dc 0-9
}

job_running() { # LABEL: both ranks write; the counts must grow within 90 s
	local a1 a2 b1 b2 _
	a1=$(data_bytes 1)
	a2=$(data_bytes 2)
	for _ in $(seq 1 30); do
		sleep 3
		b1=$(data_bytes 1)
		b2=$(data_bytes 2)
		if [ "${b1:-0}" -gt "${a1:-0}" ] && [ "${b2:-0}" -gt "${a2:-0}" ]; then
			echo "   job running ($1): node1 disk $((b1 / 1048576)) MiB, node2 disk $((b2 / 1048576)) MiB written"
			return 0
		fi
	done
	bad "the job does not progress $1 (node1 ${a1:-?}->${b1:-?} B, node2 ${a2:-?}->${b2:-?} B in 90 s)"
}

# start_jobs BTL PP-SECONDS [PINGPONG-ARGS...]: from node1, across node1
# and node2, kwl-mpijob (a ring exchange with every payload checked,
# writing 64 KiB per iteration to each node's disk) and, when
# PP-SECONDS is not empty, kawarimi-pingpong --continuous --check; both
# end when told (stop_jobs), PP-SECONDS only bounds a lost run.
start_jobs() {
	local btl=$1 pp=$2
	shift 2
	gexec 1 -- "mpirun --host node1,node2 -np 2 --mca btl $btl kwl-mpijob --seconds 100000 --stop-file /tmp/kwl.stop --interval-ms 50 >/root/job.log 2>&1 </dev/null &" ||
		bad "cannot start the job"
	[ -n "$pp" ] || return 0
	gexec 1 -- "mpirun --host node1,node2 -np 2 --mca btl $btl kawarimi-pingpong --continuous --check --duration $pp $* --stop-file /tmp/pp.stop >/root/pingpong.log 2>&1 </dev/null &" ||
		bad "cannot start kawarimi-pingpong"
}

# stop_jobs WITH-PINGPONG: stops both jobs, copies their logs to OUT and
# checks their verdicts; sets JOB_LINE, JOB_GAP_MS and PP_LINE.
stop_jobs() {
	gexec 1 -- 'touch /tmp/kwl.stop /tmp/pp.stop'
	gexec 1 --timeout 180 -- 'i=0; until grep -q KWL_MPIJOB /root/job.log; do i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.5; done' ||
		bad "the job did not finish within 150 s of the stop"
	gexec 1 -- 'cat /root/job.log' >"$OUT/job.log"
	JOB_LINE=$(grep KWL_MPIJOB "$OUT/job.log")
	grep -q 'KWL_MPIJOB OK' <<<"$JOB_LINE" || bad "the job did not verify: ${JOB_LINE:-no result line (see $OUT/job.log)}"
	JOB_GAP_MS=$(sed -n 's/.*max_gap_ms=\([0-9]*\).*/\1/p' <<<"$JOB_LINE")
	[ -n "$1" ] || return 0
	gexec 1 --timeout 300 -- 'i=0; until grep -q "^# check:" /root/pingpong.log; do i=$((i+1)); [ $i -gt 500 ] && exit 1; sleep 0.5; done' ||
		bad "kawarimi-pingpong did not end with its check line"
	gexec 1 -- 'cat /root/pingpong.log' >"$OUT/pingpong.log"
	PP_LINE=$(grep '^# check:' "$OUT/pingpong.log")
	grep -q 'all payloads verified' <<<"$PP_LINE" || bad "kawarimi-pingpong did not verify: ${PP_LINE:-no check line}"
}

# lab_migrate NAME CLUSTER-FILE: kawarimi migrate with --report
# OUT/report-NAME.json, its output in OUT/migrate-NAME.txt and its
# picture (kawarimi report --plot) beside.
lab_migrate() {
	local rc
	say "kawarimi migrate $2"
	"$KW" migrate "$2" --report "$OUT/report-$1.json" 2>&1 | tee "$OUT/migrate-$1.txt"
	rc=${PIPESTATUS[0]}
	[ -f "$OUT/report-$1.json" ] &&
		"$KW" report "$OUT/report-$1.json" --plot "$OUT/report-$1.png" >/dev/null 2>&1 &&
		PLOTS+=("$OUT/report-$1.png")
	if [ "$rc" != 0 ]; then
		bad "kawarimi migrate ($1) exited $rc"
		guest_diag "$1"
		return 1
	fi
	return 0
}

# guest_diag NAME: after a failed migration, what each guest's agent and
# kernel said (the agent logs to /tmp in the guest, which migrates with
# it), into OUT/diag-NAME-nodeN.txt, the agent's last lines also shown:
# a test's log then says why, not only that.
guest_diag() {
	local i f
	for i in 1 2; do
		f=$OUT/diag-$1-node$i.txt
		gexec "$i" --timeout 20 -- 'echo "## agent log"; tail -n 60 /tmp/agent.log; echo "## rdma link"; rdma link show; echo "## ip"; ip -br addr; echo "## dmesg"; dmesg | tail -n 30' >"$f" 2>&1 ||
			echo "(the guest did not answer on its console)" >>"$f"
		echo "   node$i's agent, last lines ($f):"
		sed -n '/^## agent log/,/^## rdma link/p' "$f" | grep -v '^## ' | tail -n 12 | sed 's/^/     /'
		echo "   node$i's rdma links: $(sed -n '/^## rdma link/,/^## ip/p' "$f" | grep -v '^## ' | tr '\n' ' ')"
	done
}

# rxe0_back: node1's rxe0 ACTIVE again after a return to site A.
rxe0_back() {
	gexec 1 --timeout 60 -- 'i=0; until rdma link show | grep -q "rxe0.*ACTIVE"; do i=$((i+1)); [ $i -gt 80 ] && exit 1; sleep 0.5; done; rdma link show'
}
