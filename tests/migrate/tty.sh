#!/usr/bin/env bash
# The live display as a person sees it: `kawarimi migrate` in a tmux pane
# (a real pseudo-terminal), 2 VMs under a 4 MB/s cap so that it runs for
# seconds, the pane read while it runs, narrowed below the lines' width
# and widened again.  On every screen: exactly one line per VM and one
# cluster line, together at the bottom, none wrapped (tmux joins wrapped
# rows with -J, so a wrapped line shows longer than the pane), no stale
# copy of an older frame above; at the end the final frame and the table.
. "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || { echo "SKIP: tmux not installed"; exit 77; }

TM=(tmux -S "$T/tmux.sock")
trap '"${TM[@]}" kill-server 2>/dev/null; kwm_cleanup' EXIT

kwm_images 2
for i in 1 2; do kwm_start_src $i; kwm_start_dst $i; done
PARALLEL=1 BANDWIDTH=4MB/s kwm_cluster "$T/c.yaml" 2

"${TM[@]}" -f /dev/null new-session -d -s kw -x 70 -y 24 \
	"timeout 120 '$KAWARIMI' migrate '$T/c.yaml' --keep-source; echo EXIT=\$?; sleep 600" ||
	fail "tmux new-session"

# check NAME WIDTH: the pane now, joined, trailing blanks cut.
shots=0
check() {
	local name=$1 width=$2 final=${3:-}
	# The final check reads the history too: the table pushed the frame up.
	"${TM[@]}" capture-pane -p -J -t kw ${final:+-S -} >"$T/screen.$name" || fail "capture-pane"
	shots=$((shots + 1))
	python3 - "$T/screen.$name" "$width" "$final" <<'PY' || {
import re, sys
rows = [l.rstrip() for l in open(sys.argv[1]).read().split("\n")]
width, final = int(sys.argv[2]), sys.argv[3] == "final"
if final:
    # The last frame stays above the table, after the last message.
    end = max(i for i, l in enumerate(rows) if re.match("VM +result", l))
    rows = [l for l in rows[:end] if l]
    msgs = [i for i, l in enumerate(rows) if l.startswith("kawarimi: ")]
    rows = rows[msgs[-1] + 1:] if msgs else rows
else:
    rows = [l for l in rows if l]
    if any(l.startswith("EXIT=") or l.startswith("phase durations") for l in rows):
        sys.exit(0)     # over already: the final check looks at it
block = [i for i, l in enumerate(rows) if re.match(r"  (vm[12] |(cluster )?test: )", l)]
vm1 = [i for i in block if rows[i].startswith("  vm1 ")]
vm2 = [i for i in block if rows[i].startswith("  vm2 ")]
cl = [i for i in block if "test: " in rows[i]]
assert len(vm1) == 1 and len(vm2) == 1 and len(cl) == 1, ("lines per VM / cluster", rows)
assert block == [cl[0] - 2, cl[0] - 1, cl[0]], ("the block is not together", rows)
assert cl[0] == len(rows) - 1, ("something below the block", rows)
for i in block:
    assert len(rows[i]) < width, (f"line wider than the {width}-column pane (wrapped)", rows[i])
PY
		cat "$T/screen.$name"; fail "screen $name (pane $width columns)"; }
}

wait_for() {
	local i
	for i in $(seq 1 200); do
		"${TM[@]}" capture-pane -p -J -t kw | grep -q "$1" && return 0
		sleep 0.1
	done
	"${TM[@]}" capture-pane -p -J -t kw
	fail "the pane never showed '$1'"
}

wait_for 'cluster test'
check start 70
sleep 0.6; check wide1 70
"${TM[@]}" resize-window -t kw -x 36 -y 24
sleep 0.8; check narrow1 36
sleep 0.6; check narrow2 36
"${TM[@]}" resize-window -t kw -x 140 -y 24
sleep 0.8; check wide2 140
"${TM[@]}" resize-window -t kw -x 52 -y 24
sleep 0.8; check mid 52
wait_for 'EXIT='
"${TM[@]}" capture-pane -p -J -t kw
"${TM[@]}" capture-pane -p -J -t kw | grep -q 'EXIT=0' || fail "kawarimi migrate failed"
check end 52 final
grep -q 'cluster test: 2/2 VMs done' "$T/screen.end" || fail "no final cluster line"
grep -qE '^  vm1 switchover done' "$T/screen.end" || fail "the last frame does not say vm1 is done"
grep -qE '^vm2 +migrated' "$T/screen.end" || fail "no table after the display"
grep -q "narrow" <<<"$(ls "$T")" || fail "the narrow screens were not read"
echo "PASS ($shots screens)"
