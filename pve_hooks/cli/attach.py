"""``pve-hooks attach|detach|attached`` and ``pve-hooks snippets install|remove|status``."""

import json
import sys

import click

from pve_hooks.proxmox import attach as attach_mod
from pve_hooks.proxmox import snippets as snippets_mod
from pve_hooks.cli import UserError

_VMID = click.IntRange(1, 999999999)


def _choose(all_guests, vmids):
    if all_guests and vmids:
        raise click.UsageError('give either --all or VMIDs, not both')
    if not all_guests and not vmids:
        raise click.UsageError('give VMIDs or --all')
    return None if all_guests else list(vmids)


def _progress(all_guests, label):
    """Return a progress factory for attach_guests: a bar only for --all on a terminal."""
    if not all_guests or not sys.stdout.isatty():
        return None
    return lambda items: click.progressbar(items, label=label, show_pos=True)


def _report(summary, settings):
    click.echo(summary.line())
    if summary.foreign():
        click.echo('guests with another hookscript were left alone: to run both, put the other script in '
                   '{0}/ (it is chained after ours) and re-run with --force'.format(
                       settings['hook.chain_dir'].rstrip('/')))
    if not summary.ok:
        sys.exit(1)


@click.command('attach')
@click.argument('vmids', nargs=-1, type=_VMID)
@click.option('--all', 'all_guests', is_flag=True, help='Every guest on this node.')
@click.option('--dry-run', is_flag=True, help='Only show what would change.')
@click.option('--force', is_flag=True, help='Replace another hookscript (chain it from hooks.d instead).')
@click.option('--templates', is_flag=True, help='Attach to templates too.')
@click.pass_obj
def attach(obj, vmids, all_guests, dry_run, force, templates):
    """Set the hookscript on this node's guests (qm set / pct set --hookscript).

    First copies the hookscript into the snippets storage if it is not there
    yet (as pve-hooks snippets install does). Guests that already have it are unchanged; guests with a different
    hookscript and templates are skipped unless --force / --templates.
    Exits 1 if any guest failed.
    """
    settings = obj.settings
    try:
        if not dry_run:
            _install_snippet(settings)
        summary = attach_mod.attach_guests(settings, _choose(all_guests, vmids), force=force,
                                           templates=templates, dry_run=dry_run,
                                           progress=_progress(all_guests, 'attaching'))
    except (attach_mod.AttachError, snippets_mod.SnippetsError) as error:
        raise UserError(str(error))
    _report(summary, settings)


def _install_snippet(settings):
    """Copy the hookscript into the snippets storage when it is missing or our older copy.

    Raise SnippetsError (with the fix) when the snippets directory does not exist.
    """
    if snippets_mod.status(settings).state in (snippets_mod.MISSING, snippets_mod.OUTDATED, snippets_mod.NO_DIR):
        click.echo(snippets_mod.install(settings))


@click.command('detach')
@click.argument('vmids', nargs=-1, type=_VMID)
@click.option('--all', 'all_guests', is_flag=True, help='Every guest on this node.')
@click.option('--dry-run', is_flag=True, help='Only show what would change.')
@click.pass_obj
def detach(obj, vmids, all_guests, dry_run):
    """Remove our hookscript from this node's guests (--delete hookscript).

    A different hookscript is never touched. Exits 1 if any guest failed.
    """
    settings = obj.settings
    summary = attach_mod.detach_guests(settings, _choose(all_guests, vmids), dry_run=dry_run,
                                       progress=_progress(all_guests, 'detaching'))
    _report(summary, settings)


@click.command('attached')
@click.option('--json', 'as_json', is_flag=True, help='Print a JSON list.')
@click.pass_obj
def attached(obj, as_json):
    """List this node's guests and their hookscript (ours, foreign or none)."""
    rows = attach_mod.attached(obj.settings)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo('{0:>9}  {1:<5}  {2:<20}  {3:<18}  {4}'.format('VMID', 'TYPE', 'NAME', 'STATE', 'HOOKSCRIPT'))
    for row in rows:
        name = (row['name'] or '-') + (' (template)' if row['template'] else '')
        click.echo('{0:>9}  {1:<5}  {2:<20}  {3:<18}  {4}'.format(
            row['vmid'], row['type'], name, row['state'], row['hookscript'] or '-'))


def _echo_or_fail(action, settings, force):
    try:
        click.echo(action(settings, force=force))
    except snippets_mod.SnippetsError as error:
        raise UserError(str(error))


@click.group('snippets')
def snippets_group():
    """Manage the hookscript's copy in the snippets storage (proxmox.snippets_storage)."""


@snippets_group.command('install')
@click.option('--force', is_flag=True, help='Replace a file pve-hooks did not install or that was changed.')
@click.pass_obj
def snippets_install(obj, force):
    """Copy the packaged hookscript into the snippets storage (idempotent)."""
    _echo_or_fail(snippets_mod.install, obj.settings, force)


@snippets_group.command('remove')
@click.option('--force', is_flag=True, help='Delete it even if changed, foreign or still used by guests.')
@click.pass_obj
def snippets_remove(obj, force):
    """Delete the hookscript copy if it is ours, unchanged and no guest uses it."""
    _echo_or_fail(snippets_mod.remove, obj.settings, force)


@snippets_group.command('status')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON: state, path, volume.')
@click.pass_obj
def snippets_status(obj, as_json):
    """Show where the hookscript copy is and whether it is current; exit 0 only when current."""
    try:
        found = snippets_mod.status(obj.settings)
    except snippets_mod.SnippetsError as error:
        raise UserError(str(error))
    if as_json:
        click.echo(json.dumps(found.as_dict()))
    else:
        click.echo('{0}: {1} ({2})'.format(found.path, found.state, found.volume))
    if found.state != snippets_mod.CURRENT:
        sys.exit(1)


COMMANDS = [attach, detach, attached, snippets_group]
