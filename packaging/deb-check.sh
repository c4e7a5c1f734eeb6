#!/usr/bin/env bash
# The packaging check CI runs (`make deb-check`), as root on Debian 12 or 13
# (Proxmox VE 8 or 9); `make deb-check-chroot` runs it again inside a chroot
# of the other release (packaging/deb-check-chroot.sh), on the same .debs:
#  1. build both .debs from a copy of the tree (packaging/build-deb.sh), or
#     take them from DEB_CHECK_DEBS=DIR (the chroot check: the host's build):
#     pve-hooks, and pve-hooks-dev-accountdb (the reference AccountDB); the
#     hookscript's first line in the package is the source's, the unit is in
#     /usr/lib/systemd/system (one _all.deb for Debian 12 and 13);
#  2. lintian (this release's) on both: no errors and no warnings;
#  3. install pve-hooks alone with apt: it holds no pve_hooks_devserver and
#     `pve-hooks dev-accountdb` says in one line which package to install;
#     then check files, modes, the conffile, the tmpfiles
#     directories, the hookscript copy in the snippets storage, the unit
#     (systemd-analyze verify, failing on any warning) and record its
#     `systemd-analyze security --offline=yes` exposure;
#  4. run the installed CLI under MemoryDenyWriteExecute (prctl PR_SET_MDWE);
#  5. reinstall (the upgrade path of the maintainer scripts), then install
#     pve-hooks-dev-accountdb, which the tests use;
#  6. run tests/unit and tests/integration against the INSTALLED packages with
#     /usr/bin/python3 and Debian's python3 libraries; with HOOK_BENCH=1 also
#     benchmarks/hook_latency.py --python /usr/bin/python3 on the installed package;
#  7. purge both, and check what remains (the spool only while it holds events).
# Whatever pve-hooks state existed on the machine before is moved aside and
# put back at the end. Logs: .scratch/deb-check/.
set -euo pipefail

