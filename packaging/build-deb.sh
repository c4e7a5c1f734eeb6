#!/usr/bin/env bash
# Build the .debs of the pve-hooks source (pve-hooks, the production package,
# and pve-hooks-dev-accountdb, the reference AccountDB for test and demo
# machines) from a copy of the tree (files git tracks plus untracked,
# non-ignored ones: a .venv, build output or caches never leak in) and copy
# them into dist/ (or DIST_DIR). Installs the build dependencies with apt if
# missing. The same source gives the same _all.deb on Debian 12 and 13
# (packaging/deb-check-chroot.sh compares the two builds).
# Usage: [DIST_DIR=DIR] packaging/build-deb.sh   (as root on Debian 12 or 13, from anywhere)
set -euo pipefail

cd "$(dirname "$0")/.."
top=$PWD
# Debian's tools and Debian's python3: no pyenv or venv shim first on PATH.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
# build-essential: dpkg-checkbuilddeps requires it even for Architecture: all.
BUILD_DEPS="build-essential debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools
 python3-click python3-yaml python3-requests python3-urllib3 python3-systemd python3-prometheus-client dpkg-dev fakeroot man-db"

step() { printf '\n== %s\n' "$*"; }

step "build dependencies"
missing=""
for pkg in $BUILD_DEPS; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
else
	echo "all installed"
fi

step "copy of the tree in .scratch/deb"
work=$top/.scratch/deb
dist=${DIST_DIR:-$top/dist}
rm -rf "$work"
mkdir -p "$dist"
packaging/copy-tree.sh "$work/src"

step "dpkg-buildpackage -us -uc -b"
(cd "$work/src" && dpkg-buildpackage -us -uc -b) > "$work/build.log" 2>&1 || {
	tail -n 60 "$work/build.log" >&2
	echo "build failed; full log: $work/build.log" >&2
	exit 1
}
packages="pve-hooks pve-hooks-dev-accountdb"
for package in $packages; do
	rm -f "$dist/${package}"_*.deb
	cp "$work/${package}"_*.deb "$dist/"
	ls -l "$dist/${package}"_*.deb
done
