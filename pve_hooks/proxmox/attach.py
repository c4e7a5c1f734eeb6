"""Attach pve-hooks' hookscript to this node's guests, or detach it, through ``qm``/``pct``.

A guest has at most one hookscript. One that already runs a DIFFERENT script
is never overwritten without ``force`` (the other script belongs in
``hook.chain_dir`` so both run); templates are skipped unless asked; a guest
that already has ours is left unchanged, so running twice changes nothing.

Same as, per guest::

    qm set <vmid> --hookscript <storage>:snippets/accountdb-hook --digest <digest>
    pct set <vmid> --delete hookscript --digest <digest>

The decision (ours, foreign, template) is made on the config file as read;
``--digest`` (the SHA-1 of that file, see :mod:`pve_hooks.proxmox.guestconf`)
makes Proxmox refuse the change if the file changed in between, under its
config lock: qemu-server ``src/PVE/API2/Qemu.pm`` ``$update_vm_api`` dies
with "checksum mismatch (file change by other user?)", pve-container
``src/PVE/API2/LXC/Config.pm`` update_vm calls pve-common
``src/PVE/Tools.pm`` assert_if_modified, which dies with "detected modified
configuration - file changed by other user? Try again.". Then the config is
read again and the guest decided again: a hookscript someone set meanwhile
is skipped like any foreign one, never overwritten.

The daemon calls :func:`attach_guests` for ``reconcile.auto_attach`` with a
``tick`` that feeds systemd's watchdog: it is called per guest and every
second while qm/pct run.
"""

import contextlib
import logging
import os
import subprocess
import time

from pve_hooks.proxmox import guestconf
from pve_hooks.proxmox import snippets

log = logging.getLogger(__name__)

PROGRAMS = {'qemu': 'proxmox.qm', 'lxc': 'proxmox.pct'}
# Text in qm/pct's error that means the service sandbox kept /etc/pve read-only.
_READ_ONLY = 'Read-only file system'
# What qm / pct print when --digest no longer matches the config (sources: the module docstring).
DIGEST_MISMATCH = ('checksum mismatch (file change by other user?)',
                   'detected modified configuration - file changed by other user?')
ATTEMPTS = 3     # qm set tries per guest when the config keeps changing under us
TICK = 1.0       # seconds between two tick() calls while qm/pct run


class AttachError(Exception):
    """Nothing can be attached at all (e.g. the hookscript is not in the snippets storage)."""


class Summary:
    """What an attach or detach run did.

    ``changed``, ``unchanged``: lists of vmids; ``skipped``: list of
    (vmid, kind, detail) with kind 'foreign hookscript' or 'template';
    ``failed``: list of (vmid, reason). ``verb`` is 'attached' or 'detached'.
    """

    def __init__(self, verb, dry_run=False):
        self.verb = verb
        self.dry_run = dry_run
        self.changed = []
        self.unchanged = []
        self.skipped = []
        self.failed = []

    @property
    def ok(self):
        """True when no guest failed."""
        return not self.failed

    def foreign(self):
        """Return [(vmid, hookscript)] of the guests skipped for another hookscript."""
        return [(vmid, detail) for vmid, kind, detail in self.skipped if kind == 'foreign hookscript']

    def line(self):
        """Return 'attached N, unchanged N, skipped N (...), failed N (vmid: reason)'."""
        verb = 'would ' + self.verb[:-2] if self.dry_run else self.verb
        parts = ['{0} {1}'.format(verb, len(self.changed)), 'unchanged {0}'.format(len(self.unchanged))]
        text = 'skipped {0}'.format(len(self.skipped))
        groups = []
        for kind in ('foreign hookscript', 'template'):
            items = [str(vmid) + (' ' + detail if detail else '') for vmid, k, detail in self.skipped if k == kind]
            if items:
                groups.append('{0}: {1}'.format(kind, ', '.join(items)))
        parts.append(text + (' (' + '; '.join(groups) + ')' if groups else ''))
        text = 'failed {0}'.format(len(self.failed))
        if self.failed:
            text += ' (' + '; '.join('{0}: {1}'.format(vmid, reason) for vmid, reason in self.failed) + ')'
        parts.append(text)
        return ('dry run: ' if self.dry_run else '') + ', '.join(parts)

    def as_dict(self):
        return {'verb': self.verb, 'dry_run': self.dry_run, 'changed': self.changed,
                'unchanged': self.unchanged,
                'skipped': [{'vmid': v, 'reason': k, 'detail': d} for v, k, d in self.skipped],
                'failed': [{'vmid': v, 'reason': r} for v, r in self.failed]}


