# Shared by the mpi-plugin tests (sourced). Usage in a test:
#   . "$(dirname "$0")/lib.sh"; kwb_init "$@"
# Arguments every test gets from meson: <component dir> <test program dir>.

kwb_init() {
	KWB_COMPONENT_DIR=$1
	KWB_PROG_DIR=$2
	shift 2
	KWB_ARGS=("$@")
	if ! command -v mpirun >/dev/null; then
		echo "SKIP: mpirun not installed"
		exit 77
	fi
	# The path replaces the default: Open MPI's own directory stays in it
	# (4.1: .../openmpi3; 5.0: .../openmpi40, its components are mostly
	# built into the libraries). Open MPI 5's PMIx reads the parameter too
	# and prints "bad prefix" for our file (open-mpi/ompi#13314): noise.
	export OMPI_MCA_mca_base_component_path="$KWB_COMPONENT_DIR:$(kwb_ompi_pkglibdir)"
	export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
	# Open MPI leaks by design; the sanitizer run would report it.
	export ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}
	export UBSAN_OPTIONS=print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
	KWB_OMPI_MAJOR=$(kwb_ompi_major)
}

kwb_ompi_pkglibdir() {
	ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p'
}

# The installed Open MPI's major version (4 or 5): the few options that
# differ (one-sided components, mpirun's oob parameters) depend on it.
kwb_ompi_major() {
	sed -n 's/^#define OMPI_MAJOR_VERSION \([0-9]*\)$/\1/p' \
		"$(mpicc --showme:incdirs | awk '{print $1}')/mpi.h"
}

# The sanitizer runtime to preload into programs we did not build.
kwb_asan_preload() {
	local lib
	for lib in libasan.so libubsan.so; do
		gcc -print-file-name=$lib
	done | tr '\n' ':'
}

# kwb_lo_job NP OKLINE MPIRUN_ARGS...: NP ranks over self,kawarimi on
# loopback, no agent; MPIRUN_ARGS end with the program and its arguments.
# Prints the output; fails unless mpirun succeeded and OKLINE is in it.
kwb_lo_job() {
	local np=$1 ok=$2 out rc
	shift 2
	out=$(timeout 250 mpirun --oversubscribe -np "$np" --mca pml ob1 --mca btl self,kawarimi \
		--mca btl_kawarimi_if_include lo --mca btl_kawarimi_agent_socket "" "$@" 2>&1)
	rc=$?
	echo "$out"
	if [ $rc -ne 0 ]; then
		echo "FAIL: mpirun exited $rc"
		return 1
	fi
	grep -qF "$ok" <<<"$out" || {
		echo "FAIL: no \"$ok\" from rank 0"
		return 1
	}
}
