"""The ``pve-hooks`` command: one click group; each area adds its commands.

The group callback only records --config and --set; the configuration is
loaded on first use through :class:`Context`, so ``config check`` can report
errors itself and every other command turns them into one clear message.
"""

import logging
import sys

import click

from pve_hooks import __version__
from pve_hooks.config import loader as config


class Context:
    """What every subcommand receives (``@click.pass_obj``)."""

    def __init__(self, config_file, overrides, env=None):
        self.config_file = config_file
        self.overrides = tuple(overrides)
        self.env = env
        self._settings = None

    def load(self):
        """Return the Settings; raise config.ConfigError."""
        if self._settings is None:
            self._settings = config.load(self.config_file, self.env, self.overrides)
        return self._settings

    @property
    def settings(self):
        """Return the Settings, or exit 1 with every configuration error listed."""
        try:
            return self.load()
        except config.ConfigError as error:
            raise ConfigProblem(error.errors)


class ConfigProblem(click.ClickException):
    """The configuration is invalid: print every error, exit 1."""

    exit_code = 1

    def __init__(self, errors):
        super().__init__('invalid configuration:\n  ' + '\n  '.join(errors))


class UserError(click.ClickException):
    """An error the user can fix; click prints 'Error: <message>' and exits 1."""

    exit_code = 1


@click.group(context_settings={'help_option_names': ['-h', '--help'], 'max_content_width': 100})
@click.version_option(__version__, prog_name='pve-hooks')
@click.option('--config', 'config_file', metavar='FILE', type=click.Path(dir_okay=False),
              help='Configuration file (default: $PVE_HOOKS_CONFIG or /etc/pve-hooks/config.yaml).')
@click.option('--set', 'overrides', metavar='SECTION.KEY=VALUE', multiple=True,
              help='Override one option; repeatable; highest precedence.')
@click.pass_context
def main(ctx, config_file, overrides):
    """Keep AccountDB in step with the guests on this Proxmox VE node."""
    ctx.obj = Context(config_file, overrides)


def _register():
    from pve_hooks.cli import config_cmd, whitelist, attach, dev_accountdb, health, reconcile, outbox

    for module in (config_cmd, whitelist, attach, dev_accountdb, health, reconcile, outbox):
        for command in module.COMMANDS:
            main.add_command(command)


_register()


def run():
    """Console entry point: never shows a traceback for an unexpected error.

    Errors a user can fix are click exceptions (their own message and exit
    status). Anything else is a bug: one line naming it, the traceback only
    in the debug log, exit 70 (EX_SOFTWARE). Ctrl-C exits 130.
    """
    try:
        main(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 - the promise above: a bug is one line, not a traceback
        logging.getLogger('pve_hooks.cli').debug('traceback of the unexpected error', exc_info=True)
        try:
            sys.stderr.write('pve-hooks: unexpected {0} ({1}); this is a bug, please report it with the '
                             'command you ran\n'.format(type(error).__name__, error))
        except Exception:  # noqa: BLE001 - stderr itself is gone
            pass
        sys.exit(70)
