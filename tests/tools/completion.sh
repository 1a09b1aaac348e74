#!/usr/bin/env bash
# Shell completion as a shell runs it: the bash script under
# bash-completion (COMP_WORDS as bash sets them, COMPREPLY read back) and
# the zsh one with zsh's completion builtins replaced by ones that print
# what they were given.  Subcommands, options, option values, cluster
# files, lab verbs, and QMP command names from a real QEMU's socket.
set -u
KAWARIMI=${KAWARIMI:?set by meson}
SRC=${SRC:?set by meson}
BC=/usr/share/bash-completion/bash_completion
[ -r "$BC" ] || { echo "SKIP: bash-completion not installed"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
T=$(mktemp -d /tmp/kw-completion.XXXXXX)
QPID=
trap '[ -n "$QPID" ] && kill $QPID 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT
# Completion runs "kawarimi" as the user typed it: from PATH.
export PATH=$(dirname "$KAWARIMI"):$PATH
mkdir "$T/files" && touch "$T/files/c.yaml" "$T/files/notes.txt" && cd "$T/files" || exit 1

if command -v qemu-system-x86_64 >/dev/null; then
	qemu-system-x86_64 -machine none -nodefaults -display none \
		-qmp "unix:$T/q.sock,server=on,wait=off" 2>/dev/null &
	QPID=$!
	for i in $(seq 50); do [ -S "$T/q.sock" ] && break; sleep 0.1; done
fi

# bash: COMPREPLY for the words given (the last one is being typed).
bcomp() {
	bash -c '. "$1"; . "$2"; shift 2
		COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
		_kawarimi kawarimi "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"
		printf "%s\n" "${COMPREPLY[@]}" | sort' _ "$BC" "$SRC/completion/kawarimi.bash" "$@"
}
# zsh: what compadd/_describe/_files were given, as zsh's autoload would
# run the file: with words and CURRENT set.
zcomp() {
	zsh -fc 'compadd() { [[ $1 == -- ]] && shift; print -l -- "$@" }
		_describe() { local a=${@[-1]}; print -l -- ${(P)a} }
		_files() { print -- "FILES $*" }
		f=$1; shift; words=("$@"); CURRENT=$#
		source $f | sort' _ "$SRC/completion/_kawarimi" "$@"
}

want() {	# want WHAT GOT EXPECTED
	[ "$2" = "$3" ] || fail "$1: got [$(echo $2)], expected [$(echo $3)]"
}

subs=$(kawarimi help | awk '/^Subcommands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }' | sort)
verbs=$(grep -oE '^[a-z]+\)' "$SRC/lab/lab.sh" | tr -d ')' | sort)

want "bash: kawarimi mi<TAB>" "$(bcomp kawarimi mi)" migrate
want "bash: kawarimi <TAB>" "$(bcomp kawarimi '' | grep -v '^--')" "$subs"
want "bash: migrate --st<TAB>" "$(bcomp kawarimi migrate --st)" --storage
want "bash: migrate --storage <TAB>" "$(bcomp kawarimi migrate --storage '')" "$(printf '%s\n' full incremental shared)"
want "bash: report --format m<TAB>" "$(bcomp kawarimi report r.json --format m)" markdown
want "bash: report --p<TAB>" "$(bcomp kawarimi report r.json --p)" --plot
want "bash: migrate <TAB> (cluster files)" "$(bcomp kawarimi migrate '')" c.yaml
want "bash: lab <TAB>" "$(bcomp kawarimi lab '')" "$verbs"
want "bash: agent SOCK <TAB>" "$(bcomp kawarimi agent s.sock '' | tr '\n' ' ')" \
	"hello inventory query-commands quiesce resume status "

if command -v zsh >/dev/null; then
	want "zsh: kawarimi <TAB>" "$(zcomp kawarimi '' | cut -d: -f1)" "$subs"
	zcomp kawarimi '' | grep -q '^migrate:move every node VM' || fail "zsh: no description for migrate"
	want "zsh: migrate --storage <TAB>" "$(zcomp kawarimi migrate --storage '')" \
		"$(printf '%s\n' full incremental shared)"
	zcomp kawarimi migrate --j | grep -qx -- --json || fail "zsh: migrate --j<TAB> lacks --json"
	zcomp kawarimi migrate --j | grep -qx -- --journal || fail "zsh: migrate --j<TAB> lacks --journal"
	want "zsh: migrate <TAB>" "$(zcomp kawarimi migrate '')" "FILES -g *.(yaml|yml)"
	want "zsh: lab <TAB>" "$(zcomp kawarimi lab '')" "$verbs"
else
	echo "zsh not installed: its completion not run"
fi

if [ -S "$T/q.sock" ]; then
	bcomp kawarimi qmp "$T/q.sock" query-sta | grep -qx query-status || fail "bash: qmp SOCK query-sta<TAB> lacks query-status"
	bcomp kawarimi qmp "$T/q.sock" query-sta | grep -qv "^query-sta" && fail "bash: qmp SOCK query-sta<TAB> offers other words"
	n=$(bcomp kawarimi qmp "$T/q.sock" '' | wc -l)
	[ "$n" -ge 50 ] || fail "bash: qmp SOCK <TAB> offered $n commands"
	bcomp kawarimi qmp --timeout 5 "$T/q.sock" '' | grep -qx device_del ||
		fail "bash: qmp --timeout 5 SOCK <TAB> lacks device_del"
	command -v zsh >/dev/null &&
		{ zcomp kawarimi qmp "$T/q.sock" query-sta | grep -qx query-status ||
			fail "zsh: qmp SOCK <TAB> lacks query-status"; }
	want "bash: qmp /nonexistent <TAB>" "$(bcomp kawarimi qmp /nonexistent/q.sock '')" ""
else
	echo "no QEMU: QMP command names not checked"
fi
echo PASS
