"""Fixtures for the hookscript tests: a node tree, a config file, a journald socket to listen on."""

import os
import shutil
import socket
import stat
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOKSCRIPT = os.path.join(REPO, 'hookscripts', 'accountdb-hook')
SYSTEM_PYTHON = '/usr/bin/python3'  # the hookscript's #! interpreter


class HookSite:
    """A temporary node: config.yaml, spool, pve_root, chain dir and a journald socket.

    ``env`` is the environment to run the hookscript with (PVE_HOOKS_CONFIG set).
    """

    def __init__(self, root, node='pve1', extra_config=''):
        self.root = str(root)
        self.node = node
        self.spool_dir = os.path.join(self.root, 'spool')
        self.pve_root = os.path.join(self.root, 'pve')
        self.chain_dir = os.path.join(self.root, 'hooks.d')
        self.journal_path = os.path.join(self.root, 'journal.sock')
        self.config_path = os.path.join(self.root, 'config.yaml')
        for sub in ('qemu-server', 'lxc'):
            os.makedirs(os.path.join(self.pve_root, 'nodes', node, sub))
        self.write_config(extra_config)
        self.env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL': 'C', 'PVE_HOOKS_CONFIG': self.config_path}
        self.journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.journal.bind(self.journal_path)
        self.journal.setblocking(False)

    def write_config(self, extra=''):
        with open(self.config_path, 'w') as stream:
            stream.write('node: {0}\npaths:\n  spool_dir: {1}\nproxmox:\n  pve_root: {2}\nhook:\n'
                         '  chain_dir: {3}\n  chain_timeout: 5\n  journal_socket: {4}\n{5}'.format(
                             self.node, self.spool_dir, self.pve_root, self.chain_dir, self.journal_path, extra))

    def guest(self, vmid, kind):
        """Create the guest config that makes ``vmid`` a qemu or lxc guest."""
        sub = 'qemu-server' if kind == 'qemu' else 'lxc'
        with open(os.path.join(self.pve_root, 'nodes', self.node, sub, '{0}.conf'.format(vmid)), 'w') as stream:
            stream.write('memory: 512\n')

    def chain(self, name, body, mode=0o755):
        """Write a chained hook script ``name`` with shell ``body``; return its path."""
        os.makedirs(self.chain_dir, exist_ok=True)
        path = os.path.join(self.chain_dir, name)
        with open(path, 'w') as stream:
            stream.write('#!/bin/sh\n' + body + '\n')
        os.chmod(path, mode)
        return path

    def ready(self):
        """Return the sorted file names in outbox/ready."""
        try:
            return sorted(os.listdir(os.path.join(self.spool_dir, 'outbox', 'ready')))
        except FileNotFoundError:
            return []

    def journal_records(self):
        """Return the journal records received so far, each a dict of str fields."""
        records = []
        while True:
            try:
                data = self.journal.recv(1 << 20)
            except BlockingIOError:
                return records
            record = {}
            for line in data.split(b'\n'):
                if b'=' in line:
                    key, _, value = line.partition(b'=')
                    record[key.decode()] = value.decode()
            records.append(record)

    def close(self):
        self.journal.close()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


# Python code: run the hookscript in this process (the interpreter's flags apply as to the file itself) with
# argv <vmid> <phase> (format ``vmid``, ``phase``, ``path``), then print one JSON line: its exit code, the
# sorted sys.modules it left, and the file pve_hooks.hook.main came from.
EXEC_HOOKSCRIPT = """
import sys
sys.argv = [{path!r}, {vmid!r}, {phase!r}]
try:
    exec(compile(open({path!r}).read(), {path!r}, 'exec'), {{'__name__': '__main__'}})
except SystemExit as stop:
    code = stop.code
modules = sorted(sys.modules)
hook = sys.modules.get('pve_hooks.hook.main')
import json
print(json.dumps({{'exit': code, 'modules': modules, 'hook_file': hook and hook.__file__}}))
"""


def debian_prefix(root, python=SYSTEM_PYTHON):
    """Lay out an interpreter prefix like Debian's /usr under ``root``; return the path of its python3.

    ``root/bin/python3`` is a copy of ``python``'s binary (a copy, not a
    symlink: the interpreter derives its prefix from its own real location),
    ``root/lib/python3.X`` links to that interpreter's standard library, and
    ``root/lib/python3/dist-packages`` (where the .deb installs pve_hooks) is
    created empty. So ``root/bin/python3 -S`` has sys.prefix == ``root`` and
    runs the hookscript's import chain as /usr/bin/python3 would, without
    touching /usr. Raises OSError or subprocess.CalledProcessError if
    ``python`` is unusable, RuntimeError if the copy does not take ``root``
    as its prefix (an interpreter linked to a libpython found via its prefix).
    """
    root = str(root)
    stdlib, version = subprocess.run([python, '-I', '-S', '-c', 'import os, sys; print(os.path.dirname(os.__file__)); '
                                      'print("%d.%d" % sys.version_info[:2])'], check=True, capture_output=True,
                                     text=True).stdout.split()
    os.makedirs(os.path.join(root, 'bin'))
    os.makedirs(os.path.join(root, 'lib', 'python3', 'dist-packages'))
    os.symlink(stdlib, os.path.join(root, 'lib', 'python' + version))
    interpreter = os.path.join(root, 'bin', 'python3')
    shutil.copy2(os.path.realpath(python), interpreter)
    prefix = subprocess.run([interpreter, '-I', '-S', '-c', 'import sys; print(sys.prefix)'], check=True,
                            capture_output=True, text=True).stdout.strip()
    if prefix != root:
        raise RuntimeError('a copy of {0} in {1} has sys.prefix {2}'.format(python, root, prefix))
    return interpreter


def copy_package(directory):
    """Copy this tree's pve_hooks package (no caches) into ``directory``, as a package install does."""
    shutil.copytree(os.path.join(REPO, 'pve_hooks'), os.path.join(str(directory), 'pve_hooks'),
                    ignore=shutil.ignore_patterns('__pycache__'))
