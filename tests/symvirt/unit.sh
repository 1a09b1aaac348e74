#!/usr/bin/env bash
# The systemd unit built from agent/kawarimi-agent.service.in passes
# `systemd-analyze verify` (with ExecStart pointed at the agent we built),
# and the udev rule names the port and the unit (suite 'symvirt').
# Usage: unit.sh UNIT RULES KAWARIMI-AGENT
set -u
UNIT=$1
RULES=$2
AGENT=$(readlink -f "$3")
command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }
T=$(mktemp -d /tmp/kws-unit-XXXXXX)
trap 'rm -rf "$T"' EXIT
sed "s|^ExecStart=[^ ]*|ExecStart=$AGENT|" "$UNIT" >"$T/kawarimi-agent.service"
out=$(cd "$T" && systemd-analyze verify ./kawarimi-agent.service 2>&1)
if echo "$out" | grep -q "kawarimi-agent.service"; then
	echo "FAIL: systemd-analyze verify:"
	echo "$out"
	exit 1
fi
grep -q '^BindsTo=dev-virtio\\x2dports-org.kawarimi.symvirt.0.device$' "$UNIT" || { echo "FAIL: no BindsTo the port"; exit 1; }
grep -q 'ATTR{name}=="org.kawarimi.symvirt.0".*TAG+="systemd".*SYSTEMD_WANTS}+="kawarimi-agent.service"' "$RULES" ||
	{ echo "FAIL: the udev rule does not want the unit for the port"; exit 1; }
echo "ok   unit verified, udev rule wants it for org.kawarimi.symvirt.0"
