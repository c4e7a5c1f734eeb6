#!/usr/bin/env bash
# The packaging check on the OTHER Debian release, in a chroot (CI runs it
# after `make deb-check`, as `make deb-check-chroot`): Proxmox VE 9 is Debian
# 13 "trixie", PVE 8 Debian 12 "bookworm", and a cluster being upgraded runs
# both, so ONE pve-hooks_*_all.deb must install, pass and be lintian-clean on
# both. The host's release comes from /etc/debian_version: on Debian 12 the
# chroot is trixie, on Debian 13 bookworm (or name it: RELEASE argument).
#
#  1. the host's .debs (dist/; built by packaging/build-deb.sh when missing or
#     older than the tree): the packages both checks install;
#  2. a fresh chroot of RELEASE (packaging/chroot-lib.sh: debootstrap
#     --variant=minbase, every command in its own mount and PID namespace
#     rooted in the chroot, so that the journald and full-disk tests' private
#     mount namespaces work there), with the release's own
#     python3-pytest, -pytest-mock, -pytest-timeout, -openapi-spec-validator,
#     -jsonschema, prometheus (promtool), logrotate, openssl;
#  3. the source built INSIDE the chroot with the release's debhelper and
#     dh-python (packaging/build-deb.sh): the same control fields, files and
#     modes as the host's build, and the hookscript's first line is the
#     source's (dh-python 6 would rewrite it); linted by both lintians;
#  4. packaging/deb-check.sh inside the chroot on the HOST's .debs
#     (DEB_CHECK_DEBS): the release's lintian, apt install, file checks, the
#     unit, MDWE, reinstall, tests/unit and tests/integration with the
#     release's /usr/bin/python3 and python3 libraries, purge. HOOK_BENCH=1
#     adds benchmarks/hook_latency.py there.
#
# Not cached: a cold chroot takes about a minute (debootstrap ~20-30 s, apt
# ~30 s), and a fresh one each run cannot hold anything stale. Whatever
# happens, the exit trap unmounts everything before it removes the chroot.
# KEEP_CHROOT=1 leaves the (unmounted) chroot in .scratch/deb-check-chroot/.
# Needs root. Logs: .scratch/deb-check-chroot/.
# Usage: packaging/deb-check-chroot.sh [bookworm|trixie]
set -euo pipefail
check_name=deb-check-chroot
. "$(dirname "$0")/chroot-lib.sh"
# Test tools and programs the installed-package tests use, from the release
# itself (fakepve is not in Debian: deb-check.sh pip-installs it into its
# --system-site-packages venv); lintian, for the chroot's build. deb-check.sh
# and build-deb.sh install their own tools (systemd, debhelper, dh-python, ...)
# with apt.
CHROOT_PACKAGES="ca-certificates lintian python3-venv python3-pytest python3-pytest-mock python3-pytest-timeout
 python3-openapi-spec-validator python3-jsonschema python3-hypothesis openssl util-linux mount logrotate prometheus"

chroot_use "${1:-$other_release}"
step "host: Debian $host_version ($host_release); chroot: $release"
host_packages
chroot_create
# shellcheck disable=SC2086
chroot_apt_install $CHROOT_PACKAGES
phase_done "apt-get install (test tools)"

# What must agree between two builds of a .deb: control fields, files with
# modes and owners, the hookscript's first line. pybuild's own bookkeeping in
# the .dist-info (RECORD on Debian 12, INSTALLER on 13) is left out.
deb_summary() { # deb
	dpkg-deb -f "$1" Package Version Architecture Depends Recommends Conflicts Breaks Replaces Provides
	dpkg-deb -c "$1" | awk '{ print $1, $2, $6 }' | grep -vE '\.dist-info/(RECORD|INSTALLER|REQUESTED)$' | sort -k3
	echo "hookscript: $(dpkg-deb --fsys-tarfile "$1" | tar -xOf - ".$hookscript" 2>/dev/null | head -n1)"
}

# The tree as git sees it, and the host's packages beside it.
packaging/copy-tree.sh "$root/src"
mkdir -p "$root/debs/host" "$root/debs/$release"
cp "$host_debs"/pve-hooks_*_all.deb "$host_debs"/pve-hooks-dev-accountdb_*_all.deb "$root/debs/host/"

step "3. build the source in the chroot ($release's debhelper and dh-python)"
in_chroot sh -c "cd /src && DIST_DIR=/debs/$release packaging/build-deb.sh" >"$work/build.log" 2>&1 \
	|| { tail -n 40 "$work/build.log"; fail "the build in the $release chroot failed (log: $work/build.log)"; }
in_chroot dpkg-query -W -f='${Package} ${Version}\n' debhelper dh-python
source_first_line=$(head -n1 hookscripts/accountdb-hook)
for package in $packages; do
	host_deb=$(ls "$root/debs/host/${package}"_*_all.deb)
	chroot_deb=$(ls "$root/debs/$release/${package}"_*_all.deb)
	deb_summary "$host_deb" >"$work/$package.host.txt"
	deb_summary "$chroot_deb" >"$work/$package.$release.txt"
	diff -u "$work/$package.host.txt" "$work/$package.$release.txt" \
		|| fail "$package built on $release differs from the host's build (above)"
	echo "ok  $package: the $release build has the host build's control fields, files and modes"
done
chroot_first_line=$(grep '^hookscript: ' "$work/pve-hooks.$release.txt" | cut -d' ' -f2-)
[ "$chroot_first_line" = "$source_first_line" ] \
	|| fail "the hookscript built on $release starts with '$chroot_first_line', the source with '$source_first_line'"
echo "ok  the hookscript built on $release starts with $chroot_first_line"
phase_done "build in the chroot, compare"

step "3b. lintian on the $release build: $release's and the host's (no errors, no warnings)"
in_chroot bash -o pipefail -c "lintian --fail-on error,warning --tag-display-limit 0 /debs/$release/*.deb 2>&1 \
	| { grep -v 'running with root privileges' || true; }" \
	| tee "$work/lintian-$release-build.txt" || fail "$release's lintian: errors or warnings on the $release build (above)"
lintian --fail-on error,warning --tag-display-limit 0 "$root/debs/$release"/*.deb 2>/dev/null \
	| tee "$work/lintian-$release-build-host.txt" || fail "the host's lintian: errors or warnings on the $release build (above)"
! grep -qE '^[EW]: ' "$work/lintian-$release-build.txt" "$work/lintian-$release-build-host.txt" \
	|| fail "lintian reported errors or warnings (above)"
echo "lintian ($release, $host_release) on the $release build: clean"
phase_done "lintian on the chroot build"

step "4. packaging/deb-check.sh in the chroot, on the host's packages"
in_chroot sh -c "cd /src && DEB_CHECK_DEBS=/debs/host packaging/deb-check.sh" 2>&1 | tee "$work/deb-check.log" \
	|| fail "packaging/deb-check.sh failed in the $release chroot (log: $work/deb-check.log)"
[ ! -e "$root/src/.scratch/deb-check/hook-latency.txt" ] || cp "$root/src/.scratch/deb-check/hook-latency.txt" "$work/"
phase_done "deb-check.sh in the chroot"

chroot_done
print_timings
