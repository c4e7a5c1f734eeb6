"""``pve-hooks outbox status|list|show|retry|purge``: look into and repair the local outbox."""

import json
import time

import click

from pve_hooks.cli import UserError
from pve_hooks.outbox import admin
from pve_hooks.outbox.store import Outbox


def _outbox(obj):
    return Outbox.from_settings(obj.settings)


def _guard(function, *args):
    """Call ``function``; turn an OSError (e.g. not root) into one clear UserError."""
    try:
        return function(*args)
    except OSError as error:
        raise UserError('cannot use the outbox at {0}: {1}; run as root or check paths.spool_dir'.format(
            error.filename or 'the spool directory', error.strerror or error))


def _age(seconds):
    if seconds is None:
        return '-'
    seconds = int(seconds)
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60)):
        if seconds >= size:
            return '{0}{1}'.format(seconds // size, unit)
    return '{0}s'.format(seconds)


@click.group('outbox')
def outbox_group():
    """Inspect and repair the local event outbox (paths.spool_dir)."""


@outbox_group.command('status')
@click.option('--json', 'as_json', is_flag=True, help='Print the figures as one JSON object.')
@click.pass_obj
def status(obj, as_json):
    """Depth, oldest age, dead and quarantined events, events dropped because the outbox was full."""
    box = _outbox(obj)
    stats = _guard(box.stats)
    if as_json:
        click.echo(json.dumps(dict(stats, spool_dir=box.spool_dir), sort_keys=True))
        return
    click.echo('outbox {0}'.format(box.root))
    click.echo('  waiting:     {0} events ({1} bytes; limits {2} events, {3} bytes)'.format(
        stats['depth'], stats['bytes'], box.max_events, box.max_bytes))
    click.echo('  oldest:      {0}'.format(_age(stats['oldest_age'])))
    click.echo('  dead:        {0}{1}'.format(stats['dead'], ' (see pve-hooks outbox list --dead)' if stats['dead'] else ''))
    click.echo('  quarantined: {0}{1}'.format(
        stats['quarantine'], ' (see pve-hooks outbox list --quarantine)' if stats['quarantine'] else ''))
    click.echo('  dropped:     {0}{1}'.format(
        stats['dropped'], ' (events lost to a full outbox)' if stats['dropped'] else ''))


@outbox_group.command('list')
@click.option('--dead', 'which', flag_value='dead', help='List dead events with their reason.')
@click.option('--quarantine', 'which', flag_value='quarantine', help='List quarantined files with their reason.')
@click.option('--limit', type=click.IntRange(1), default=None, help='Show at most this many.')
@click.pass_obj
def list_(obj, which, limit):
    """List waiting events in delivery order (or dead / quarantined ones)."""
    box = _outbox(obj)
    now = time.time()
    if which == 'quarantine':
        rows = _guard(admin.list_quarantine, box)[:limit]
        for name, reason in rows:
            click.echo('{0}  {1}'.format(name, (reason or {}).get('reason', '(no reason recorded)')))
        return
    if which == 'dead':
        for entry, reason in _guard(admin.list_dead, box)[:limit]:
            click.echo('{0}  vmid {1:<9}  {2}  {3}'.format(entry.event_id, entry.vmid, _age(now - entry.mtime),
                                                          (reason or {}).get('reason', '(no reason recorded)')))
        return
    for entry in _guard(admin.list_ready, box, limit):
        click.echo('{0}  seq {1}  vmid {2:<9}  age {3}'.format(entry.event_id, entry.seq, entry.vmid,
                                                                _age(now - entry.mtime)))


@outbox_group.command('show')
@click.argument('event_id')
@click.pass_obj
def show(obj, event_id):
    """Print one event (JSON) and where it is: ready, claimed, dead or quarantine."""
    found = _guard(admin.show, _outbox(obj), event_id.strip().lower())
    if found is None:
        raise UserError('event {0} is not in the outbox (it may have been delivered); list events with '
                        'pve-hooks outbox list'.format(event_id))
    state, event = found
    click.echo('state: {0}'.format(state))
    click.echo(json.dumps(event, indent=2) if event is not None else '(file unreadable or corrupt)')


@outbox_group.command('retry')
@click.option('--dead', is_flag=True, help='Move every dead event back to ready for delivery.')
@click.pass_obj
def retry(obj, dead):
    """Send dead events again (--dead); waiting events are retried by the daemon by itself."""
    box = _outbox(obj)
    if dead:
        moved = _guard(admin.retry_dead, box)
        click.echo('{0} dead events moved back to ready; the daemon sends them next'.format(moved))
        return
    stats = _guard(box.stats)
    click.echo('{0} events are waiting; the daemon retries them by itself with backoff. Use --dead to send '
               'the {1} dead events again.'.format(stats['depth'], stats['dead']))


@outbox_group.command('purge')
@click.option('--dead', is_flag=True, help='Delete every dead event (required).')
@click.pass_obj
def purge(obj, dead):
    """Delete dead events for good (--dead)."""
    if not dead:
        raise click.UsageError('purge needs --dead (only dead events can be purged)')
    removed = _guard(admin.purge_dead, _outbox(obj))
    click.echo('{0} dead events deleted'.format(removed))


COMMANDS = [outbox_group]
