"""A fake node for attach/detach tests: guest config files and fake ``qm``/``pct`` programs.

The fakes are real executables (Python scripts run by the test's
interpreter). Each call appends its argv as a JSON line to ``calls.jsonl``
and edits the guest's config file the way Proxmox does for
``set <vmid> --hookscript <vol>`` and ``set <vmid> --delete hookscript``
(top section only). A vmid listed in ``fail.txt`` makes the call fail like a
held lock does.

``--digest <sha1>`` is checked as Proxmox checks it, after taking the
config lock and loading the config, before changing anything: the config's
digest is ``Digest::SHA::sha1_hex($raw)`` of the raw file (qemu-server
``src/PVE/QemuServer.pm`` parse_vm_config; pve-container
``src/PVE/LXC/Config.pm`` parse_pct_config); a different one makes
``qm set`` die with "checksum mismatch (file change by other user?)"
(qemu-server ``src/PVE/API2/Qemu.pm``, ``$update_vm_api`` →
``$load_and_check_config``) and ``pct set`` with "detected modified
configuration - file changed by other user? Try again." (pve-container
``src/PVE/API2/LXC/Config.pm`` update_vm → pve-common ``src/PVE/Tools.pm``
assert_if_modified); nothing is written. A die in a PVE CLI tool exits 255
(Perl's exit status for an uncaught die). Read at qemu-server 9.2.6
(e6352be6), pve-container 94f5585, pve-common 9.2.1 (f665029).

:meth:`FakeNode.race` makes the fake first set another hookscript in a
guest's config, once, as if another administrator ran ``qm set`` between
pve-hooks reading the config and its own ``qm set``.
"""

import hashlib
import json
import os
import sys

from pve_hooks.config import loader as config

NODE = 'pve1'

_FAKE = r'''#!{python}
import hashlib, json, os, sys
KIND = {kind!r}
ROOT = {root!r}
NODE = {node!r}
STATE = {state!r}
DIRS = {{'qm': 'qemu-server', 'pct': 'lxc'}}
with open(os.path.join(STATE, 'calls.jsonl'), 'a') as log:
    log.write(json.dumps([KIND] + sys.argv[1:]) + '\n')
args = sys.argv[1:]
if len(args) < 2 or args[0] != 'set':
    sys.stderr.write('400 unknown command\n')
    sys.exit(255)
vmid = args[1]
path = os.path.join(ROOT, 'nodes', NODE, DIRS[KIND], vmid + '.conf')
if not os.path.exists(path):
    sys.stderr.write("Configuration file 'nodes/%s/%s/%s.conf' does not exist\n" % (NODE, DIRS[KIND], vmid))
    sys.exit(2)
try:
    with open(os.path.join(STATE, 'fail.txt')) as fail:
        failing = fail.read().split()
except FileNotFoundError:
    failing = []
if vmid in failing:
    sys.stderr.write("can't lock file '/var/lock/qemu-server/lock-%s.conf' - got timeout\n" % vmid)
    sys.exit(2)
race = os.path.join(STATE, 'race-' + vmid)
if os.path.exists(race):   # another administrator's qm set, just before ours (see FakeNode.race)
    with open(race) as stream:
        other = stream.read().strip()
    os.unlink(race)
    with open(path) as stream:
        lines = [line for line in stream.read().splitlines() if not line.startswith('hookscript:')]
    with open(path, 'w') as stream:
        stream.write('\n'.join(['hookscript: ' + other] + lines) + '\n')
digest = None
if '--digest' in args[2:]:
    at = args.index('--digest', 2)
    digest = args[at + 1] if at + 1 < len(args) else ''
    del args[at:at + 2]
with open(path, 'rb') as stream:
    raw = stream.read()
if digest and digest != hashlib.sha1(raw).hexdigest():
    if KIND == 'qm':
        sys.stderr.write('checksum mismatch (file change by other user?)\n')
    else:
        sys.stderr.write('detected modified configuration - file changed by other user? Try again.\n')
    sys.exit(255)
lines = raw.decode().splitlines()
end = next((i for i, line in enumerate(lines) if line.startswith('[')), len(lines))
top = [line for line in lines[:end] if not line.startswith('hookscript:')]
if args[2:4] == ['--hookscript', args[3] if len(args) > 3 else None] and len(args) == 4:
    top.append('hookscript: ' + args[3])
elif args[2:] != ['--delete', 'hookscript']:
    sys.stderr.write('400 unexpected arguments %r\n' % args[2:])
    sys.exit(255)
with open(path + '.new', 'w') as stream:
    stream.write('\n'.join(top + lines[end:]) + '\n')
os.rename(path + '.new', path)
'''


def write_guest(pve_root, vmid, kind='qemu', hookscript=None, template=False, name=None, node=NODE,
                snapshot_hookscript=None):
    """Write a guest config ``nodes/<node>/{qemu-server,lxc}/<vmid>.conf``; return its path.

    ``snapshot_hookscript`` adds a snapshot section holding another
    hookscript line, which must be ignored (only the top section counts).
    """
    folder = os.path.join(str(pve_root), 'nodes', node, 'qemu-server' if kind == 'qemu' else 'lxc')
    os.makedirs(folder, exist_ok=True)
    lines = ['cores: 2', 'memory: 2048']
    lines.append(('name: ' if kind == 'qemu' else 'hostname: ') + (name or 'guest{0}'.format(vmid)))
    if hookscript:
        lines.append('hookscript: ' + hookscript)
    if template:
        lines.append('template: 1')
    if snapshot_hookscript:
        lines += ['', '[snap1]', 'hookscript: ' + snapshot_hookscript, 'snaptime: 1700000000']
    path = os.path.join(folder, '{0}.conf'.format(vmid))
    with open(path, 'w') as stream:
        stream.write('\n'.join(lines) + '\n')
    return path


