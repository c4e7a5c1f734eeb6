# Shared by packaging/deb-check-chroot.sh and packaging/deb-upgrade-check.sh
# (sourced, not run): a fresh Debian chroot to run checks in, and its safe
# removal. Before sourcing, set check_name (messages; logs and the chroot go
# to .scratch/<check_name>/). Sourcing moves to the top of the tree (top),
# sets Debian's PATH, and sets work; chroot_use RELEASE sets release and root.
#
# The chroot is a fresh `debootstrap --variant=minbase` (main, -updates,
# -security from Debian's archive), bind-mounted onto itself, with /sys,
# /sys/fs/cgroup (journald 257 needs it), /dev, /dev/pts, /dev/shm and /run
# mounted below. in_chroot runs each command in its own mount and PID
# namespace whose root IS the chroot (pivot_root, the host's tree detached, a
# fresh /proc): a test's `unshare -m --propagation private` finds a mount
# point at /, `nsenter -m` into its namespaces lands in the chroot, not on
# the host, and when the command ends the kernel ends whatever it left
# running. No service starts (policy-rc.d). Whatever happens, the exit trap
# stops the command running in the chroot, unmounts everything, and only
# then removes the chroot; if anything is still mounted below it, nothing is
# removed and the run fails saying so. KEEP_CHROOT=1 keeps it (unmounted).

cd "$(dirname "${BASH_SOURCE[0]}")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
export DEBIAN_FRONTEND=noninteractive
work=$top/.scratch/$check_name
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
packages="pve-hooks pve-hooks-dev-accountdb"
hookscript=/usr/share/pve-hooks/hookscripts/accountdb-hook
host_debs=$top/dist

step() { printf '\n== [%s %s] %s\n' "$check_name" "${release:-?}" "$*"; }
fail() { printf '%s: FAIL: %s\n' "$check_name" "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root (debootstrap, mounts, chroot)"

# The host's release (/etc/debian_version) and the other one.
host_version=$(cat /etc/debian_version)
case "$host_version" in
12.*|bookworm*) host_release=bookworm; other_release=trixie ;;
13.*|trixie*) host_release=trixie; other_release=bookworm ;;
*) fail "/etc/debian_version is '$host_version': neither Debian 12 nor 13" ;;
esac

started=$(date +%s)
timings=()
phase_start=$started
phase_done() { # name: the time since the previous phase ended
	local now
	now=$(date +%s)
	timings+=("$(printf '%-34s %4ss' "$1" "$((now - phase_start))")")
	phase_start=$now
}
print_timings() {
	printf '\n%s (%s, host %s): OK in %ss\n' "$check_name" "$release" "$host_release" "$(($(date +%s) - started))"
	printf '  %s\n' "${timings[@]}"
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
			|| echo "$check_name: cannot unmount ${mounted[i]}" >&2
	done
	mounted=()
}
remove_chroot() {
	if [ -n "$(mounts_under "$root")" ]; then
		echo "$check_name: still mounted below $root, NOT removing it:" >&2
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

chroot_use() { # release: set release and root; clear what a killed run left; arm the exit trap
	release=$1
	case "$release" in bookworm|trixie) ;; *) fail "release '$release': bookworm or trixie" ;; esac
	root=$work/$release
	mkdir -p "$work"
	if [ -d "$root" ] || [ -s "$work/unshare.pids" ]; then
		# An earlier run killed outright (SIGKILL: no trap) may have left its
		# command running and mounts.
		stop_chroot_processes
		for dir in $(mounts_under "$root" | sort -r); do umount "$dir" 2>/dev/null || umount -l "$dir" || true; done
		remove_chroot || fail "unmount them (umount -R $root) and run again"
	fi
	find "$work" -maxdepth 1 -type f -delete  # the last run's logs
	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM HUP
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

set_sources() { # release: the chroot's apt sources
	cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $1 main
deb $mirror $1-updates main
deb $security_mirror $1-security main
EOF
}

chroot_create() { # debootstrap $release into $root and mount what it needs
	step "debootstrap --variant=minbase $release ($mirror)"
	if ! command -v debootstrap >/dev/null; then
		apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends debootstrap >/dev/null
	fi
	debootstrap --variant=minbase "$release" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
		|| { tail -n 30 "$work/debootstrap.log"; fail "debootstrap failed (log: $work/debootstrap.log)"; }
	# The chroot onto itself first (a mount point at its /, private), then
	# the kernel file systems below it.
	do_mount --bind "$root" "$root"
	mount --make-rprivate "$root"
	mkdir "$root/.host-root"
	do_mount -t sysfs sysfs "$root/sys"
	# systemd-journald 257 (the journal tests' private journald) will not start
	# without a cgroup file system at /sys/fs/cgroup: the host's, not recursive.
	if mountpoint -q /sys/fs/cgroup; then do_mount --bind /sys/fs/cgroup "$root/sys/fs/cgroup"; fi
	do_mount --bind /dev "$root/dev"
	do_mount --bind /dev/pts "$root/dev/pts"
	do_mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
	do_mount -t tmpfs -o mode=0755 tmpfs "$root/run"
	set_sources "$release"
	cp /etc/resolv.conf "$root/etc/resolv.conf"
	# The CA certificates this host added locally (a proxy's, say), so that
	# apt and pip in the chroot reach what the host reaches.
	if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
		mkdir -p "$root/usr/local/share/ca-certificates"
		cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
	fi
	# No service starts in the chroot (policy-rc.d: "action forbidden").
	printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
	chmod 755 "$root/usr/sbin/policy-rc.d"
	phase_done "debootstrap $release"
}

chroot_apt_install() { # packages...: apt-get update and install in the chroot (log: $work/apt.log)
	step "apt-get install $*"
	in_chroot sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends $* \
		&& { [ ! -x /usr/sbin/update-ca-certificates ] || update-ca-certificates; }" >>"$work/apt.log" 2>&1 \
		|| { tail -n 30 "$work/apt.log"; fail "apt-get install in the chroot failed (log: $work/apt.log)"; }
	in_chroot sh -c '. /etc/os-release; echo "chroot: Debian $(cat /etc/debian_version) ($VERSION_CODENAME), $(python3 --version 2>&1)"'
}

host_packages() { # the host's .debs in dist/, built when missing or older than the tree
	local deb newest=""
	step "the host's packages (dist/)"
	deb=$(ls "$host_debs"/pve-hooks_*_all.deb 2>/dev/null || true)
	if [ -n "$deb" ]; then
		newest=$(git ls-files -z --cached --others --exclude-standard \
			| while IFS= read -r -d '' file; do [ "$file" -nt "$deb" ] && { echo "$file"; break; }; done; true)
	fi
	if [ -z "$deb" ] || ! ls "$host_debs"/pve-hooks-dev-accountdb_*_all.deb >/dev/null 2>&1 || [ -n "$newest" ]; then
		echo "building them${newest:+ ($newest is newer than $(basename "$deb"))}"
		packaging/build-deb.sh >"$work/host-build.log" 2>&1 || { tail -n 30 "$work/host-build.log"; fail "host build failed"; }
	fi
	for package in $packages; do sha256sum "$host_debs/${package}"_*_all.deb; done
	phase_done "host packages"
}

chroot_done() { # stop, unmount (the exit trap removes the chroot)
	stop_chroot_processes
	unmount_all
	phase_done "unmount"
}
