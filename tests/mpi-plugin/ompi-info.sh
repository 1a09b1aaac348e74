#!/usr/bin/env bash
# ompi_info lists the component and every one of its parameters with a help
# text. ompi_info is not built by us: under ASan it needs the sanitizer
# runtime preloaded to load our instrumented component.
set -u
. "$(dirname "$0")/lib.sh"
kwb_init "$@"
if [ -n "${KAWARIMI_SANITIZE:-}" ]; then
	export LD_PRELOAD=$(kwb_asan_preload)
fi
out=$(timeout 60 ompi_info --param btl kawarimi --level 9 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: ompi_info exited $rc"; exit 1; }
# The BTL API of each Open MPI series we build for (btl_kawarimi_compat.h).
case $KWB_OMPI_MAJOR in
4) api=3.1.0 ;;
5) api=3.3.0 ;;
*) echo "FAIL: Open MPI major version '$KWB_OMPI_MAJOR' is not one kawarimi supports"; exit 1 ;;
esac
echo "$out" | grep -q "MCA btl: kawarimi (MCA v2.1.0, API v$api" || {
	echo "FAIL: component not listed with API v$api (Open MPI $KWB_OMPI_MAJOR.x)"; exit 1; }
fail=0
for p in verbose agent_socket if_include port connect_timeout_ms reconnect_timeout_ms \
	 resume_timeout_ms quiesce_timeout_ms finalize_timeout_ms exclusivity eager_limit \
	 max_send_size; do
	# The parameter line must be followed by a non-empty help line.
	if ! echo "$out" | grep -A1 "parameter \"btl_kawarimi_$p\"" | sed -n 2p |
		grep -q '[A-Za-z]'; then
		echo "FAIL: btl_kawarimi_$p missing or without help text"
		fail=1
	fi
done
excl=$(echo "$out" | sed -n 's/.*"btl_kawarimi_exclusivity" (current value: "\([0-9]*\)".*/\1/p')
if [ -z "$excl" ] || [ "$excl" -le 100 ]; then
	echo "FAIL: exclusivity '$excl' is not above tcp's 100"
	fail=1
fi
[ $fail -eq 0 ] && echo "PASS"
exit $fail
