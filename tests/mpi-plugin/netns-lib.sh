# Two "node" network namespaces and a third one for mpirun, as the BTL's
# namespace tests and bench/btl-bench.sh build them (sourced; plain sh).
# mpirun needs a namespace that reaches every node: PMIx listens on
# loopback by default, so the nodes and mpirun meet on a bridge in M.

# kwn_del NS...: the namespaces and every process still inside them.
kwn_del() {
	local ns pid
	for ns in "$@"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			kill -9 "$pid" 2>/dev/null
		done
		ip netns del "$ns" 2>/dev/null
	done
	return 0
}

# kwn_add NS...: fresh namespaces with loopback up.
kwn_add() {
	local ns
	for ns in "$@"; do
		ip netns add "$ns" && ip -n "$ns" link set lo up || return 1
	done
}

# kwn_veth NS_A IF_A NS_B IF_B NET: a veth pair, NET.1/24 on IF_A and
# NET.2/24 on IF_B (NET like 10.77.1), both up.
kwn_veth() {
	ip link add "$2" netns "$1" type veth peer name "$4" netns "$3" &&
	ip -n "$1" addr add "$5.1/24" dev "$2" &&
	ip -n "$3" addr add "$5.2/24" dev "$4" &&
	ip -n "$1" link set "$2" up &&
	ip -n "$3" link set "$4" up
}

# kwn_mpirun_net M PFX NET NS...: a bridge PFX-br... in M at NET.1, and
# for node i (from 0) a veth named PFX inside it with NET.(i+2).
kwn_mpirun_net() {
	local m=$1 pfx=$2 net=$3 i=0 ns
	shift 3
	ip -n "$m" link add "${pfx}br" type bridge &&
	ip -n "$m" addr add "$net.1/24" dev "${pfx}br" &&
	ip -n "$m" link set "${pfx}br" up || return 1
	for ns in "$@"; do
		ip link add "$pfx$i" netns "$m" type veth peer name "$pfx" netns "$ns" &&
		ip -n "$m" link set "$pfx$i" master "${pfx}br" up &&
		ip -n "$ns" addr add "$net.$((i + 2))/24" dev "$pfx" &&
		ip -n "$ns" link set "$pfx" up || return 1
		i=$((i + 1))
	done
}