cd "$(dirname "$0")/.."
top=$PWD
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME
export DEBIAN_FRONTEND=noninteractive
work=$top/.scratch/deb-check
unit=pve-hooks-reconciler.service
spool=/var/spool/pve-hooks
state=/var/lib/pve-hooks
snippets=/var/lib/vz/snippets
hookscript=/usr/share/pve-hooks/hookscripts/accountdb-hook
dist_packages=/usr/lib/python3/dist-packages
# One place on Debian 12 and 13 (debian/rules: execute_after_dh_installsystemd).
unit_path=/usr/lib/systemd/system/$unit
# The hookscript's #! line, `#!/usr/bin/python3 -IS`, as the source has it: no
# build tool may rewrite it (dh-python 6 would drop the -IS).
source_first_line=$(head -n1 hookscripts/accountdb-hook)
# The binary packages of the source (debian/control).
packages="pve-hooks pve-hooks-dev-accountdb"
started=$(date +%s)

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'deb-check: FAIL: %s\n' "$*" >&2; exit 1; }
mode_of() { stat -c '%a %U:%G' "$1"; }
expect_mode() { # path "mode owner:group"
	[ -e "$1" ] || fail "$1 is missing"
	[ "$(mode_of "$1")" = "$2" ] || fail "$1 is $(mode_of "$1"), expected $2"
	echo "ok  $1 $2"
}
apt_install() { apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "$@"; }
installed_packages() { for package in $packages; do dpkg -s "$package" >/dev/null 2>&1 && echo "$package"; done; true; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
rm -rf "$work"
mkdir -p "$work/saved"

# --- put the machine's own pve-hooks state aside; restore it on exit -------
created_vz=""
restore() {
	status=$?
	leftover=$(installed_packages)
	if [ -n "$leftover" ]; then
		apt-get purge -y -q $leftover >>"$work/cleanup.log" 2>&1 || true
	fi
	for path in /etc/pve-hooks "$state" "$spool" "$snippets/accountdb-hook"; do
		name=$(echo "$path" | tr / _)
		if [ -e "$work/saved/$name" ]; then
			rm -rf "$path"
			mkdir -p "$(dirname "$path")"
			mv "$work/saved/$name" "$path"
		fi
	done
	[ -z "$created_vz" ] || rm -rf "$created_vz"
	exit $status
}
trap restore EXIT
leftover=$(installed_packages)
if [ -n "$leftover" ]; then
	echo "purging the packages already installed:" $leftover
	apt-get purge -y -q $leftover >"$work/preclean.log" 2>&1
fi
for path in /etc/pve-hooks "$state" "$spool" "$snippets/accountdb-hook"; do
	if [ -e "$path" ]; then
		echo "moving the existing $path aside (restored at the end)"
		mv "$path" "$work/saved/$(echo "$path" | tr / _)"
	fi
done
if [ ! -d "$snippets" ]; then
	# The snippets directory of Proxmox's `local` storage, as on a real node.
	[ -d /var/lib/vz ] || created_vz=/var/lib/vz
	[ -n "$created_vz" ] || created_vz=$snippets
	mkdir -p "$snippets"
fi

step "0. tools the check needs"
missing=""
for pkg in lintian man-db systemd python3-venv git; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
	echo "installing:$missing"
	apt-get update -q
	apt_install $missing
else
	echo "all installed"
fi
. /etc/os-release
echo "Debian $(cat /etc/debian_version) ($VERSION_CODENAME): $(python3 --version)," \
	"lintian $(dpkg-query -W -f='${Version}' lintian), systemd $(dpkg-query -W -f='${Version}' systemd)"

# Whether the first line of hookscript copy $1 is the source's.
check_first_line() { # path what
	local first
	first=$(head -n1 "$1")
	[ "$first" = "$source_first_line" ] \
		|| fail "$2 starts with '$first', the source with '$source_first_line' (a build tool rewrote the #! line?)"
	echo "ok  $2 starts with $first"
}

if [ -n "${DEB_CHECK_DEBS:-}" ]; then
	step "1. the packages of $DEB_CHECK_DEBS (built elsewhere; not rebuilt)"
	debs=$DEB_CHECK_DEBS
else
	step "1. build"
	packaging/build-deb.sh
	debs=$top/dist
fi
deb=$(ls "$debs"/pve-hooks_*_all.deb)
devdeb=$(ls "$debs"/pve-hooks-dev-accountdb_*_all.deb)
dpkg-deb -c "$deb" | grep "\.$hookscript\$" >/dev/null \
	|| fail "the hookscript is not in the package (hookscripts/accountdb-hook missing from the tree?)"
dpkg-deb --fsys-tarfile "$deb" | tar -xOf - ".$hookscript" >"$work/hookscript-in-deb"
check_first_line "$work/hookscript-in-deb" "the hookscript in $(basename "$deb")"
dpkg-deb -c "$deb" | grep "\.$unit_path\$" >/dev/null || fail "$(basename "$deb") does not install $unit_path"
! dpkg-deb -c "$deb" | grep -E ' \./lib/' || fail "$(basename "$deb") installs into /lib (above): Debian 13 wants /usr/lib"
echo "ok  $unit_path, nothing in /lib"
# A production node carries no server it does not run.
! dpkg-deb -c "$deb" | grep pve_hooks_devserver || fail "$(basename "$deb") ships pve_hooks_devserver (above)"
dpkg-deb -c "$devdeb" | grep "\.$dist_packages/pve_hooks_devserver/command\.py$" >/dev/null \
	|| fail "$(basename "$devdeb") lacks pve_hooks_devserver/command.py"
echo "ok  pve_hooks_devserver only in $(basename "$devdeb")"

step "2. lintian on both packages (no errors, no warnings)"
if ! lintian --fail-on error,warning --tag-display-limit 0 "$deb" "$devdeb" 2>/dev/null | tee "$work/lintian.txt"; then
	fail "lintian reported errors or warnings (above); fix them or override with a justification in debian/<package>.lintian-overrides"
fi
grep -qE '^[EW]: ' "$work/lintian.txt" && fail "lintian reported errors or warnings (above)"
echo "lintian: clean"

step "3. install pve-hooks (alone, as on a production node) with apt"
missing=""
for pkg in python3-click python3-yaml python3-requests python3-urllib3 python3-systemd systemd; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
[ -z "$missing" ] || apt-get update -q
apt_install "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log"; fail "apt-get install failed"; }
grep -E 'pve-hooks|Error' "$work/install.log" | grep -v 'Reading database' || true

