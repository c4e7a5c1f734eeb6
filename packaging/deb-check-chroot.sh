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
#  2. a fresh `debootstrap --variant=minbase RELEASE` (main, -updates,
#     -security from Debian's archive), bind-mounted onto itself, with /sys,
#     /sys/fs/cgroup (journald 257 needs it), /dev, /dev/pts, /dev/shm and
#     /run mounted below. Every command runs in its own mount and PID
#     namespace whose root IS the chroot (pivot_root, the host's tree
#     detached, a fresh /proc): the journald and full-disk tests' `unshare
#     -m --propagation private` finds a mount point at /, `nsenter -m` into
#     their namespaces lands in the chroot, not on the host, and when the
#     command ends the kernel ends whatever it left running; the release's own
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
# Not cached: a cold chroot takes about a minute (debootstrap ~20 s, apt
# ~30 s), and a fresh one each run cannot hold anything stale. Whatever
# happens, the exit trap stops the command running in the chroot (its
# namespace's processes die with it), unmounts everything, and only then
# removes the chroot; if anything is still mounted below it, nothing is
# removed and the run fails saying so.
# KEEP_CHROOT=1 leaves the (unmounted) chroot in .scratch/deb-check-chroot/.
# Needs root. Logs: .scratch/deb-check-chroot/.
# Usage: packaging/deb-check-chroot.sh [bookworm|trixie]
set -euo pipefail

cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
export DEBIAN_FRONTEND=noninteractive
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
packages="pve-hooks pve-hooks-dev-accountdb"
hookscript=/usr/share/pve-hooks/hookscripts/accountdb-hook
# Test tools and programs the installed-package tests use, from the release
# itself (fakepve is not in Debian: deb-check.sh pip-installs it into its
# --system-site-packages venv); lintian, for the chroot's build. deb-check.sh
# and build-deb.sh install their own tools (systemd, debhelper, dh-python, ...)
# with apt.
CHROOT_PACKAGES="ca-certificates lintian python3-venv python3-pytest python3-pytest-mock python3-pytest-timeout
 python3-openapi-spec-validator python3-jsonschema python3-hypothesis openssl util-linux mount logrotate prometheus"

step() { printf '\n== [chroot %s] %s\n' "${release:-?}" "$*"; }
fail() { printf 'deb-check-chroot: FAIL: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, mounts, chroot)"

host_version=$(cat /etc/debian_version)
case "$host_version" in
12.*|bookworm*) host_release=bookworm; other=trixie ;;
13.*|trixie*) host_release=trixie; other=bookworm ;;
*) fail "/etc/debian_version is '$host_version': neither Debian 12 nor 13; name the release: $0 bookworm|trixie" ;;
esac
release=${1:-$other}
case "$release" in bookworm|trixie) ;; *) fail "release '$release': bookworm or trixie" ;; esac

work=$top/.scratch/deb-check-chroot
root=$work/$release
started=$(date +%s)
timings=()
phase_start=$started
phase_done() { # name
	local now
	now=$(date +%s)
	timings+=("$(printf '%-34s %4ss' "$1" "$((now - phase_start))")")
	phase_start=$now
}

# --- mounts, and the exit trap that undoes them before anything is removed ---
mounted=()
do_mount() { # mount arguments..., the mount point last
	mount "$@"
	mounted+=("${!#}")
}
mounts_under() { # the mount points at or below $1 (/proc/self/mountinfo, field 5)
	awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo
}
stop_chroot_processes() {
	# The unshare processes in_chroot started (their ids in $work/unshare.pids):
	# killing one kills its namespace's first process (--kill-child), and with
	# it, the kernel, every process in that PID namespace.
	local pid
	[ -s "$work/unshare.pids" ] || return 0
	while read -r pid; do
		# Still ours: an unshare whose arguments name this chroot (not a reused id).
		if tr '\0\n' '  ' 2>/dev/null <"/proc/$pid/cmdline" | grep -E "^unshare .* $root /usr/bin/env " >/dev/null; then
			echo "stopping the command still running in the chroot (unshare, pid $pid)"
			kill -TERM "$pid" 2>/dev/null || true
			sleep 1
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done <"$work/unshare.pids"
	: >"$work/unshare.pids"
}
unmount_all() {
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" \
			|| echo "deb-check-chroot: cannot unmount ${mounted[i]}" >&2
	done
	mounted=()
}
remove_chroot() {
	if [ -n "$(mounts_under "$root")" ]; then
		echo "deb-check-chroot: still mounted below $root, NOT removing it:" >&2
		mounts_under "$root" >&2
		return 1
	fi
	rm -rf "$root"
}
cleanup() {
	local status=$?
	set +e
	trap '' INT TERM HUP  # a second signal must not cut the unmounting short
	stop_chroot_processes
	unmount_all
	if [ "${KEEP_CHROOT:-0}" = 1 ]; then
		[ -z "$(mounts_under "$root")" ] && echo "kept the chroot (unmounted): $root"
	elif [ -d "$root" ]; then
		remove_chroot || status=1
	fi
	exit $status
}

