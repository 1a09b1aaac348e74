# Shared by the mpi-plugin tests (sourced). Usage in a test:
#   . "$(dirname "$0")/lib.sh"; kwb_init "$@"
# Arguments every test gets from meson: <component dir> <test program dir>.

kwb_init() {
	KWB_COMPONENT_DIR=$1
	KWB_PROG_DIR=$2
	shift 2
	KWB_ARGS=("$@")
	export OMPI_MCA_mca_base_component_path="$KWB_COMPONENT_DIR:/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3"
	export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
	# Open MPI leaks by design; the sanitizer run would report it.
	export ASAN_OPTIONS=detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}
	export UBSAN_OPTIONS=print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
	if ! command -v mpirun >/dev/null; then
		echo "SKIP: mpirun not installed"
		exit 77
	fi
}

# The sanitizer runtime to preload into programs we did not build.
kwb_asan_preload() {
	local lib
	for lib in libasan.so libubsan.so; do
		gcc -print-file-name=$lib
	done | tr '\n' ':'
}
