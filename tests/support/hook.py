"""Fixtures for the hookscript tests: a node tree, a config file, a journald socket to listen on."""

import os
import socket
import stat

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOKSCRIPT = os.path.join(REPO, 'hookscripts', 'accountdb-hook')


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