# Runs as the first process of a new mount and PID namespace: a fresh /proc,
# the chroot made the namespace's root (pivot_root), the host's tree detached.
ENTER_CHROOT='set -e
mount -t proc proc "$0/proc"
cd "$0"
pivot_root . .host-root
cd /
/usr/bin/umount -l /.host-root
exec /usr/sbin/chroot / "$@"'
in_chroot() { # command... : run in the chroot with a clean environment
	local pass=() name pid status=0
	for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_EXTRA_INDEX_URL \
		PIP_DEFAULT_TIMEOUT PYTEST_ARGS HOOK_BENCH HOOK_BENCH_ARGS; do
		[ -n "${!name:-}" ] && pass+=("$name=${!name}")
	done
	unshare --mount --pid --fork --kill-child --propagation private sh -c "$ENTER_CHROOT" "$root" \
		/usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 TERM=dumb \
		DEBIAN_FRONTEND=noninteractive "${pass[@]}" "$@" &
	pid=$!
	echo "$pid" >>"$work/unshare.pids"
	wait "$pid" || status=$?
	return $status
}

# What must agree between two builds of a .deb: control fields, files with
# modes and owners, the hookscript's first line. pybuild's own bookkeeping in
# the .dist-info (RECORD on Debian 12, INSTALLER on 13) is left out.
deb_summary() { # deb
	dpkg-deb -f "$1" Package Version Architecture Depends Recommends Conflicts Breaks Replaces Provides
	dpkg-deb -c "$1" | awk '{ print $1, $2, $6 }' | grep -vE '\.dist-info/(RECORD|INSTALLER|REQUESTED)$' | sort -k3
	echo "hookscript: $(dpkg-deb --fsys-tarfile "$1" | tar -xOf - ".$hookscript" 2>/dev/null | head -n1)"
}

step "host: Debian $host_version ($host_release); chroot: $release"
mkdir -p "$work"
if [ -d "$root" ] || [ -s "$work/unshare.pids" ]; then
	# An earlier run that was killed outright (SIGKILL: no trap) may have left
	# its command running and mounts.
	stop_chroot_processes
	for dir in $(mounts_under "$root" | sort -r); do umount "$dir" 2>/dev/null || umount -l "$dir" || true; done
	remove_chroot || fail "unmount them (umount -R $root) and run again"
fi
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

step "1. the host's packages (dist/)"
host_debs=$top/dist
newest_in_tree=""
deb=$(ls "$host_debs"/pve-hooks_*_all.deb 2>/dev/null || true)
if [ -n "$deb" ]; then
	newest_in_tree=$(git ls-files -z --cached --others --exclude-standard \
		| while IFS= read -r -d '' file; do [ "$file" -nt "$deb" ] && { echo "$file"; break; }; done; true)
fi
if [ -z "$deb" ] || [ ! -e "$host_debs/$(basename "$deb" | sed 's/^pve-hooks_/pve-hooks-dev-accountdb_/')" ] \
	|| [ -n "$newest_in_tree" ]; then
	echo "building them${newest_in_tree:+ ($newest_in_tree is newer than $(basename "$deb"))}"
	packaging/build-deb.sh >"$work/host-build.log" 2>&1 || { tail -n 30 "$work/host-build.log"; fail "host build failed"; }
fi
for package in $packages; do sha256sum "$host_debs/${package}"_*_all.deb; done
phase_done "host packages"

step "2. debootstrap --variant=minbase $release ($mirror)"
if ! command -v debootstrap >/dev/null; then
	apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debootstrap >/dev/null
fi
debootstrap --variant=minbase "$release" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
	|| { tail -n 30 "$work/debootstrap.log"; fail "debootstrap failed (log: $work/debootstrap.log)"; }
phase_done "debootstrap"

# The chroot onto itself first (a mount point at its /, private), then the
# kernel file systems below it.
do_mount --bind "$root" "$root"
mount --make-rprivate "$root"
mkdir "$root/.host-root"
do_mount -t sysfs sysfs "$root/sys"
# systemd-journald 257 (the private journald of the journal tests) will not
# start without a cgroup file system at /sys/fs/cgroup: the host's, not recursive.
if mountpoint -q /sys/fs/cgroup; then do_mount --bind /sys/fs/cgroup "$root/sys/fs/cgroup"; fi
do_mount --bind /dev "$root/dev"
do_mount --bind /dev/pts "$root/dev/pts"
do_mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
do_mount -t tmpfs -o mode=0755 tmpfs "$root/run"
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $release main
deb $mirror $release-updates main
deb $security_mirror $release-security main
EOF
cp /etc/resolv.conf "$root/etc/resolv.conf"
# The CA certificates this host added locally (a proxy's, say), so that apt and
# pip in the chroot reach what the host reaches.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
	mkdir -p "$root/usr/local/share/ca-certificates"
	cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
# No service starts in the chroot (policy-rc.d: "action forbidden").
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
step "   the release's own test tools: apt-get install$(echo $CHROOT_PACKAGES | sed 's/^/ /')"
in_chroot sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends $(echo $CHROOT_PACKAGES) \
	&& update-ca-certificates" >"$work/apt.log" 2>&1 \
	|| { tail -n 30 "$work/apt.log"; fail "apt-get install in the chroot failed (log: $work/apt.log)"; }
in_chroot sh -c '. /etc/os-release; echo "chroot: Debian $(cat /etc/debian_version) ($VERSION_CODENAME), $(python3 --version)"'
phase_done "apt-get install (test tools)"

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

stop_chroot_processes
unmount_all
phase_done "unmount"
printf '\ndeb-check-chroot (%s, host %s): OK in %ss\n' "$release" "$host_release" "$(($(date +%s) - started))"
printf '  %s\n' "${timings[@]}"
