"""``pve-hooks reconcile [--once]`` and ``pve-hooks status [--json]``.

Click stays at the edge: the daemon lives in :mod:`pve_hooks.daemon.loop`, the
status figures in :func:`collect_status`.
"""

import json
import os
import time

import click

from pve_hooks.config import loader as config
from pve_hooks.daemon import loop as daemon
from pve_hooks.observe import logs as logsetup
from pve_hooks.daemon import inventory_sync as reconcile
from pve_hooks import statedir as state
from pve_hooks.cli import UserError


@click.command('reconcile')
@click.option('--once', is_flag=True,
              help='One full pass (drain the outbox, reconcile the inventory, heartbeat), then exit; '
                   'exit 1 if AccountDB was unreachable.')
@click.pass_obj
def reconcile_command(obj, once):
    """Run the reconciler: deliver events, reconcile the inventory, send heartbeats.

    Started by systemd (Type=notify). SIGTERM stops it (in-flight events are
    returned to the outbox), SIGHUP reloads the configuration.
    """
    settings = obj.settings
    logsetup.configure(settings)
    try:
        if once:
            code, message = daemon.run_once(settings)
            if code:
                raise UserError(message)
            click.echo(message)
            return
        runner = daemon.Daemon(settings, reload_settings=lambda: config.load(obj.config_file, obj.env,
                                                                               obj.overrides))
        code = runner.run()
    except daemon.AlreadyRunning as error:
        raise UserError(str(error))
    except OSError as error:
        raise UserError('cannot start the reconciler: {0} ({1}); check paths.spool_dir and '
                        'paths.state_dir'.format(error.filename or '', error.strerror or error))
    raise SystemExit(code)


def collect_status(settings, clock=time.time):
    """Return the figures ``status`` shows, as a JSON-able dict (reads local files only).

    Keys: node, daemon {running, pid, heartbeat_at, heartbeat_age, connection,
    last_error}, outbox {depth, bytes, oldest_age, dead, quarantine, dropped},
    breaker {state, failures, opened_at, changed_at}, last_delivery_at,
    last_inventory_sync_at, last_heartbeat_sent_at, inventory {...},
    whitelist {state, age, count, ...} or None.
    """
    from pve_hooks.accountdb import breaker
    from pve_hooks.outbox.store import Outbox

    now = clock()
    daemon_state = state.read_json(daemon.daemon_state_path(settings), {}) or {}
    inventory_state = state.read_json(reconcile.state_path(settings), {}) or {}
    outbox_stats = Outbox.from_settings(settings, clock=clock).stats()
    breaker_record = breaker.from_settings(settings, clock=clock).snapshot()
    pid = daemon_state.get('pid')
    running = bool(pid) and not daemon_state.get('stopped_at') and _alive(pid)
    heartbeat_at = daemon_state.get('heartbeat_at')
    try:
        from pve_hooks.whitelist.cache import WhitelistCache
        whitelist = WhitelistCache.from_settings(settings, clock=clock).status(now)
    except ImportError:
        whitelist = None
    return {
        'node': settings['node'],
        'daemon': {'running': running, 'pid': pid if running else None, 'version': daemon_state.get('version'),
                   'heartbeat_at': heartbeat_at,
                   'heartbeat_age': None if heartbeat_at is None else max(0.0, now - heartbeat_at),
                   'connection': daemon_state.get('connection') if running else None,
                   'last_error': daemon_state.get('last_error') if running else None},
        'outbox': {key: outbox_stats.get(key) for key in ('depth', 'bytes', 'oldest_age', 'dead', 'quarantine',
                                                          'dropped')},
        'breaker': {key: breaker_record.get(key) for key in ('state', 'failures', 'opened_at', 'changed_at')},
        'last_delivery_at': daemon_state.get('last_delivery_at'),
        'last_inventory_sync_at': inventory_state.get('last_sync_at') or daemon_state.get('last_inventory_sync_at'),
        'last_heartbeat_sent_at': daemon_state.get('last_heartbeat_sent_at'),
        'inventory': {'guests': inventory_state.get('guests'), 'last_put_at': inventory_state.get('last_put_at'),
                      'read_ok': inventory_state.get('read_ok'), 'read_at': inventory_state.get('read_at')},
        'whitelist': whitelist,
    }


def _alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


def _ago(epoch, now):
    if epoch is None:
        return 'never'
    return '{0} ago'.format(logsetup.format_duration(max(0.0, now - epoch)))


def format_status(status, now):
    """Return the human-readable lines of ``status`` (a dict from :func:`collect_status`)."""
    run = status['daemon']
    outbox = status['outbox']
    lines = []
    if run['running']:
        lines.append('reconciler:      running (pid {0}), last loop {1}, AccountDB {2}'.format(
            run['pid'], _ago(run['heartbeat_at'], now), run['connection'] or 'unknown'))
        if run['last_error']:
            lines.append('last error:      {0}'.format(run['last_error']))
    else:
        lines.append('reconciler:      not running (start it: systemctl start pve-hooks)')
    oldest = outbox['oldest_age']
    lines.append('outbox:          {0} event{1} waiting{2}'.format(
        outbox['depth'], '' if outbox['depth'] == 1 else 's',
        ', oldest {0}'.format(logsetup.format_duration(oldest)) if oldest is not None else ''))
    lines.append('dead letters:    {0}{1}'.format(outbox['dead'], ' (see pve-hooks outbox list --dead)'
                                                  if outbox['dead'] else ''))
    lines.append('quarantined:     {0}'.format(outbox['quarantine']))
    if outbox.get('dropped'):
        lines.append('dropped (full):  {0}'.format(outbox['dropped']))
    lines.append('breaker:         {0}'.format(str(status['breaker']['state']).replace('_', '-')))
    lines.append('last delivery:   {0}'.format(_ago(status['last_delivery_at'], now)))
    lines.append('last inventory:  {0}'.format(_ago(status['last_inventory_sync_at'], now)))
    lines.append('last heartbeat:  {0}'.format(_ago(status['last_heartbeat_sent_at'], now)))
    whitelist = status['whitelist']
    if whitelist is None:
        lines.append('whitelist:       unavailable')
    elif whitelist.get('age') is None:
        lines.append('whitelist:       none cached (every guest reported)')
    else:
        lines.append('whitelist:       {0} VMIDs, fetched {1} ({2})'.format(
            whitelist.get('count'), _ago(now - whitelist['age'], now), whitelist.get('state')))
    return lines


@click.command('status')
@click.option('--json', 'as_json', is_flag=True, help='Print the figures as one JSON object.')
@click.pass_obj
def status_command(obj, as_json):
    """Show the outbox, dead letters, breaker, last delivery/inventory/heartbeat and whitelist age."""
    settings = obj.settings
    now = time.time()
    try:
        status = collect_status(settings)
    except OSError as error:
        raise UserError('cannot read the pve-hooks state: {0} ({1}); check paths.spool_dir and '
                        'paths.state_dir'.format(error.filename or '', error.strerror or error))
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
        return
    for line in format_status(status, now):
        click.echo(line)


COMMANDS = [reconcile_command, status_command]
