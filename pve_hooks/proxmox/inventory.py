"""This node's guests as Proxmox sees them: pvesh listings, ``.vmlist``, guest configs.

:func:`read_guests` is the only source of an inventory sent to AccountDB, and
it never returns a partial or empty list because a read failed: any failed
call or malformed row raises. :func:`read_vmlist` is a cheap change detector;
:func:`list_guest_configs` lists pmxcfs guest configs directly (their
contents are read by :mod:`pve_hooks.proxmox.guestconf`).
"""

import hashlib
import json
import os
import time

from pve_hooks.proxmox import pvesh
from pve_hooks.proxmox.pvesh import PveshError

GUEST_TYPES = ('qemu', 'lxc')
# Where each guest type's configuration lives under nodes/<node>/.
CONFIG_DIRS = {'qemu': 'qemu-server', 'lxc': 'lxc'}
# Fields that change on every read and are left out of the content hash.
VOLATILE = ('uptime',)


class InventoryError(PveshError):
    """pvesh answered, but with something that is not a valid guest listing."""


class VmlistError(Exception):
    """``/etc/pve/.vmlist`` exists but cannot be read or parsed; the message names the file."""


def read_guests(settings, node, pvesh_run=pvesh.run):
    """Return this node's guests (qemu and lxc), normalised, sorted by vmid.

    Same as ``pvesh get /nodes/{node}/qemu --output-format json`` and
    ``pvesh get /nodes/{node}/lxc --output-format json``.

    ``pvesh_run(settings, path)`` returns the parsed JSON (default
    :func:`pve_hooks.proxmox.pvesh.run`). Each guest is a dict with vmid (int), type
    ('qemu'/'lxc'), name (str or None), status (str), template (bool), maxmem,
    maxdisk (int bytes), cpus (number), tags (list of str), lock (str or None)
    and uptime (int seconds).

    Raise PveshError if either call fails and InventoryError (a PveshError)
    if an answer is not a list or any row is malformed, or a vmid appears
    twice. An empty list is returned only when both calls succeeded and
    listed no guests.
    """
    guests = []
    seen = {}
    for guest_type in GUEST_TYPES:
        path = '/nodes/{0}/{1}'.format(node, guest_type)
        rows = pvesh_run(settings, path)
        if not isinstance(rows, list):
            raise InventoryError('pvesh get {0}: expected a list of guests, got {1}'.format(
                path, type(rows).__name__))
        for index, row in enumerate(rows):
            guest = normalise_row(row, guest_type, '{0} row {1}'.format(path, index))
            if guest['vmid'] in seen:
                raise InventoryError('pvesh get {0}: vmid {1} listed twice (also as {2})'.format(
                    path, guest['vmid'], seen[guest['vmid']]))
            seen[guest['vmid']] = guest_type
            guests.append(guest)
    guests.sort(key=lambda guest: guest['vmid'])
    return guests


def normalise_row(row, guest_type, where):
    """Return one guest dict from a raw pvesh row (see :func:`read_guests`).

    ``where`` names the row in error messages. Raise InventoryError when a
    field is missing or has the wrong type.
    """
    if not isinstance(row, dict):
        raise InventoryError('{0}: expected an object, got {1!r}'.format(where, row))

    def bad(field, expected):
        return InventoryError('{0}: field {1!r} should be {2}, got {3!r}'.format(
            where, field, expected, row.get(field)))

    if 'vmid' not in row:
        raise InventoryError('{0}: no vmid in {1}'.format(where, _short(row)))
    vmid = _integer(row['vmid'])
    if vmid is None or vmid < 1:
        raise bad('vmid', 'a positive integer')
    where = '{0} (vmid {1})'.format(where, vmid)
    if row.get('type', guest_type) != guest_type:
        raise bad('type', repr(guest_type))
    status = row.get('status')
    if not isinstance(status, str) or not status:
        raise bad('status', 'a non-empty string')
    name = row.get('name')
    if name is not None and not isinstance(name, str):
        raise bad('name', 'a string')
    template = row.get('template', 0)
    if template in (0, 1, '0', '1', True, False, ''):
        template = template not in (0, '0', False, '')
    else:
        raise bad('template', '0 or 1')
    guest = {'vmid': vmid, 'type': guest_type, 'name': name, 'status': status, 'template': template}
    for field in ('maxmem', 'maxdisk', 'uptime'):
        value = _integer(row.get(field, 0))
        if value is None or value < 0:
            raise bad(field, 'a non-negative integer')
        guest[field] = value
    cpus = _number(row.get('cpus', 0))
    if cpus is None or cpus < 0:
        raise bad('cpus', 'a non-negative number')
    guest['cpus'] = cpus
    lock = row.get('lock')
    if lock is not None and not isinstance(lock, str):
        raise bad('lock', 'a string')
    guest['lock'] = lock or None
    tags = row.get('tags', '')
    if tags is None:
        tags = ''
    if not isinstance(tags, str):
        raise bad('tags', "a ';'-separated string")
    guest['tags'] = split_tags(tags)
    return guest


