"""The Proxmox side for tests: fakepve (PyPI) behind the test pvesh shim, and a pmxcfs tree.

Fixtures (import them explicitly: ``from tests.support.fakepve import fake_pve, pve_root, fake_node``):

- ``fake_pve``: a started FakePve on 127.0.0.1 (own event loop in a thread) with
  node ``pve1``, plus a generated ``pvesh`` wrapper that forwards to it
  (``fake_pve.pvesh``; the same program for subprocesses: no environment needed).
  Fault injection: ``fake_pve.set_node_offline()``, ``lose_quorum()``,
  ``slow(seconds)``, ``fail(...)`` (fakepve's own faults) and
  ``set_fault('hang'|'hang-child'|'garbage'|'fail'|'empty'|'slow:N', paths=None)``
  (the shim's). ``fake_pve.settings()`` / ``overrides()`` / ``env()`` point
  pve-hooks at it.
- ``pve_root``: a :class:`PveTree` (``/etc/pve`` stand-in) in tmp_path.
- ``fake_node``: both together; :class:`FakeNode` creates, destroys and migrates
  guests consistently in fakepve, the config files and ``.vmlist``.

fakepve is test-only (AGPL); pve_hooks never imports it.
"""

import asyncio
import json
import os
import stat
import sys
import threading

import pytest

from pve_hooks.config import loader as config

HOST = '127.0.0.1'
NODE = 'pve1'
USER = 'root@pam'
PASSWORD = 'secret'
SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bin', 'pvesh')
WAIT = 30
GiB = 1024 ** 3

# fakepve synthesises /nodes/{node}/status from the API schema (zeros and "fake"); the shim
# merges this realistic answer over it (loadavg as strings, as PVE sends it).
NODE_STATUS = {
    'uptime': 3600,
    'loadavg': ['0.40', '0.30', '0.20'],
    'cpu': 0.05,
    'cpuinfo': {'cpus': 4, 'cores': 4, 'sockets': 1, 'model': 'fakepve'},
    'memory': {'total': 8 * GiB, 'used': 2 * GiB, 'free': 6 * GiB, 'available': 6 * GiB},
    'rootfs': {'total': 64 * GiB, 'used': 16 * GiB, 'avail': 48 * GiB, 'free': 48 * GiB},
    'swap': {'total': 0, 'used': 0, 'free': 0},
    'pveversion': 'pve-manager/8.2.4/fakepve',
}


