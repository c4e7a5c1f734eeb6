#!/usr/bin/env bash
# The Proxmox VE 8 -> 9 upgrade of a node with pve-hooks installed, on its
# Debian part (CI runs it as `make deb-upgrade-check`): a Debian 12 chroot
# (packaging/chroot-lib.sh) with the host's pve-hooks_*_all.deb installed as
# on a production node and events waiting in its outbox, dist-upgraded to
# Debian 13 as docs/install.md says. Then, with Python 3.13 and trixie's
# libraries: pve-hooks is still installed and imports from
# /usr/lib/python3/dist-packages, the events written under Python 3.11 are
# all still waiting and readable (`pve-hooks outbox list`), the hookscript
# (its first line untouched) records the next event, the snippets copy is
# current, the unit verifies with systemd 257. What a chroot cannot show: the
# daemon's restart itself (no systemd as PID 1 here); the unit is enabled,
# and the reboot that ends the PVE upgrade starts it on the new Python.
# Needs root. Logs: .scratch/deb-upgrade-check/.
# Usage: packaging/deb-upgrade-check.sh
set -euo pipefail
check_name=deb-upgrade-check
. "$(dirname "$0")/chroot-lib.sh"
unit=/usr/lib/systemd/system/pve-hooks-reconciler.service
snippet=/var/lib/vz/snippets/accountdb-hook
source_first_line=$(head -n1 hookscripts/accountdb-hook)

chroot_use bookworm
step "host: Debian $host_version ($host_release); chroot: bookworm, upgraded to trixie"
host_packages
chroot_create
mkdir -p "$root/debs" "$root/var/lib/vz/snippets"
cp "$host_debs"/pve-hooks_*_all.deb "$root/debs/"

step "1. Debian 12 (PVE 8): install pve-hooks, spool three events"
# systemd (systemd-tmpfiles, systemd-analyze) and man-db (the unit's
# Documentation=man:pve-hooks(1), which systemd-analyze verify checks), as on a node.
chroot_apt_install systemd man-db '/debs/pve-hooks_*_all.deb'  # the glob is the chroot shell's
in_chroot sh -ec "systemd-tmpfiles --create pve-hooks.conf
for phase in pre-start post-start pre-stop; do env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin $snippet 100 \$phase </dev/null; done
python3 --version
pve-hooks outbox list" | tee "$work/before.txt"
waiting_before=$(in_chroot find /var/spool/pve-hooks/outbox/ready -type f -name '*.json' | sort)
[ "$(echo "$waiting_before" | wc -l)" = 3 ] || fail "expected 3 events waiting before the upgrade, found: $waiting_before"
phase_done "install on bookworm, spool"

step "2. apt full-upgrade to Debian 13 (PVE 9's base), as docs/install.md describes"
set_sources trixie
in_chroot sh -c "apt-get update -q && apt-get full-upgrade -y -q -o Dpkg::Options::=--force-confdef \
	-o Dpkg::Options::=--force-confold" >"$work/upgrade.log" 2>&1 \
	|| { tail -n 30 "$work/upgrade.log"; fail "the dist-upgrade failed (log: $work/upgrade.log)"; }
grep -E '^(Setting up|Unpacking) (pve-hooks|python3|python3-urllib3|python3-requests|python3-click|python3-yaml|python3-systemd|systemd) ' \
	"$work/upgrade.log" | sed 's/^/  /' || true
phase_done "full-upgrade to trixie"

step "3. Debian 13: the package, the outbox, the hookscript"
in_chroot sh -ec '. /etc/os-release; echo "Debian $(cat /etc/debian_version) ($VERSION_CODENAME), $(python3 --version)"'
in_chroot dpkg-query -W -f='${Package} ${Version} ${db:Status-Abbrev}\n' pve-hooks | grep -E '^pve-hooks .* ii $' \
	|| fail "pve-hooks is not installed after the upgrade"
in_chroot python3 -c 'import sys, pve_hooks; assert sys.version_info[:2] >= (3, 13), sys.version
assert pve_hooks.__file__.startswith("/usr/lib/python3/dist-packages/"), pve_hooks.__file__
print("ok  pve_hooks", pve_hooks.__version__, "imports with Python", sys.version.split()[0], "from", pve_hooks.__file__)'
waiting_after=$(in_chroot find /var/spool/pve-hooks/outbox/ready -type f -name '*.json' | sort)
[ "$waiting_after" = "$waiting_before" ] || fail "the outbox changed in the upgrade: before $waiting_before, after $waiting_after"
in_chroot pve-hooks outbox list | tee "$work/after.txt"
event_ids() { grep -oE '^[0-9a-f]{8}-[0-9a-f-]{27}' "$1" || true; }
[ "$(event_ids "$work/after.txt")" = "$(event_ids "$work/before.txt")" ] && [ -n "$(event_ids "$work/before.txt")" ] \
	|| fail "pve-hooks outbox list on Python 3.13 does not list the events listed before (above; before: $work/before.txt)"
echo "ok  the 3 events written under Python 3.11 are waiting and listed under 3.13"
for path in /usr/share/pve-hooks/hookscripts/accountdb-hook $snippet; do
	first=$(in_chroot head -n1 "$path")
	[ "$first" = "$source_first_line" ] || fail "$path starts with '$first' after the upgrade, the source with '$source_first_line'"
	echo "ok  $path starts with $first"
done
in_chroot env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$snippet" 100 post-stop </dev/null || fail "the hookscript failed on Debian 13"
[ "$(in_chroot find /var/spool/pve-hooks/outbox/ready -type f -name '*.json' | wc -l)" = 4 ] \
	|| fail "the hookscript did not record a 4th event on Debian 13"
echo "ok  the hookscript recorded a 4th event with Python 3.13"
in_chroot pve-hooks snippets status
in_chroot sh -c "systemd-analyze verify $unit 2>&1" >"$work/verify.txt" || true
[ ! -s "$work/verify.txt" ] || { cat "$work/verify.txt"; fail "systemd-analyze verify (systemd 257) printed the above"; }
echo "ok  $unit: systemd-analyze verify (systemd $(in_chroot dpkg-query -W -f='${Version}' systemd)) clean"
in_chroot systemctl is-enabled pve-hooks-reconciler.service | grep -x enabled >/dev/null \
	|| fail "the unit is not enabled after the upgrade: the reboot would not start the daemon"
echo "ok  pve-hooks-reconciler.service is still enabled: the reboot starts it on Python 3.13"
# The daemon as the unit starts it (ExecStart), minus systemd: it comes up on
# Python 3.13 with the outbox written under 3.11 (AccountDB unreachable here:
# it keeps the events and retries; no pvesh in the chroot).
in_chroot sh -ec 'printf "accountdb:\n  url: http://127.0.0.1:9\n" >>/etc/pve-hooks/config.yaml
install -m 600 /dev/null /etc/pve-hooks/token && echo not-a-real-token >/etc/pve-hooks/token
pve-hooks reconcile >/tmp/reconcile.log 2>&1 &
sleep 6
pve-hooks status
kill -TERM $! && wait $! || true' | tee "$work/status.txt"
grep -E '^reconciler: +running \(pid [0-9]+\)' "$work/status.txt" >/dev/null \
	|| fail "pve-hooks reconcile did not come up on Python 3.13 (pve-hooks status above)"
echo "ok  the daemon (pve-hooks reconcile) runs on Python 3.13 with the upgraded node's outbox"
phase_done "checks on trixie"

chroot_done
print_timings