def run_program(argv, timeout, tick=None):
    """Run ``argv`` (no shell); return (exit status, combined stdout+stderr text).

    A program that is missing gives status 127, one killed at ``timeout``
    seconds gives 124, as a shell would report them. ``tick()``, when
    given, is called every second while the program runs.
    """
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
    except FileNotFoundError:
        return 127, '{0}: program not found'.format(argv[0])
    except PermissionError:
        return 126, '{0}: permission denied'.format(argv[0])
    deadline = time.monotonic() + timeout
    with process:
        while True:
            left = deadline - time.monotonic()
            try:
                output, _ = process.communicate(timeout=max(0.0, min(TICK, left)))
                break
            except subprocess.TimeoutExpired:
                if tick is not None:
                    tick()
                if left <= TICK:
                    process.kill()
                    process.communicate()
                    return 124, '{0} killed after {1:g} s'.format(' '.join(argv[:3]), timeout)
    return process.returncode, output.decode('utf-8', 'replace')


def _reason(status, output, argv):
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reason = '{0} {1} exited {2}'.format(argv[0].rsplit('/', 1)[-1], argv[1], status)
    if lines:
        reason += ': ' + lines[-1][:200]
    if _READ_ONLY in output:
        reason += ' (the service sandbox keeps /etc/pve read-only: see auto_attach in docs/packaging.md)'
    return reason


def _set(settings, runner, guest, args, tick):
    """Run ``qm|pct set <vmid> ARGS --digest <digest>``; return None, or why it failed (text)."""
    argv = [settings[PROGRAMS[guest.type]], 'set', str(guest.vmid)] + args
    if guest.digest:
        argv += ['--digest', guest.digest]
    tick()
    try:
        status, output = runner(argv, settings['proxmox.set_timeout'])
    finally:
        tick()
    if status == 0:
        return None
    reason = _reason(status, output, argv)
    return DigestMismatch(reason) if any(text in output for text in DIGEST_MISMATCH) else reason


class DigestMismatch(str):
    """_set's answer when Proxmox refused the change because the config changed since it was read."""


def _apply(settings, runner, todo, args, summary, progress, decide, tick):
    """Run ``set <vmid> <args>`` for each guest in ``todo`` (none on a dry run); return ``summary``.

    When Proxmox answers that the config changed since it was read, the
    guest is read again and ``decide(guest, summary)`` (True: still to do)
    says whether to try again with the new digest, up to ATTEMPTS times.
    """
    if summary.dry_run:
        summary.changed.extend(guest.vmid for guest in todo)
        return summary
    with (progress or contextlib.nullcontext)(todo) as items:
        for guest in items:
            tick()
            failure = _change(settings, runner, guest, args, summary, decide, tick)
            if failure:
                summary.failed.append((guest.vmid, failure))
    summary.failed.sort()
    return summary


def _change(settings, runner, guest, args, summary, decide, tick):
    """Change one guest, deciding again on a digest mismatch; return None or why it failed."""
    for _ in range(ATTEMPTS):
        failure = _set(settings, runner, guest, args, tick)
        if not isinstance(failure, DigestMismatch):
            if failure is None:
                summary.changed.append(guest.vmid)
            return failure
        try:
            guest = guestconf.reread(guest)
        except OSError as error:
            return 'its config changed and cannot be read again ({0})'.format(error.strerror or error)
        if not decide(guest, summary):   # now unchanged or skipped: recorded by decide
            log.warning('guest %s: its config changed while pve-hooks was changing it; decided again on '
                        'the new config: %s', guest.vmid, _fate(guest.vmid, summary))
            return None
    return 'its config changed during each of {0} attempts (another tool keeps editing it); try again ' \
           'later'.format(ATTEMPTS)


def _fate(vmid, summary):
    for skipped, kind, detail in summary.skipped:
        if skipped == vmid:
            return 'skipped ({0}{1})'.format(kind, ' ' + detail if detail else '')
    return 'unchanged'


def _targets(settings, vmids, summary, tick=None):
    """Return the Guests to consider, sorted by vmid; unknown vmids go to ``summary.failed``."""
    node = settings['node']
    guests, errors = guestconf.node_guests(settings['proxmox.pve_root'], node, tick)
    if vmids is None:
        wanted = sorted(set(guests) | set(errors))
    else:
        wanted = sorted(set(int(item['vmid'] if isinstance(item, dict) else item) for item in vmids))
    chosen = []
    for vmid in wanted:
        if vmid in errors:
            summary.failed.append((vmid, errors[vmid]))
        elif vmid not in guests:
            summary.failed.append((vmid, 'no guest {0} on node {1}'.format(vmid, node)))
        else:
            chosen.append(guests[vmid])
    return chosen


