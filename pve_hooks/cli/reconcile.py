"""``pve-hooks reconcile [--once]`` and ``pve-hooks status [--json]``.

Click stays at the edge: the daemon lives in :mod:`pve_hooks.daemon.loop`, the
status figures in :mod:`pve_hooks.observe.status`.
"""

import json

import click

from pve_hooks.cli import UserError
from pve_hooks.config import loader as config
from pve_hooks.daemon import loop as daemon
from pve_hooks.observe import logs as logsetup
from pve_hooks.observe import status as status_mod


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
    except config.ConfigError as error:  # Daemon.start: the hookscript would read the file otherwise, or a timeout
        raise UserError('refusing to start: {0}'.format('; '.join(error.errors)))   # exceeds the watchdog
    except OSError as error:
        raise UserError('cannot start the reconciler: {0} ({1}); check paths.spool_dir and '
                        'paths.state_dir'.format(error.filename or '', error.strerror or error))
    raise SystemExit(code)


@click.command('status')
@click.option('--json', 'as_json', is_flag=True, help='Print the figures as one JSON object.')
@click.pass_obj
def status_command(obj, as_json):
    """Show the outbox, dead letters, breaker, last delivery/inventory/heartbeat and whitelist age."""
    settings = obj.settings
    try:
        status = status_mod.read(settings)
    except OSError as error:
        raise UserError('cannot read the pve-hooks state: {0} ({1}); check paths.spool_dir and '
                        'paths.state_dir'.format(error.filename or '', error.strerror or error))
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
        return
    for line in status_mod.lines(status):
        click.echo(line)


COMMANDS = [reconcile_command, status_command]