step "3a. files, modes, conffile"
expect_mode /usr/bin/pve-hooks "755 root:root"
expect_mode "$hookscript" "755 root:root"
check_first_line "$hookscript" "the installed $hookscript"
expect_mode /etc/pve-hooks/config.yaml "640 root:root"
expect_mode /etc/pve-hooks/hooks.d "755 root:root"
dpkg -L pve-hooks | grep -x "$unit_path" >/dev/null || fail "the package does not install $unit_path"
expect_mode "$unit_path" "644 root:root"
expect_mode /usr/lib/tmpfiles.d/pve-hooks.conf "644 root:root"
expect_mode /usr/share/man/man1/pve-hooks.1.gz "644 root:root"
expect_mode /etc/logrotate.d/pve-hooks "644 root:root"
dpkg-query -W -f='${Conffiles}\n' pve-hooks | grep -q '^ /etc/pve-hooks/config.yaml ' \
	|| fail "/etc/pve-hooks/config.yaml is not a conffile"
echo "ok  /etc/pve-hooks/config.yaml is a conffile"
pve-hooks config sample | diff -u - /etc/pve-hooks/config.yaml >/dev/null \
	|| fail "/etc/pve-hooks/config.yaml differs from 'pve-hooks config sample'"
pve-hooks --config /etc/pve-hooks/config.yaml config check
(cd / && python3 -c 'import pve_hooks, sys; sys.exit(not pve_hooks.__file__.startswith("/usr/lib/python3/dist-packages/"))') \
	|| fail "the installed pve_hooks is not in /usr/lib/python3/dist-packages"
man -w pve-hooks >/dev/null || fail "man pve-hooks finds no page"
man pve-hooks 2>/dev/null | grep 'pve-hooks attach' >/dev/null || fail "the man page lacks the attach command"
echo "ok  man pve-hooks"
! dpkg -L pve-hooks | grep pve_hooks_devserver || fail "the installed pve-hooks holds pve_hooks_devserver (above)"
[ ! -e "$dist_packages/pve_hooks_devserver" ] || fail "$dist_packages/pve_hooks_devserver exists without its package"
rc=0
(cd / && pve-hooks dev-accountdb --db x) >"$work/not-installed.txt" 2>&1 || rc=$?
[ "$rc" = 2 ] && [ "$(wc -l <"$work/not-installed.txt")" = 1 ] \
	&& grep -q '^pve-hooks: .*apt install pve-hooks-dev-accountdb' "$work/not-installed.txt" \
	|| { cat "$work/not-installed.txt"; fail "pve-hooks dev-accountdb without its package: exit $rc, expected 2 and one line"; }
echo "ok  without pve-hooks-dev-accountdb: no pve_hooks_devserver; pve-hooks dev-accountdb exits 2 with:"
cat "$work/not-installed.txt"

step "3b. tmpfiles directories (PID 1 is not systemd here: run systemd-tmpfiles ourselves)"
systemd-tmpfiles --create pve-hooks.conf
expect_mode "$spool" "700 root:root"
expect_mode "$state" "700 root:root"

step "3c. hookscript copy in the snippets storage"
[ -f "$snippets/accountdb-hook" ] && [ ! -L "$snippets/accountdb-hook" ] \
	|| fail "$snippets/accountdb-hook is missing or a symlink"
cmp -s "$hookscript" "$snippets/accountdb-hook" || fail "$snippets/accountdb-hook differs from $hookscript"
expect_mode "$snippets/accountdb-hook" "755 root:root"
check_first_line "$snippets/accountdb-hook" "the snippets copy $snippets/accountdb-hook"
pve-hooks snippets status

step "3d. the unit: systemd-analyze verify (any warning fails) and security exposure"
systemd-analyze verify "$unit_path" >"$work/verify.txt" 2>&1 || true
if [ -s "$work/verify.txt" ]; then
	cat "$work/verify.txt"
	fail "systemd-analyze verify printed the warnings above"