def _check_snippet(settings):
    """Raise AttachError unless the hookscript copy exists in the snippets storage."""
    try:
        path = snippets.snippet_path(settings)
    except snippets.SnippetsError as error:
        raise AttachError(str(error))
    if not os.path.isfile(path):
        raise AttachError('{0} does not exist, so guests could not start with it; run pve-hooks snippets '
                          'install first'.format(path))


def attach_guests(settings, vmids, runner=None, force=False, templates=False, dry_run=False, progress=None,
                  tick=None):
    """Attach our hookscript to guests of this node; return a Summary.

    ``vmids``: iterable of vmids, or of guest dicts with a 'vmid' key (as
    :mod:`pve_hooks.proxmox.inventory` returns them), or None for every guest of
    ``settings['node']``.
    ``runner(argv, timeout) -> (status, output)`` runs qm/pct (default
    :func:`run_program`). A guest with another hookscript is skipped unless
    ``force``; a template unless ``templates``. ``dry_run`` only reports.
    ``progress(guests)`` returns a context manager yielding an iterable over
    ``guests`` (e.g. a progress bar). ``tick()`` is called per guest and
    around (every second during) each qm/pct call: the daemon passes its
    watchdog's ping. Raise AttachError when the hookscript is not in the
    snippets storage and something would be attached.
    """
    tick = tick or _nothing
    runner = runner or _ticking(tick)
    summary = Summary('attached', dry_run)
    volume = snippets.volume_id(settings)

    def decide(guest, summary):
        """Record ``guest`` as unchanged or skipped and return False, or return True: to attach."""
        if guest.hookscript == volume:
            summary.unchanged.append(guest.vmid)
        elif guest.template and not templates:
            summary.skipped.append((guest.vmid, 'template', ''))
        elif guest.hookscript and not snippets.is_ours(guest.hookscript) and not force:
            summary.skipped.append((guest.vmid, 'foreign hookscript', guest.hookscript))
        else:
            return True
        return False

    todo = [guest for guest in _targets(settings, vmids, summary, tick) if decide(guest, summary)]
    if todo and not dry_run:
        _check_snippet(settings)
    return _apply(settings, runner, todo, ['--hookscript', volume], summary, progress, decide, tick)


def detach_guests(settings, vmids, runner=None, dry_run=False, progress=None, tick=None):
    """Remove our hookscript from guests of this node (templates included); return a Summary.

    Arguments as for :func:`attach_guests`. A guest without a hookscript is
    unchanged; one with another hookscript is skipped (never touched).
    """
    tick = tick or _nothing
    runner = runner or _ticking(tick)
    summary = Summary('detached', dry_run)

    def decide(guest, summary):
        """Record ``guest`` as unchanged or skipped and return False, or return True: to detach."""
        if not guest.hookscript:
            summary.unchanged.append(guest.vmid)
        elif not snippets.is_ours(guest.hookscript):
            summary.skipped.append((guest.vmid, 'foreign hookscript', guest.hookscript))
        else:
            return True
        return False

    todo = [guest for guest in _targets(settings, vmids, summary, tick) if decide(guest, summary)]
    return _apply(settings, runner, todo, ['--delete', 'hookscript'], summary, progress, decide, tick)


def _nothing():
    return None


def _ticking(tick):
    """Return a runner: :func:`run_program` calling ``tick`` while qm/pct run."""
    def run(argv, timeout):
        return run_program(argv, timeout, tick)
    return run


def attached(settings):
    """Return this node's guests as dicts: vmid, type, name, template, hookscript, state.

    ``state`` is 'ours' (our hookscript, the configured storage), 'ours-other-storage',
    'foreign' or 'none'. Guests whose config cannot be read are left out.
    """
    guests, _ = guestconf.node_guests(settings['proxmox.pve_root'], settings['node'])
    volume = snippets.volume_id(settings)
    rows = []
    for vmid in sorted(guests):
        guest = guests[vmid]
        if not guest.hookscript:
            state = 'none'
        elif guest.hookscript == volume:
            state = 'ours'
        elif snippets.is_ours(guest.hookscript):
            state = 'ours-other-storage'
        else:
            state = 'foreign'
        rows.append({'vmid': vmid, 'type': guest.type, 'name': guest.name, 'template': guest.template,
                     'hookscript': guest.hookscript, 'state': state})
    return rows
