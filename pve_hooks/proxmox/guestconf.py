"""Guests' hookscript and template settings, read from their pmxcfs config files.

Only the top section of ``nodes/<node>/{qemu-server,lxc}/<vmid>.conf`` counts:
everything after the first ``[section]`` line is snapshots and pending
changes. Reading files is cheap and needs no pvesh; ``qm``/``pct`` do the
writing (see :mod:`pve_hooks.proxmox.attach`).

Each Guest carries the ``digest`` of the file it was read from, computed as
Proxmox computes it: the SHA-1 (hex) of the raw file content
(qemu-server ``src/PVE/QemuServer.pm`` parse_vm_config and pve-container
``src/PVE/LXC/Config.pm`` parse_pct_config: ``digest =>
Digest::SHA::sha1_hex($raw)``). Passed as ``qm set --digest``, it makes
Proxmox refuse the change when the file changed since it was read.
"""

import hashlib
import os

from pve_hooks.proxmox import inventory


class Guest:
    """One guest's config: vmid (int), type ('qemu'/'lxc'), name, hookscript (volume id or None), template."""

    __slots__ = ('vmid', 'type', 'name', 'hookscript', 'template', 'node', 'path', 'digest')

    def __init__(self, vmid, type_, name, hookscript, template, node, path=None, digest=None):
        self.vmid = vmid
        self.type = type_
        self.name = name
        self.hookscript = hookscript
        self.template = template
        self.node = node
        self.path = path        # the config file it was read from
        self.digest = digest    # Proxmox's digest of that file's content (see the module docstring)

    def __repr__(self):
        return 'Guest({0} {1} hookscript={2!r} template={3})'.format(self.type, self.vmid, self.hookscript,
                                                                     self.template)


def top_section(path):
    """Return {key: value} from the top section of a guest config file. Raise OSError."""
    return read_config(path)[0]


def read_config(path):
    """Return ({key: value} of the top section, digest) of a guest config file. Raise OSError.

    ``digest`` is the SHA-1 hex of the raw bytes, as Proxmox computes a config's digest.
    """
    with open(path, 'rb') as stream:
        raw = stream.read()
    text = raw.decode('utf-8', 'replace')
    options = {}
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith('['):
            break
        if stripped.startswith('#'):
            continue
        key, sep, value = stripped.partition(':')
        if sep:
            options[key.strip()] = value.strip()
    return options, hashlib.sha1(raw).hexdigest()


def read_guest(path, vmid, guest_type, node):
    """Return the Guest described by config file ``path`` (with its digest). Raise OSError."""
    options, digest = read_config(path)
    name = options.get('name' if guest_type == 'qemu' else 'hostname') or None
    return Guest(vmid, guest_type, name, options.get('hookscript') or None,
                 options.get('template', '0').strip() == '1', node, path, digest)


def reread(guest):
    """Return ``guest`` read again from its config file. Raise OSError (e.g. it moved away)."""
    return read_guest(guest.path, guest.vmid, guest.type, guest.node)


def node_guests(pve_root, node, tick=None):
    """Return ({vmid: Guest}, {vmid: error text}) for the guests whose configs are on ``node``.

    Same guests as ``ls /etc/pve/nodes/<node>/qemu-server /etc/pve/nodes/<node>/lxc``.
    A config that cannot be read (e.g. the guest moved away meanwhile) is
    reported in the second dict instead of raising. ``tick()``, when given,
    is called before each file is read (the daemon's watchdog).
    """
    guests, errors = {}, {}
    for vmid, guest_type, path in inventory.list_guest_configs(pve_root, node):
        if tick is not None:
            tick()
        try:
            guests[vmid] = read_guest(path, vmid, guest_type, node)
        except OSError as error:
            errors[vmid] = 'cannot read {0} ({1})'.format(path, error.strerror)
    return guests, errors


def cluster_nodes(pve_root):
    """Return the node names that have a directory under ``<pve_root>/nodes``, sorted."""
    try:
        return sorted(name for name in os.listdir(os.path.join(pve_root, 'nodes'))
                      if os.path.isdir(os.path.join(pve_root, 'nodes', name)))
    except OSError:
        return []


def guests_using(pve_root, matches):
    """Return the sorted vmids, on any node, whose hookscript volume id satisfies ``matches(volume)``."""
    found = set()
    for node in cluster_nodes(pve_root):
        guests, _ = node_guests(pve_root, node)
        found.update(vmid for vmid, guest in guests.items() if guest.hookscript and matches(guest.hookscript))
    return sorted(found)