fi
echo "systemd-analyze verify: clean"
systemd-analyze security --offline=yes "$unit_path" >"$work/security.txt" 2>&1
exposure=$(grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' "$work/security.txt") \
	|| { cat "$work/security.txt"; fail "no exposure level in systemd-analyze security output"; }
echo "$exposure (details: $work/security.txt)"

step "3e. the hookscript works before the daemon ever ran"
(cd / && env -i PATH=/sbin:/bin:/usr/sbin:/usr/bin LC_ALL=C "$snippets/accountdb-hook" 100 pre-start </dev/null) \
	|| fail "the hookscript exited non-zero"
events=$(find "$spool/outbox/ready" -type f -name '*.json' | wc -l)
[ "$events" -ge 1 ] || fail "the hookscript left no event in $spool/outbox/ready"
echo "ok  hookscript spooled $events event(s)"

step "4. the installed CLI under MemoryDenyWriteExecute"
(cd / && python3 -) <<'EOF'
import ctypes, os, subprocess, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux >= 6.3)
    print('kernel without PR_SET_MDWE: skipped')
    sys.exit(0)
script = ('import mmap, pkgutil, importlib, pve_hooks\n'
          'for m in pkgutil.walk_packages(pve_hooks.__path__, "pve_hooks."):\n'
          '    if not m.name.endswith(".__main__"):\n'
          '        importlib.import_module(m.name)\n'
          'import requests, yaml, click, systemd.journal\n'
          'try:\n'
          '    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n'
          '    raise SystemExit("W+X memory allowed: MDWE is not in force")\n'
          'except OSError:\n'
          '    pass\n')
subprocess.run(['/usr/bin/python3', '-c', script], check=True)
for argv in (['pve-hooks', '--help'], ['pve-hooks', 'config', 'check'], ['pve-hooks', 'attached', '--json']):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
print('ok  every pve_hooks module imports and the CLI runs with W+X memory refused')
EOF

step "5. reinstall (maintainer scripts' upgrade path)"
apt_install --reinstall "$deb" >"$work/reinstall.log" 2>&1 || { cat "$work/reinstall.log"; fail "reinstall failed"; }
grep -q 'is up to date' "$work/reinstall.log" || { cat "$work/reinstall.log"; fail "postinst did not check the hookscript copy"; }
cmp -s "$hookscript" "$snippets/accountdb-hook" || fail "the hookscript copy changed on reinstall"
echo "ok  reinstall kept the hookscript copy current"

step "5b. install pve-hooks-dev-accountdb (the tests use the reference AccountDB)"
apt_install "$devdeb" >"$work/install-dev.log" 2>&1 || { cat "$work/install-dev.log"; fail "apt-get install $(basename "$devdeb") failed"; }
dpkg -L pve-hooks-dev-accountdb | grep "^$dist_packages/pve_hooks_devserver/command\.py$" >/dev/null \
	|| fail "the installed pve-hooks-dev-accountdb lacks pve_hooks_devserver/command.py"
pve-hooks dev-accountdb --help | grep -- '--listen' >/dev/null || fail "pve-hooks dev-accountdb --help does not show --listen"
echo "ok  pve-hooks dev-accountdb runs from $dist_packages/pve_hooks_devserver"

step "6. test suite against the installed package (/usr/bin/python3, Debian's libraries)"
# A venv with --system-site-packages: click, yaml, requests, urllib3 and
# systemd come from Debian (/usr/lib/python3/dist-packages); pip installs
# only the test tools (pytest, fakepve, ...) that Debian's packages on the
# machine do not already provide (the chroot check installs python3-pytest &c.
# with apt: there only fakepve, which Debian lacks, comes from PyPI).
# pve_hooks is NOT installed in it.
# The tests run from a copy of the tree in which pve_hooks/,
# pve_hooks_devserver/ and the hookscript are symlinks to the INSTALLED
# files, so imports, subprocesses
# and the tests that read the sources all see what the package installed;
# bin/pve-hooks next to the interpreter is the installed /usr/bin/pve-hooks.
venv=$work/venv
/usr/bin/python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r requirements-test.txt >"$work/pip.log" 2>&1 \
	|| { tail -n 20 "$work/pip.log"; fail "pip install -r requirements-test.txt failed"; }
