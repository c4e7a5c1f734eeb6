"""The hookscript's copy in a Proxmox snippets storage: where it goes, whether it is ours.

Proxmox runs a hookscript from a volume ``<storage>:snippets/<file>``, which
resolves to ``<storage path>/snippets/<file>`` on every node that starts the
guest. The package ships the script at ``proxmox.hookscript_source``; this
module copies it (never a symlink: the storage may be shared or re-mounted)
into the snippets directory of ``proxmox.snippets_storage`` and records the
copy's SHA-256 in ``<paths.state_dir>/snippet.json`` (:data:`pve_hooks.statedir.SNIPPET`)
so that a later upgrade refreshes it and a removal deletes it only while it
is ours and unchanged. Both files are written by
:func:`pve_hooks.statedir.atomic_write`.

The maintainer scripts call this through ``pve-hooks snippets install|remove``.
"""

import hashlib
import os

from pve_hooks import statedir
from pve_hooks.proxmox import guestconf

HOOKSCRIPT_NAME = 'accountdb-hook'
# Storage types whose content lives under a directory; those without an
# explicit ``path`` are mounted by Proxmox at /mnt/pve/<storage>.
MOUNTED_TYPES = ('nfs', 'cifs', 'cephfs', 'glusterfs')
PATH_TYPES = ('dir', 'btrfs') + MOUNTED_TYPES
# Proxmox's built-in definition of `local` when storage.cfg does not exist yet.
BUILTIN_LOCAL = {'type': 'dir', 'path': '/var/lib/vz'}

# Values of Status.state
CURRENT, OUTDATED, MODIFIED, FOREIGN, MISSING, NO_DIR = (
    'current', 'outdated', 'modified', 'foreign', 'missing', 'no-dir')


class SnippetsError(Exception):
    """The hookscript cannot be installed or removed; the message names the file and the fix."""


class Status:
    """Where the hookscript copy is and what state it is in.

    ``state`` is one of: current (identical to the packaged script), outdated
    (the copy we installed earlier, unchanged, older than the packaged one),
    modified (we installed it, someone changed it since), foreign (a file we
    did not install), missing, no-dir (the snippets directory does not exist).
    """

    def __init__(self, state, path, volume):
        self.state = state
        self.path = path
        self.volume = volume

    def as_dict(self):
        return {'state': self.state, 'path': self.path, 'volume': self.volume}


def read_storage_cfg(path):
    """Return {storage id: {'type': ..., property: value}} parsed from Proxmox's storage.cfg.

    The format is Proxmox's section config: ``<type>: <id>`` at column 0,
    then indented ``<key> <value>`` lines; ``#`` starts a comment.
    Raise FileNotFoundError if the file is missing, SnippetsError if it
    cannot be read.
    """
    try:
        with open(path, 'rb') as stream:
            text = stream.read().decode('utf-8', 'replace')
    except FileNotFoundError:
        raise
    except OSError as error:
        raise SnippetsError('{0}: cannot read the storage configuration ({1})'.format(path, error.strerror))
    storages = {}
    current = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        if not line[0].isspace():
            kind, sep, name = line.partition(':')
            if sep and kind.strip() and name.strip():
                current = {'type': kind.strip()}
                storages[name.strip()] = current
            else:
                current = None
            continue
        if current is not None:
            key, _, value = line.strip().partition(' ')
            current[key] = value.strip()
    return storages


def snippets_dir(settings):
    """Return the snippets directory of ``proxmox.snippets_storage`` (it may not exist).

    Same as ``pvesm path <storage>:snippets/x`` without the file name. Raise
    SnippetsError if the storage is not defined, has no directory, or does not
    allow the ``snippets`` content type.
    """
    storage = settings['proxmox.snippets_storage']
    cfg_path = settings['proxmox.storage_cfg']
    try:
        storages = read_storage_cfg(cfg_path)
    except FileNotFoundError:
        storages = {'local': dict(BUILTIN_LOCAL, content='snippets')} if storage == 'local' else {}
    entry = storages.get(storage)
    if entry is None:
        raise SnippetsError('storage {0!r} is not defined in {1}; set proxmox.snippets_storage to a '
                            'directory storage with snippets content'.format(storage, cfg_path))
    if entry['type'] not in PATH_TYPES:
        raise SnippetsError('storage {0!r} is of type {1}, which cannot hold snippets; set '
                            'proxmox.snippets_storage to a directory storage'.format(storage, entry['type']))
    content = [part.strip() for part in entry.get('content', '').split(',')]
    if 'snippets' not in content:
        raise SnippetsError('storage {0!r} does not allow snippets; enable them with: pvesm set {0} '
                            '--content {1}'.format(storage, ','.join([c for c in content if c] + ['snippets'])))
    base = entry.get('path') or (os.path.join('/mnt/pve', storage) if entry['type'] in MOUNTED_TYPES else None)
    if not base:
        raise SnippetsError('storage {0!r} in {1} has no path'.format(storage, cfg_path))
    subdir = 'snippets'
    for item in entry.get('content-dirs', '').split(','):
        kind, sep, folder = item.strip().partition('=')
        if sep and kind == 'snippets' and folder:
            subdir = folder.strip('/')
    return os.path.join(base, subdir)


def snippet_path(settings):
    """Return the path the hookscript copy has (or would have) in the snippets storage."""
    return os.path.join(snippets_dir(settings), HOOKSCRIPT_NAME)


def volume_id(settings):
    """Return the volume id guests use as hookscript, e.g. 'local:snippets/accountdb-hook'."""
    return '{0}:snippets/{1}'.format(settings['proxmox.snippets_storage'], HOOKSCRIPT_NAME)


