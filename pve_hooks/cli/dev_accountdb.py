"""``pve-hooks dev-accountdb``: registered here, implemented in the pve-hooks-dev-accountdb package.

The reference AccountDB (``pve_hooks_devserver``) is for test and demo
machines, so a production node, which installs only pve-hooks, carries no
server it does not run. Without it the command prints one line saying
which package to install and exits 2.
"""

import click

NOT_INSTALLED = ('pve-hooks: the reference AccountDB is not installed on this node; it is in the '
                 'pve-hooks-dev-accountdb package (apt install pve-hooks-dev-accountdb), for test and '
                 'demo machines only')


@click.command('dev-accountdb', add_help_option=False,
               context_settings={'ignore_unknown_options': True, 'allow_extra_args': True})
@click.pass_context
def not_installed(ctx):
    """Reference AccountDB: in package pve-hooks-dev-accountdb."""
    click.echo(NOT_INSTALLED, err=True)
    ctx.exit(2)


def _command():
    """Return the dev-accountdb command: the real one if its package is installed, else :func:`not_installed`."""
    try:
        import pve_hooks_devserver  # noqa: F401
    except ModuleNotFoundError as error:
        # The one optional component of pve-hooks, and the one place that
        # asks whether it is installed. Only the package itself missing means
        # "not installed"; anything failing inside an installed package is a
        # bug and is not hidden behind this message.
        if error.name != 'pve_hooks_devserver':
            raise
        return not_installed
    from pve_hooks_devserver.command import dev_accountdb

    return dev_accountdb


COMMANDS = [_command()]
