#!/usr/bin/env bash
# The Debian packages: dpkg-buildpackage -b on a copy of the source tree
# builds kawarimi, kawarimi-agent and openmpi-btl-kawarimi; lintian finds
# no error or warning; each package holds what it should; unpacked in a
# scratch root the tools run (kawarimi version, kawarimi-agent --help, the
# man pages) and ompi_info lists the packaged BTL, which sits in Open MPI's
# own component folder and depends on the exact Open MPI it was built for.
#
# Usage: deb.sh SOURCE-DIR   (KW_JOBS: parallel build jobs, default 2)
set -u
SRC=${1:?usage: deb.sh SOURCE-DIR}
for t in dpkg-buildpackage dh lintian ompi_info; do
	command -v $t >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
done
fail() { echo "FAIL: $*" >&2; exit 1; }
T=$(mktemp -d /tmp/kw-deb.XXXXXX)
trap 'rm -rf "$T"' EXIT

# The tree as committed plus what is not ignored: no build directories.
mkdir "$T/src"
if git -C "$SRC" rev-parse >/dev/null 2>&1; then
	git -C "$SRC" ls-files -co --exclude-standard -z |
		(cd "$SRC" && tar --null -T - -cf -) | tar -C "$T/src" -xf - || fail "copying the tree"
else
	cp -a "$SRC/." "$T/src" && rm -rf "$T/src"/build*
fi
(cd "$T/src" && DEB_BUILD_OPTIONS="nocheck parallel=${KW_JOBS:-2}" \
	dpkg-buildpackage -b -us -uc) >"$T/build.log" 2>&1 || {
	tail -40 "$T/build.log"; fail "dpkg-buildpackage -b"; }
ls "$T"/*.deb
for p in kawarimi kawarimi-agent openmpi-btl-kawarimi; do
	[ -f "$(echo "$T/${p}_"*.deb)" ] || fail "no $p package"
done

lintian --fail-on error,warning --tag-display-limit 0 "$T"/*.changes >"$T/lintian.log" 2>&1
rc=$?
cat "$T/lintian.log"
[ $rc -eq 0 ] || fail "lintian: errors or warnings above"

# Contents, per package.
has() {		# has PACKAGE PATH-REGEX
	dpkg-deb -c "$T/${1}_"*.deb | awk '{print $6}' | sed 's|^\./|/|' | grep -qE "$2" ||
		fail "$1 lacks $2"
}
has kawarimi '^/usr/bin/kawarimi$'
has kawarimi '^/usr/lib/x86_64-linux-gnu/libkawarimi-qmp\.so\.0'
has kawarimi '^/usr/include/kawarimi-qmp\.h$'
has kawarimi '^/usr/lib/x86_64-linux-gnu/pkgconfig/kawarimi-qmp\.pc$'
has kawarimi '^/usr/share/man/man5/kawarimi-cluster\.5\.gz$'
has kawarimi '^/usr/share/bash-completion/completions/kawarimi$'
has kawarimi-agent '^/usr/sbin/kawarimi-agent$'
has kawarimi-agent '^/lib/systemd/system/kawarimi-agent\.service$'
has kawarimi-agent '^/lib/udev/rules\.d/70-kawarimi-agent\.rules$'
pkglibdir=$(ompi_info --path pkglibdir --parsable | cut -d: -f3-)
has openmpi-btl-kawarimi "^$pkglibdir/mca_btl_kawarimi\.so\$"
dpkg-deb -f "$T/openmpi-btl-kawarimi_"*.deb Depends |
	grep -qF "libopenmpi3 (= $(dpkg-query -W -f='${Version}' libopenmpi3))" ||
	fail "openmpi-btl-kawarimi does not depend on this exact Open MPI: $(dpkg-deb -f "$T/openmpi-btl-kawarimi_"*.deb Depends)"

# Unpacked in a scratch root, the smoke test.
R=$T/root
for d in "$T"/*.deb; do dpkg-deb -x "$d" "$R" || fail "dpkg-deb -x $d"; done
export LD_LIBRARY_PATH=$R/usr/lib/x86_64-linux-gnu
"$R/usr/bin/kawarimi" version | grep -qx 'kawarimi [0-9.]*' || fail "kawarimi version"
"$R/usr/sbin/kawarimi-agent" --help | grep -q -- '--channel' || fail "kawarimi-agent --help"
MANWIDTH=80 man -l "$R/usr/share/man/man8/kawarimi.8.gz" 2>/dev/null | grep -q 'kawarimi migrate' ||
	fail "the packaged kawarimi(8)"
[ -n "${KAWARIMI_SANITIZE:-}" ] && unset LD_PRELOAD
OMPI_MCA_mca_base_component_path=$R$pkglibdir:$pkglibdir ompi_info | grep "MCA btl: kawarimi" ||
	fail "ompi_info does not list the packaged BTL"
echo PASS