def is_ours(volume):
    """Return True if ``volume`` names our hookscript on any storage (``*:snippets/accountdb-hook``)."""
    _, sep, rest = (volume or '').partition(':')
    return bool(sep) and rest == 'snippets/' + HOOKSCRIPT_NAME


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(65536), b''):
            digest.update(block)
    return digest.hexdigest()


def _source_sha(settings):
    source = settings['proxmox.hookscript_source']
    try:
        return _sha256(source)
    except OSError as error:
        raise SnippetsError('{0}: cannot read the packaged hookscript ({1}); reinstall pve-hooks or set '
                            'proxmox.hookscript_source'.format(source, error.strerror))


def read_record(settings):
    """Given Settings, return the recorded {'path', 'sha256'} of the copy we installed, or None.

    None also when the record is unreadable or malformed (a warning is
    logged for a corrupt file): the copy is then treated as not ours.
    """
    record = statedir.read_json(statedir.path(settings, statedir.SNIPPET))
    if record is not None and isinstance(record.get('path'), str) and isinstance(record.get('sha256'), str):
        return record
    return None


def _write_record(settings, path, sha):
    statedir.write_json(statedir.path(settings, statedir.SNIPPET), {'path': path, 'sha256': sha}, mode=0o600)


def _drop_record(settings):
    try:
        os.unlink(statedir.path(settings, statedir.SNIPPET))
    except FileNotFoundError:
        pass


def status(settings):
    """Return the Status of the hookscript copy. Raise SnippetsError (storage or source unusable)."""
    directory = snippets_dir(settings)
    path = os.path.join(directory, HOOKSCRIPT_NAME)
    volume = volume_id(settings)
    if not os.path.isdir(directory):
        return Status(NO_DIR, path, volume)
    try:
        current = _sha256(path)
    except FileNotFoundError:
        return Status(MISSING, path, volume)
    except OSError as error:
        raise SnippetsError('{0}: cannot read the installed hookscript ({1})'.format(path, error.strerror))
    if current == _source_sha(settings):
        return Status(CURRENT, path, volume)
    record = read_record(settings)
    if record and record['path'] == path:
        return Status(OUTDATED if record['sha256'] == current else MODIFIED, path, volume)
    return Status(FOREIGN, path, volume)


def install(settings, force=False):
    """Copy the packaged hookscript into the snippets storage; return a one-line message.

    A missing copy is created and an outdated one of ours replaced; a copy
    that is current is left as it is (its mode set to 0755). A modified or
    foreign file is replaced only with ``force``. Raise SnippetsError when the
    snippets directory does not exist, or the file is not ours and not
    ``force``, or the copy fails.
    """
    found = status(settings)
    if found.state == NO_DIR:
        raise SnippetsError('{0} does not exist, so the hookscript was not installed there; enable snippets '
                            'on storage {1!r} (pvesm set {1} --content ...,snippets) or set '
                            'proxmox.snippets_storage, then run pve-hooks snippets install'.format(
                                os.path.dirname(found.path), settings['proxmox.snippets_storage']))
    if found.state in (MODIFIED, FOREIGN) and not force:
        what = 'was changed since pve-hooks installed it' if found.state == MODIFIED else 'was not installed by pve-hooks'
        raise SnippetsError('{0} {1}; left alone (pve-hooks snippets install --force replaces it)'.format(
            found.path, what))
    source = settings['proxmox.hookscript_source']
    sha = _source_sha(settings)
    if found.state == CURRENT:
        os.chmod(found.path, 0o755)
        _write_record(settings, found.path, sha)
        return '{0} is up to date ({1})'.format(found.path, found.volume)
    try:
        with open(source, 'rb') as stream:
            data = stream.read()
        statedir.atomic_write(found.path, data, 0o755)
    except OSError as error:
        raise SnippetsError('{0}: cannot write the hookscript ({1})'.format(found.path, error.strerror))
    _write_record(settings, found.path, sha)
    verb = 'installed' if found.state == MISSING else ('updated' if found.state == OUTDATED else 'replaced')
    return '{0} {1} ({2})'.format(verb, found.path, found.volume)


def remove(settings, force=False):
    """Delete the hookscript copy if it is ours and unchanged; return a one-line message.

    A copy still used by a guest (on any node of the cluster: a guest may
    migrate here) is kept, because its pre-start would fail without it. A
    modified or foreign file is kept unless ``force``. Raise SnippetsError
    when the copy is kept for one of those reasons, or cannot be deleted.
    """
    found = status(settings)
    if found.state in (NO_DIR, MISSING):
        _drop_record(settings)
        return 'no hookscript at {0}; nothing to remove'.format(found.path)
    if found.state in (MODIFIED, FOREIGN) and not force:
        what = 'was changed since pve-hooks installed it' if found.state == MODIFIED else 'was not installed by pve-hooks'
        raise SnippetsError('{0} {1}; kept (pve-hooks snippets remove --force deletes it)'.format(found.path, what))
    users = guestconf.guests_using(settings['proxmox.pve_root'], lambda volume: volume == found.volume)
    if users and not force:
        raise SnippetsError('{0} kept: guests {1} still use {2} as hookscript and could not start without it; '
                            'run pve-hooks detach --all on every node first'.format(
                                found.path, ', '.join(str(vmid) for vmid in users), found.volume))
    try:
        os.unlink(found.path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise SnippetsError('{0}: cannot delete the hookscript ({1})'.format(found.path, error.strerror))
    _drop_record(settings)
    return 'removed {0}'.format(found.path)
