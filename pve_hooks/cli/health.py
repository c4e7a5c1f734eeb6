"""``pve-hooks health``: run the node health checks by hand or as a Nagios/Icinga plugin."""

import click

from pve_hooks.config import loader as config
from pve_hooks.health import result as health
from pve_hooks.health import runner


@click.command('health')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON: {status, exit_code, checks: [...]}.')
@click.option('--nagios', is_flag=True, help='Print one plugin line: status, reasons, then perfdata after |.')
@click.option('--check', 'names', multiple=True, type=click.Choice(runner.NAMES), metavar='NAME',
              help='Run only this check (repeatable): ' + ', '.join(runner.NAMES) + '.')
@click.option('--offline', is_flag=True, help='Skip the AccountDB check (no network).')
@click.pass_obj
def health_command(obj, as_json, nagios, names, offline):
    """Check the node, its Proxmox API and services, and pve-hooks itself.

    Exit status follows the Nagios plugin convention: 0 OK, 1 WARNING,
    2 CRITICAL, 3 UNKNOWN (also for an invalid configuration).
    """
    if as_json and nagios:
        raise click.UsageError('--json and --nagios cannot be used together')
    context = click.get_current_context()
    try:
        settings = obj.load()
    except config.ConfigError as error:
        reason = 'invalid configuration: ' + '; '.join(error.errors)
        results = [health.CheckResult('config', health.UNKNOWN, reason)]
    else:
        results = runner.run_checks(settings, names or None, offline=offline)
    if as_json:
        click.echo(health.to_json(results))
    elif nagios:
        click.echo(health.nagios_line(results))
    else:
        click.echo(health.table(results))
    context.exit(health.exit_code(results))


COMMANDS = [health_command]