class FakePveServer:
    """A FakePve served on its own event loop in a daemon thread.

    ``call(fn, *args)`` runs ``fn`` in the loop's thread (thread-safe access to
    the model) and returns its result; coroutine results are awaited.
    """

    def __init__(self, certfile, keyfile, user=USER, password=PASSWORD):
        from fakepve import FakePve

        self.pve = FakePve(user=user, password=password, host=HOST, port=0)
        self.pve.time_scale = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name='fakepve', daemon=True)
        self.thread.start()
        try:
            self.call(self.pve.start, certfile, keyfile)
        except BaseException:
            self._halt()
            raise

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, fn, *args, **kwargs):
        """Run fn(*args, **kwargs) in the server's loop; return its (awaited) result."""
        async def wrapped():
            result = fn(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(WAIT)

    def _halt(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        if not self.thread.is_alive():
            self.loop.close()

    def stop(self):
        """Stop listening and end the loop thread."""
        try:
            self.call(self.pve.stop)
        finally:
            self._halt()


class FakePveHandle:
    """What the ``fake_pve`` fixture yields: the server, the shim and fault switches."""

    def __init__(self, server, directory, cafile, node=NODE):
        self.server = server
        self.pve = server.pve
        self.node = node
        self.cafile = cafile
        self.bin_dir = os.path.join(directory, 'bin')
        self.config_path = os.path.join(directory, 'pvesh-shim.json')
        self.pvesh = os.path.join(self.bin_dir, 'pvesh')
        self.shim = {'url': self.pve.url, 'cafile': cafile, 'user': USER, 'password': PASSWORD,
                     'timeout': 30, 'overlay': {}, 'fault': None, 'fault_paths': None}
        os.makedirs(self.bin_dir, exist_ok=True)
        with open(self.pvesh, 'w') as out:
            out.write('#!/bin/sh\nFAKEPVE_SHIM_CONFIG={0} exec {1} {2} "$@"\n'.format(
                _sh(self.config_path), _sh(sys.executable), _sh(SHIM)))
        os.chmod(self.pvesh, os.stat(self.pvesh).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        self.server.call(self.pve.nodes.setdefault, node, {'online': True})
        self.set_node_status()

    @property
    def url(self):
        """https://127.0.0.1:PORT of the fake."""
        return self.pve.url

    def call(self, fn, *args, **kwargs):
        """Run fn in the fake's loop thread (use for any change to ``pve``)."""
        return self.server.call(fn, *args, **kwargs)

    # -- shim configuration --------------------------------------------------------------

    def _write(self):
        tmp = self.config_path + '.tmp'
        with open(tmp, 'w') as out:
            json.dump(self.shim, out)
        os.replace(tmp, self.config_path)

    def set_fault(self, fault=None, paths=None):
        """Make the shim misbehave: hang, hang-child, garbage, fail, empty, slow:N; None to stop.

        ``paths`` limits the fault to these API paths (e.g. ['/nodes/pve1/lxc']).
        """
        self.shim['fault'] = fault
        self.shim['fault_paths'] = list(paths) if paths else None
        self._write()

    def set_overlay(self, path, data):
        """Merge ``data`` into the shim's answer for ``path`` (None removes the overlay)."""
        if data is None:
            self.shim['overlay'].pop(path, None)
        else:
            self.shim['overlay'][path] = data
        self._write()

    def set_node_status(self, node='*', **changes):
        """Set /nodes/{node}/status answers (default: every node's) to NODE_STATUS updated with ``changes``.

        E.g. ``set_node_status(memory={'total': 100, 'used': 98})``, ``loadavg=['9.0', '1', '1']``.
        A named node's entry takes precedence over the ``*`` one.
        """
        status = json.loads(json.dumps(NODE_STATUS))
        status.update(changes)
        self.set_overlay('/nodes/{0}/status'.format(node), status)

    # -- fakepve scenarios (thread-safe) ---------------------------------------------------

    def add_vm(self, vmid, name, node=None, status='stopped', **kwargs):
        """Add a VM to fakepve (on this node by default); return it."""
        return self.call(self.pve.add_vm, vmid, name, node=node or self.node, status=status, **kwargs)

    def add_ct(self, vmid, name, node=None, status='stopped', **kwargs):
        """Add a container to fakepve (on this node by default); return it."""
        return self.call(self.pve.add_ct, vmid, name, node=node or self.node, status=status, **kwargs)

    def add_node(self, name, online=True):
        self.call(self.pve.add_node, name, online)

    def set_node_offline(self, node=None, offline=True):
        """Requests for the node get fakepve's 595 No route to host (offline=False brings it back)."""
        self.call(self.pve.set_node_offline, node or self.node, offline)

    def lose_quorum(self):
        self.call(self.pve.lose_quorum)

    def regain_quorum(self):
        self.call(self.pve.regain_quorum)

    def slow(self, seconds):
        """Every fakepve answer takes ``seconds`` longer (real seconds); 0 undoes it.

        This sets fakepve's time_scale to 1, so its tasks (migrations etc.) take real time too until undone.
        """
        def apply():
            self.pve.time_scale = 1.0 if seconds else 0
            self.pve.slow_network(seconds)
        self.call(apply)

    def fail(self, method, suffix, status=None, message=None, times=None, error=None):
        """fakepve's fail(): answer requests whose path ends with ``suffix`` with an error."""
        self.call(self.pve.fail, method, suffix, status=status, message=message, times=times, error=error)

    def clear_failures(self):
        self.call(self.pve.failures.clear)

    # -- pointing pve-hooks at it ----------------------------------------------------------

    def overrides(self, *pairs):
        """Return ``--set`` pairs (node, proxmox.pvesh) plus ``pairs``, for config.load or the CLI."""
        return ['node=' + self.node, 'proxmox.pvesh=' + self.pvesh] + list(pairs)

    def settings(self, *pairs, env=None):
        """Return loaded Settings pointing at this fake (no config file; ``env`` default {})."""
        return config.load(None, env={} if env is None else env, overrides=self.overrides(*pairs))

    def env(self, base=None):
        """Return an environment (a copy of ``base`` or os.environ) whose PVE_HOOKS_* point at the fake."""
        env = dict(os.environ if base is None else base)
        env['PVE_HOOKS_NODE'] = self.node
        env['PVE_HOOKS_PROXMOX__PVESH'] = self.pvesh
        return env


def _sh(text):
    return "'" + str(text).replace("'", "'\\''") + "'"


class PveTree:
    """A ``/etc/pve`` stand-in: nodes/<node>/{qemu-server,lxc}/<vmid>.conf and ``.vmlist``."""

    def __init__(self, root):
        self.root = str(root)
        self.version = 0
        os.makedirs(os.path.join(self.root, 'nodes'), exist_ok=True)

    def config_path(self, node, vmid, guest_type):
        folder = 'qemu-server' if guest_type == 'qemu' else 'lxc'
        return os.path.join(self.root, 'nodes', node, folder, '{0}.conf'.format(vmid))

    def write_config(self, node, vmid, guest_type, options=None, hookscript=None, snapshot=None):
        """Write a guest config: ``options`` in the top section, then an optional ``[snapshot]`` section.

        ``snapshot`` is a dict of options written under ``[snap1]`` (to check readers stop there).
        """
        lines = ['{0}: {1}'.format(key, value) for key, value in (options or {}).items()]
        if hookscript:
            lines.append('hookscript: ' + hookscript)
        if snapshot:
            lines += ['', '[snap1]'] + ['{0}: {1}'.format(key, value) for key, value in snapshot.items()]
        path = self.config_path(node, vmid, guest_type)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as out:
            out.write('\n'.join(lines) + '\n')
        return path

    def remove_config(self, node, vmid, guest_type):
        os.unlink(self.config_path(node, vmid, guest_type))

    def guests(self):
        """Return {vmid: (node, type)} from the config files on every node."""
        found = {}
        nodes = os.path.join(self.root, 'nodes')
        for node in sorted(os.listdir(nodes)):
            for guest_type, folder in (('qemu', 'qemu-server'), ('lxc', 'lxc')):
                directory = os.path.join(nodes, node, folder)
                for name in os.listdir(directory) if os.path.isdir(directory) else ():
                    if name.endswith('.conf') and name[:-5].isdigit():
                        found[int(name[:-5])] = (node, guest_type)
        return found

    def write_vmlist(self):
        """Rewrite ``.vmlist`` from the config files, with a new version (no ``ids`` when empty)."""
        self.version += 1
        data = {'version': self.version}
        ids = {str(vmid): {'node': node, 'type': guest_type, 'version': self.version}
               for vmid, (node, guest_type) in sorted(self.guests().items())}
        if ids:
            data['ids'] = ids
        tmp = os.path.join(self.root, '.vmlist.tmp')
        with open(tmp, 'w') as out:
            json.dump(data, out)
        os.replace(tmp, os.path.join(self.root, '.vmlist'))
        return self.version


class FakeNode:
    """fakepve and a PveTree kept consistent: guests created, destroyed and moved in both."""

    def __init__(self, fake, tree):
        self.fake = fake
        self.tree = tree
        self.node = fake.node
        self.tree.write_vmlist()

    @property
    def pve_root(self):
        return self.tree.root

    def create_guest(self, vmid, guest_type='qemu', name=None, status='stopped', node=None,
                     hookscript=None, tags=None, template=False):
        """Create a guest in fakepve and its config (+ .vmlist); return the fakepve object."""
        node = node or self.node
        name = name or '{0}{1}'.format('vm' if guest_type == 'qemu' else 'ct', vmid)
        options = {'name' if guest_type == 'qemu' else 'hostname': name}
        if tags:
            options['tags'] = tags
        if template:
            options['template'] = 1
        if hookscript:
            options['hookscript'] = hookscript
        if guest_type == 'qemu':
            guest = self.fake.add_vm(vmid, name, node=node, status=status, template=template, config=options)
        else:
            guest = self.fake.add_ct(vmid, name, node=node, status=status, template=template, config=options)
        self.tree.write_config(node, vmid, guest_type, options)
        self.tree.write_vmlist()
        return guest

    def _find(self, vmid):
        pve = self.fake.pve
        guest = self.fake.call(pve.guest, vmid)
        if guest is None:
            raise KeyError('no guest {0} in fakepve'.format(vmid))
        return guest, ('qemu' if guest in pve.vms else 'lxc')

    def destroy_guest(self, vmid):
        """Remove the guest from fakepve, its config and .vmlist."""
        guest, guest_type = self._find(vmid)
        pool = self.fake.pve.vms if guest_type == 'qemu' else self.fake.pve.cts
        self.fake.call(pool.remove, guest)
        self.tree.remove_config(guest.node, vmid, guest_type)
        self.tree.write_vmlist()

    def migrate_guest(self, vmid, target):
        """Move the guest to node ``target`` in fakepve, the config tree and .vmlist."""
        guest, guest_type = self._find(vmid)
        source = guest.node
        src = self.tree.config_path(source, vmid, guest_type)
        dst = self.tree.config_path(target, vmid, guest_type)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)

        def move():
            self.fake.pve.nodes.setdefault(target, {'online': True})
            guest.node = target
        self.fake.call(move)
        self.tree.write_vmlist()

    def set_status(self, vmid, status):
        """Set the guest's status in fakepve (running/stopped)."""
        guest, _ = self._find(vmid)
        self.fake.call(setattr, guest, 'status', status)

    def overrides(self, *pairs):
        """--set pairs: the fake's plus proxmox.pve_root."""
        return self.fake.overrides('proxmox.pve_root=' + self.pve_root, *pairs)

    def settings(self, *pairs, env=None):
        return self.fake.settings('proxmox.pve_root=' + self.pve_root, *pairs, env=env)

    def env(self, base=None):
        env = self.fake.env(base)
        env['PVE_HOOKS_PROXMOX__PVE_ROOT'] = self.pve_root
        return env


@pytest.fixture(scope='session')
def fake_pve_pki(tmp_path_factory):
    """(certfile, keyfile) of a self-signed certificate for 127.0.0.1 (the CA file is the certificate)."""
    from fakepve.certs import make_cert

    return make_cert(str(tmp_path_factory.mktemp('fake-pve-pki')), hosts=(HOST,))[:2]


@pytest.fixture
def fake_pve(fake_pve_pki, tmp_path_factory):
    """A started fakepve with node pve1 behind a generated pvesh shim (see FakePveHandle)."""
    server = FakePveServer(*fake_pve_pki)
    try:
        yield FakePveHandle(server, str(tmp_path_factory.mktemp('fake-pve')), fake_pve_pki[0])
    finally:
        server.stop()


@pytest.fixture
def pve_root(tmp_path_factory):
    """An empty PveTree (an /etc/pve stand-in) in a temporary directory."""
    return PveTree(tmp_path_factory.mktemp('etc-pve'))


@pytest.fixture
def fake_node(fake_pve, pve_root):
    """fakepve + pve_root kept consistent (see FakeNode); no guests yet."""
    return FakeNode(fake_pve, pve_root)
