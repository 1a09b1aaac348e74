# shellcheck shell=bash
# Sourced by the ssh:// tests (tests/qmp/test-ssh.sh,
# tests/migrate/migrate-ssh.sh): a private, real sshd on a free port of
# 127.0.0.1 with a generated host key, where root logs in with a generated
# key.  The client side is the operator's setup in miniature: an ssh
# config of our own with its known_hosts and key, given to kawarimi by
# KAWARIMI_SSH (a wrapper running `ssh -F CONFIG`, since OpenSSH reads
# ~/.ssh from the password database, not from $HOME), and a private
# XDG_RUNTIME_DIR for the masters' control sockets.
#
# The caller has a temp dir $T (removed on exit) and an array PIDS of
# processes to kill on exit, and calls kws_stop on exit.

kws_die() {
	echo "FAIL: $*" >&2
	exit 1
}

# Sessions per connection that the sshd allows (sshd's default is 10):
# enough for a VM's four sockets, few enough to test the limit.
KWS_MAX_SESSIONS=4

# kws_start_sshd: sets SSHD_PORT, SSHD_LOG, SSHD_PID and the client "ok"
# (the right key and host key); KAWARIMI_SSH and XDG_RUNTIME_DIR use it.
kws_start_sshd() {
	local try d=$T/sshd
	[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (a private sshd logs in root only as root)"; exit 77; }
	[ -x /usr/sbin/sshd ] || { echo "SKIP: /usr/sbin/sshd missing (openssh-server, tests/setup.sh)"; exit 77; }
	command -v ssh >/dev/null || { echo "SKIP: ssh missing (openssh-client)"; exit 77; }
	# Debian's unit makes sshd's privilege separation dir at boot; a
	# machine that never ran the system sshd has none.
	mkdir -p /run/sshd
	mkdir -p "$d" "$T/home"
	export HOME=$T/home
	ssh-keygen -q -t ed25519 -N '' -C kws-host -f "$d/host_key" || kws_die "ssh-keygen"
	ssh-keygen -q -t ed25519 -N '' -C kws-user -f "$d/id" || kws_die "ssh-keygen"
	ssh-keygen -q -t ed25519 -N '' -C kws-other -f "$d/id_other" || kws_die "ssh-keygen"
	cp "$d/id.pub" "$d/authorized_keys"
	SSHD_LOG=$d/sshd.log
	for try in 1 2 3 4 5; do
		SSHD_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
		cat >"$d/sshd_config" <<-EOF
			Port $SSHD_PORT
			ListenAddress 127.0.0.1
			HostKey $d/host_key
			AuthorizedKeysFile $d/authorized_keys
			PidFile none
			UsePAM no
			StrictModes no
			PermitRootLogin prohibit-password
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			LogLevel VERBOSE
			MaxSessions $KWS_MAX_SESSIONS
		EOF
		: >"$SSHD_LOG"
		/usr/sbin/sshd -D -f "$d/sshd_config" -E "$SSHD_LOG" &
		SSHD_PID=$!
		PIDS+=("$SSHD_PID")
		for _ in $(seq 50); do
			grep -q 'Server listening' "$SSHD_LOG" && break
			kill -0 "$SSHD_PID" 2>/dev/null || break
			sleep 0.1
		done
		grep -q 'Server listening' "$SSHD_LOG" && break
		kill "$SSHD_PID" 2>/dev/null	# the port was taken meanwhile: another
	done
	grep -q 'Server listening' "$SSHD_LOG" || { cat "$SSHD_LOG"; kws_die "sshd did not start"; }
	# Known by address and as localhost: a test that wants two masters
	# to one sshd names the host both ways.
	{
		echo "[127.0.0.1]:$SSHD_PORT $(cat "$d/host_key.pub")"
		echo "[localhost]:$SSHD_PORT $(cat "$d/host_key.pub")"
	} >"$d/known_hosts"
	kws_client ok "$d/id" "$d/known_hosts"
	kws_use ok
}

# kws_client NAME KEY KNOWN_HOSTS: a client setup $T/ssh-NAME (wrapper)
# with its own runtime dir, so that it never reuses another's master.
kws_client() {
	local name=$1 key=$2 kh=$3
	mkdir -p "$T/run-$name"
	cat >"$T/ssh-$name.conf" <<-EOF
		Host *
		    IdentityFile $key
		    IdentitiesOnly yes
		    IdentityAgent none
		    UserKnownHostsFile $kh
		    GlobalKnownHostsFile /dev/null
		    StrictHostKeyChecking yes
	EOF
	printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$T/ssh-$name.conf" >"$T/ssh-$name"
	chmod +x "$T/ssh-$name"
}

kws_use() {
	export KAWARIMI_SSH=$T/ssh-$1 XDG_RUNTIME_DIR=$T/run-$1
}

# The endpoint of socket PATH through our sshd (HOST: 127.0.0.1).
kws_uri() {
	echo "ssh://root@${2:-127.0.0.1}:$SSHD_PORT$1"
}

# Logins the sshd accepted so far, and connections open to it now.
kws_logins() {
	grep -c 'Accepted publickey for root' "$SSHD_LOG"
}
kws_conns() {
	ss -Htn state established "( dport = :$SSHD_PORT )" | wc -l
}
# The masters of client NAME still running (their command lines name
# the client's runtime dir).
kws_masters() {
	pgrep -fc -- "-S $T/run-$1/kawarimi-ssh/.*ControlMaster=yes"
}
# Session ssh processes of client NAME still running.
kws_sessions() {
	pgrep -fc -- "-S $T/run-$1/kawarimi-ssh/.*ControlMaster=no"
}

# Ends every master and session of our clients (they outlive sshd's
# listener: each connection has its own sshd process), then sshd's.
kws_stop() {
	local p
	for p in $(pgrep -f -- "-S $T/run-[a-z]*/kawarimi-ssh/"); do kill "$p" 2>/dev/null; done
	[ -n "${SSHD_PID:-}" ] && pkill -P "$SSHD_PID" 2>/dev/null
	return 0
}