def split_tags(text):
    """Return the tags of a PVE tag string ('a;b', also ',' or space separated), without duplicates."""
    result = []
    for part in text.replace(',', ';').replace(' ', ';').split(';'):
        part = part.strip()
        if part and part not in result:
            result.append(part)
    return result


def _integer(value):
    """Return value as an int (from int, integral float or digit string), else None."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _number(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else number
    return None


def _short(value):
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + '...'


def build_inventory(node, cluster, guests, clock=time.time):
    """Return the inventory document for AccountDB.

    ``{"node", "cluster" (name or None), "generated_at" (UTC, ISO 8601 with
    Z, from ``clock()`` epoch seconds), "guests": [sorted by vmid]}``.
    """
    stamp = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(clock()))
    return {'node': node, 'cluster': cluster, 'generated_at': stamp,
            'guests': sorted((dict(guest) for guest in guests), key=lambda guest: guest['vmid'])}


def content_hash(inventory):
    """Return a stable SHA-256 hex digest of the inventory's content.

    ``generated_at`` and each guest's volatile fields (uptime) are left out,
    so the hash changes only when something AccountDB cares about changed.
    """
    content = {key: value for key, value in inventory.items() if key != 'generated_at'}
    content['guests'] = [{key: value for key, value in guest.items() if key not in VOLATILE}
                         for guest in sorted(inventory.get('guests', ()), key=lambda guest: guest['vmid'])]
    blob = json.dumps(content, sort_keys=True, separators=(',', ':'), ensure_ascii=True)
    return hashlib.sha256(blob.encode('ascii')).hexdigest()


def read_vmlist(pve_root):
    """Return ``(version, ids)`` from ``<pve_root>/.vmlist``, or None if it does not exist.

    Same data as ``cat /etc/pve/.vmlist``. ``ids`` maps vmid (int) to
    ``{"node", "type", "version"}``; it is {} when the file lists no guests.
    ``version`` changes whenever a guest is added, removed or moved.

    Raise VmlistError naming the file when it cannot be read or is not the
    expected JSON.
    """
    path = os.path.join(pve_root, '.vmlist')
    try:
        with open(path, 'rb') as stream:
            raw = stream.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise VmlistError('{0}: cannot read ({1})'.format(path, error.strerror or error))
    try:
        data = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, ValueError) as error:
        raise VmlistError('{0}: not valid JSON ({1})'.format(path, str(error).split(':')[0]))
    if not isinstance(data, dict) or _integer(data.get('version')) is None or isinstance(
            data.get('version'), str):
        raise VmlistError('{0}: expected an object with an integer "version"'.format(path))
    raw_ids = data.get('ids', {})
    if not isinstance(raw_ids, dict):
        raise VmlistError('{0}: "ids" should be an object'.format(path))
    ids = {}
    for key, entry in raw_ids.items():
        vmid = _integer(key)
        if vmid is None or not isinstance(entry, dict) or not isinstance(entry.get('node'), str) \
                or entry.get('type') not in GUEST_TYPES:
            raise VmlistError('{0}: malformed entry for id {1!r}'.format(path, key))
        ids[vmid] = {'node': entry['node'], 'type': entry['type'], 'version': entry.get('version')}
    return data['version'], ids


def list_guest_configs(pve_root, node):
    """Return ``[(vmid, guest_type, path)]`` for every guest config of ``node``, sorted by vmid.

    Same guests as ``ls /etc/pve/nodes/<node>/qemu-server /etc/pve/nodes/<node>/lxc``.
    A missing directory counts as no guests of that type.
    """
    result = []
    for guest_type, directory in CONFIG_DIRS.items():
        folder = os.path.join(pve_root, 'nodes', node, directory)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            stem, dot, ext = name.partition('.')
            if dot and ext == 'conf' and stem.isdigit() and not stem.startswith('0'):
                result.append((int(stem), guest_type, os.path.join(folder, name)))
    result.sort()
    return result