def hookscript_line(pve_root, vmid, kind='qemu', node=NODE):
    """Return the top-section ``hookscript:`` value of a guest, or None."""
    from pve_hooks.proxmox import guestconf

    folder = 'qemu-server' if kind == 'qemu' else 'lxc'
    return guestconf.top_section(os.path.join(str(pve_root), 'nodes', node, folder,
                                              '{0}.conf'.format(vmid))).get('hookscript')


class FakeNode:
    """Paths of a fake node under ``tmp_path``, fake qm/pct, and its Settings."""

    def __init__(self, tmp_path, storage_content='iso,vztmpl,backup,snippets'):
        self.root = str(tmp_path)
        self.pve_root = os.path.join(self.root, 'etc-pve')
        self.state = os.path.join(self.root, 'fake-state')
        self.bin = os.path.join(self.root, 'bin')
        self.storage_path = os.path.join(self.root, 'vz')
        self.snippets = os.path.join(self.storage_path, 'snippets')
        self.source = os.path.join(self.root, 'share', 'accountdb-hook')
        for folder in (self.pve_root, self.state, self.bin, self.snippets, os.path.dirname(self.source),
                       os.path.join(self.pve_root, 'nodes', NODE)):
            os.makedirs(folder, exist_ok=True)
        with open(os.path.join(self.pve_root, 'storage.cfg'), 'w') as stream:
            stream.write('dir: local\n\tpath {0}\n\tcontent {1}\n\n'
                         'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n'.format(
                             self.storage_path, storage_content))
        with open(self.source, 'w') as stream:
            stream.write('#!/bin/sh\n# packaged hookscript v1\nexit 0\n')
        os.chmod(self.source, 0o755)
        for kind in ('qm', 'pct'):
            path = os.path.join(self.bin, kind)
            with open(path, 'w') as stream:
                stream.write(_FAKE.format(python=sys.executable, kind=kind, root=self.pve_root, node=NODE,
                                          state=self.state))
            os.chmod(path, 0o755)

    def settings(self, *overrides):
        """Return Settings pointing every path at this fake node (no config file read)."""
        sets = ['node=' + NODE, 'proxmox.pve_root=' + self.pve_root,
                'proxmox.storage_cfg=' + os.path.join(self.pve_root, 'storage.cfg'),
                'proxmox.qm=' + os.path.join(self.bin, 'qm'), 'proxmox.pct=' + os.path.join(self.bin, 'pct'),
                'proxmox.hookscript_source=' + self.source,
                'paths.state_dir=' + os.path.join(self.root, 'state'),
                'paths.spool_dir=' + os.path.join(self.root, 'spool')]
        return config.load(os.devnull, env={}, overrides=sets + list(overrides))

    def cli_args(self, *overrides):
        """Return ``--config /dev/null --set ...`` arguments for the same settings."""
        args = ['--config', os.devnull]
        for item in self.settings_items(*overrides):
            args += ['--set', item]
        return args

    def settings_items(self, *overrides):
        settings = self.settings(*overrides)
        return ['{0}={1}'.format(key, settings[key]) for key in (
            'node', 'proxmox.pve_root', 'proxmox.storage_cfg', 'proxmox.qm', 'proxmox.pct',
            'proxmox.hookscript_source', 'paths.state_dir', 'paths.spool_dir')] + list(overrides)

    def calls(self, digests=False):
        """Return the recorded qm/pct calls: lists like ['qm', 'set', '101', '--hookscript', vol].

        ``--digest <sha1>`` is left out unless ``digests``.
        """
        try:
            with open(os.path.join(self.state, 'calls.jsonl')) as stream:
                calls = [json.loads(line) for line in stream]
        except FileNotFoundError:
            return []
        if not digests:
            for call in calls:
                if '--digest' in call:
                    at = call.index('--digest')
                    del call[at:at + 2]
        return calls

    def race(self, vmid, hookscript):
        """Make the next qm/pct call for ``vmid`` find ``hookscript`` set by someone else just before it."""
        with open(os.path.join(self.state, 'race-{0}'.format(vmid)), 'w') as stream:
            stream.write(hookscript)

    def digest(self, vmid, kind='qemu'):
        """Return the digest Proxmox computes for the guest's config file: sha1 hex of its raw bytes."""
        folder = 'qemu-server' if kind == 'qemu' else 'lxc'
        with open(os.path.join(self.pve_root, 'nodes', NODE, folder, '{0}.conf'.format(vmid)), 'rb') as stream:
            return hashlib.sha1(stream.read()).hexdigest()

    def fail(self, *vmids):
        """Make qm/pct fail for these vmids."""
        with open(os.path.join(self.state, 'fail.txt'), 'w') as stream:
            stream.write(' '.join(str(vmid) for vmid in vmids))

    def guest(self, vmid, **kwargs):
        return write_guest(self.pve_root, vmid, **kwargs)

    def hookscript(self, vmid, kind='qemu'):
        return hookscript_line(self.pve_root, vmid, kind)