ln -s /usr/bin/pve-hooks "$venv/bin/pve-hooks"
tree=$work/tree
packaging/copy-tree.sh "$tree" pve_hooks pve_hooks_devserver hookscripts/accountdb-hook
ln -s "$dist_packages/pve_hooks" "$tree/pve_hooks"
ln -s "$dist_packages/pve_hooks_devserver" "$tree/pve_hooks_devserver"
mkdir -p "$tree/hookscripts"
ln -s "$hookscript" "$tree/hookscripts/accountdb-hook"
(cd "$tree" && "$venv/bin/python" - <<'EOF'
import os, click, pve_hooks, pve_hooks_devserver, requests, urllib3, yaml
for module in (pve_hooks, pve_hooks_devserver, click, requests, urllib3, yaml):
    real = os.path.realpath(module.__file__)
    assert real.startswith('/usr/lib/python3/dist-packages/'), real
print('pve_hooks', pve_hooks.__version__, 'from', os.path.realpath(pve_hooks.__file__))
print('Debian libraries: click', click.__version__, 'requests', requests.__version__,
      'urllib3', urllib3.__version__, 'PyYAML', yaml.__version__)
import importlib.metadata
for name in ('pytest', 'pytest-mock', 'pytest-timeout', 'openapi-spec-validator', 'hypothesis', 'fakepve'):
    dist = importlib.metadata.distribution(name)
    where = 'Debian' if str(dist.locate_file('')).startswith('/usr/lib/python3/') else 'PyPI (venv)'
    print('test tool', name, dist.version, 'from', where)
EOF
)
# PYTEST_ARGS (as for make test) narrows the run: make deb-check PYTEST_ARGS="-k 'attach or snippets'".
eval "extra=(${PYTEST_ARGS:-})"
(cd "$tree" && "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider -m "not soak" "${extra[@]}" tests/unit tests/integration) \
	|| fail "tests failed against the installed package"

if [ "${HOOK_BENCH:-0}" = 1 ]; then
	step "6b. hook latency of the installed package (HOOK_BENCH=1)"
	# /usr/bin/python3 runs the installed hookscript chain; the figures go in docs/performance.md.
	(cd "$tree" && "$venv/bin/python" benchmarks/hook_latency.py --python /usr/bin/python3 ${HOOK_BENCH_ARGS:-}) \
		| tee "$work/hook-latency.txt" || fail "benchmarks/hook_latency.py failed"
fi

step "7. purge both: config and state go; the spool stays while it holds events"
apt-get purge -y -q $packages >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "apt-get purge failed"; }
grep -E '^pve-hooks:|removed|kept' "$work/purge.log" || true
for path in /etc/pve-hooks "$state" /usr/bin/pve-hooks "$unit_path" "$snippets/accountdb-hook" \
	"$dist_packages/pve_hooks" "$dist_packages/pve_hooks_devserver"; do
	[ ! -e "$path" ] || fail "$path is still there after purge"
	echo "ok  gone: $path"
done
[ -d "$spool" ] || fail "$spool was removed although it held $events event(s)"
grep -q "kept $spool: it still holds" "$work/purge.log" || fail "purge did not say why the spool was kept"
echo "ok  kept: $spool (it holds undelivered events), with a message"

step "7b. purge without pending events removes the spool"
rm -rf "$spool"
apt_install "$deb" >"$work/install2.log" 2>&1 || { cat "$work/install2.log"; fail "second install failed"; }
systemd-tmpfiles --create pve-hooks.conf
apt-get purge -y -q pve-hooks >"$work/purge2.log" 2>&1 || { cat "$work/purge2.log"; fail "second purge failed"; }
[ ! -e "$spool" ] || fail "$spool is still there after purging with no events in it"
echo "ok  gone: $spool"

printf '\ndeb-check: OK in %ss; %s\n' "$(($(date +%s) - started))" "$exposure"
