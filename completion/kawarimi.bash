# bash completion for kawarimi(8)                            -*- shell-script -*-
# Subcommands and options are read from the kawarimi being completed
# (`kawarimi help`, `kawarimi SUB --help`), so they cannot drift from it;
# QMP command names come from the socket given (query-commands).

_kawarimi_subcommands()
{
	"$1" help 2>/dev/null | awk '/^Subcommands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }'
}

_kawarimi_options()
{
	"$1" "$2" --help 2>&1 | grep -o -- '--[a-z][a-z-]*' | sort -u
}

# The QEMU behind SOCKET lists its commands; nothing if it does not answer.
_kawarimi_qmp_commands()
{
	"$1" qmp --timeout 2 "$2" query-commands 2>/dev/null |
		sed -n 's/^ *"name": "\(.*\)".*/\1/p' | sort
}

_kawarimi()
{
	local cur prev words cword
	_init_completion || return

	local kw=${words[0]} sub=${words[1]} i
	if ((cword == 1)); then
		COMPREPLY=($(compgen -W "$(_kawarimi_subcommands "$kw") --help --version" -- "$cur"))
		return
	fi
	case $prev in
	--storage) COMPREPLY=($(compgen -W "incremental full shared" -- "$cur")); return ;;
	--format) COMPREPLY=($(compgen -W "table json markdown" -- "$cur")); return ;;
	--plot) _filedir png; return ;;
	--report | --journal) _filedir; return ;;
	--timeout | --events | --nodes | --rate | --rtt) return ;;
	--hotplug) COMPREPLY=($(compgen -W "acpi native" -- "$cur")); return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$(_kawarimi_options "$kw" "$sub")" -- "$cur"))
		return
	fi
	# The positional arguments before this one.
	local pos=()
	for ((i = 2; i < cword; i++)); do
		case ${words[i]} in
		--timeout | --storage | --report | --journal | --plot | --format | --events) ((i++)) ;;
		-*) ;;
		*) pos+=("${words[i]}") ;;
		esac
	done
	case $sub in
	plan | migrate) ((${#pos[@]} == 0)) && _filedir '@(yaml|yml)' ;;
	report) ((${#pos[@]} == 0)) && _filedir ;;
	recover) ((${#pos[@]} == 0)) && _filedir '@(yaml|yml)' ;;
	qmp)
		if ((${#pos[@]} == 0)); then
			_filedir
		elif ((${#pos[@]} == 1)); then
			COMPREPLY=($(compgen -W "$(_kawarimi_qmp_commands "$kw" "${pos[0]}")" -- "$cur"))
		fi
		;;
	agent)
		if ((${#pos[@]} == 0)); then
			_filedir
		elif ((${#pos[@]} == 1)); then
			COMPREPLY=($(compgen -W "hello query-commands inventory status quiesce resume" -- "$cur"))
		fi
		;;
	lab)
		if ((${#pos[@]} == 0)); then
			COMPREPLY=($(compgen -W "up status down env console exec incoming qmp" -- "$cur"))
		elif [[ ${pos[0]} == incoming ]] || { [[ ${pos[0]} == qmp ]] && ((${#pos[@]} == 2)); }; then
			COMPREPLY=($(compgen -W "a b" -- "$cur"))
		fi
		;;
	esac
} &&
	complete -F _kawarimi kawarimi

# ex: filetype=sh
