"""``pve-hooks whitelist show|refresh|check|add|remove|set``: the VMID whitelist from the shell.

The logic lives in :mod:`pve_hooks.whitelist.cache` (show, refresh, check) and
:mod:`pve_hooks.whitelist.edit` (add, remove, set); this module maps options
onto it and turns failures into one line and an exit code.
"""

import contextlib
import datetime
import json
import logging
import textwrap

import click

from pve_hooks.accountdb import errors
from pve_hooks.whitelist import cache as whitelist
from pve_hooks.whitelist import edit
from pve_hooks.observe.logs import format_duration
from pve_hooks.whitelist.vmidset import InputError, parse_item, parse_items

EXIT_INVALID = 1      # invalid input or configuration, or AccountDB refused (auth, rejected, config)
EXIT_USAGE = 2        # click's usage errors
EXIT_CONFLICT = 3     # 412: the whitelist changed concurrently; cache refetched, run again
EXIT_UNREACHABLE = 4  # AccountDB unreachable or answered garbage (transient); nothing changed

EXIT_CODES_HELP = """\b
Exit codes:
  0  success
  1  invalid input or configuration, or AccountDB refused the request
     (token, endpoint, rejected content); nothing was changed
  2  usage error
  3  the whitelist changed on AccountDB since it was read (HTTP 412);
     the cache was refetched: check it with `whitelist show`, run again
  4  AccountDB unreachable or its answer unusable; nothing was changed,
     the cached list is kept: retry later
\b
`whitelist check` exits 0 (allowed), 1 (not allowed) or 2 (error)."""


class WhitelistFailure(click.ClickException):
    """One line for the user and the exit code that says what kind of failure it was."""

    def __init__(self, message, exit_code=EXIT_INVALID):
        super().__init__(message)
        self.exit_code = exit_code


def _from_accountdb_error(error, what, outcome='nothing was changed'):
    """Return the WhitelistFailure for an AccountDBError; ``outcome`` says what it left as it was."""
    if error.kind == errors.TRANSIENT:
        return WhitelistFailure('{0}: AccountDB unreachable or its answer unusable ({1}); {2}, retry '
                                'later'.format(what, error, outcome), EXIT_UNREACHABLE)
    if error.kind == errors.AUTH:
        return WhitelistFailure('{0}: AccountDB refused the token ({1}); check accountdb.token_file'.format(
            what, error))
    if error.kind == errors.CONFIGURATION:
        hint = '' if 'accountdb.' in str(error) else '; check accountdb.url and accountdb.endpoints.whitelist'
        return WhitelistFailure('{0}: {1}{2}'.format(what, error, hint))
    return WhitelistFailure('{0}: AccountDB refused the request ({1}); {2}'.format(what, error, outcome))


def _input_failure(error):
    shown = error.errors[:20]
    more = len(error.errors) - len(shown)
    lines = shown + (['... and {0} more'.format(more)] if more > 0 else [])
    if len(lines) == 1:
        return WhitelistFailure('{0}; nothing was sent'.format(lines[0]))
    return WhitelistFailure('invalid input, nothing was sent:\n  ' + '\n  '.join(lines))


@contextlib.contextmanager
def _quiet_warnings():
    """The command prints its own one-line outcome; the whitelist modules' warnings would repeat it."""
    logger = logging.getLogger('pve_hooks.whitelist')   # the parent of cache, filter and edit
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _client(settings):
    from pve_hooks.accountdb import client as accountdb

    return accountdb.Client(settings)


def _when(epoch):
    if epoch is None:
        return 'never'
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


def _age(seconds):
    return 'unknown' if seconds is None else format_duration(seconds)


def _summary(cache):
    """One line: what is cached and what it means for reporting."""
    if not cache.has_list:
        return 'no whitelist cached: every guest is reported (nothing filtered)'
    count = len(cache.vmids)
    if not count:
        return 'whitelist is empty: every guest is reported (nothing filtered)'
    return 'whitelist: {0} VMID{1} (only these guests are reported), ETag {2}'.format(
        count, '' if count == 1 else 's', cache.etag)


@click.group('whitelist', epilog=EXIT_CODES_HELP)
def whitelist_group():
    """Show, refresh, check and change AccountDB's VMID whitelist.

    A non-empty whitelist means this node reports only those guests; an
    empty one means all guests. Changes are sent as ONE bulk request with
    If-Match, so two operators cannot silently overwrite each other.
    VMIDs are 100..999999999; a range is written LOW-HIGH, e.g. 100-199.
    """


@whitelist_group.command('show', epilog=EXIT_CODES_HELP)
@click.option('--json', 'as_json', is_flag=True, help='Print the cache status and ranges as JSON.')
@click.pass_obj
def show(obj, as_json):
    """Print the cached list, its age and ETag (no request).

    The list is shown compactly as ranges; --json adds the full status.
    """
    cache = whitelist.WhitelistCache.from_settings(obj.settings)
    status = cache.status()
    if as_json:
        status['ranges'] = [list(pair) for pair in cache.vmids.ranges]
        status['compact'] = cache.vmids.format()
        click.echo(json.dumps(status, indent=2, sort_keys=True))
        return
    click.echo(_summary(cache))
    if cache.vmids:
        click.echo(textwrap.fill(cache.vmids.format(', '), width=96, initial_indent='  ',
                                 subsequent_indent='  ', break_on_hyphens=False))
    if cache.has_list:
        click.echo('fetched {0} ({1} ago); Last-Modified {2}'.format(
            _when(cache.fetched_at), _age(status['age']), cache.last_modified or 'none'))
    click.echo('state: {0}'.format(status['state']))
    if status['last_error']:
        click.echo('last refresh failed at {0}: {1}'.format(_when(status['last_attempt_at']),
                                                           status['last_error']))


@whitelist_group.command('refresh', epilog=EXIT_CODES_HELP)
@click.pass_obj
def refresh(obj):
    """Fetch the whitelist now (conditional GET) and update the cache."""
    settings = obj.settings
    cache = whitelist.WhitelistCache.from_settings(settings)
    client = _client(settings)
    try:
        with _quiet_warnings():
            outcome = cache.refresh(client)
    finally:
        client.close()
    if outcome == whitelist.FAILED:
        raise _from_accountdb_error(cache.last_exception, 'refresh failed', 'the cached list is kept')
    click.echo('{0} ({1})'.format(_summary(cache), 'not modified' if outcome == whitelist.UNCHANGED
                                  else 'fetched'))


@whitelist_group.command('check', epilog=EXIT_CODES_HELP,
                         short_help='Say whether a guest is reported (exit 0 yes, 1 no).')
@click.argument('vmid')
@click.pass_obj
def check(obj, vmid):
    """Say whether a guest is reported, per the cache (exit 0 yes, 1 no).

    Reads only the cached list (no request); a stale cache is mentioned.
    """
    try:
        low, high = parse_item(vmid)
    except ValueError as error:
        raise WhitelistFailure('check: {0}'.format(error), EXIT_USAGE)
    if low != high:
        raise WhitelistFailure('check takes one VMID, not a range ({0!r})'.format(vmid), EXIT_USAGE)
    try:
        settings = obj.settings
    except click.ClickException as error:
        error.exit_code = EXIT_USAGE
        raise
    cache = whitelist.WhitelistCache.from_settings(settings)
    with _quiet_warnings():
        allowed = cache.allows(low)
    stale = ' (the cached list is stale: {0} old)'.format(_age(cache.age())) if cache.is_stale() else ''
    if allowed:
        reason = 'on the whitelist' if cache.filter.active else _summary(cache)
        click.echo('VMID {0} is allowed: {1}{2}'.format(low, reason, stale))
        return
    click.echo('VMID {0} is not allowed: not on the whitelist ({1} VMIDs cached){2}'.format(
        low, len(cache.vmids), stale))
    click.get_current_context().exit(1)


def _apply(obj, **kwargs):
    settings = obj.settings
    cache = whitelist.WhitelistCache.from_settings(settings)
    client = _client(settings)
    try:
        with _quiet_warnings():
            sent = edit.change(client, cache, limit=settings['whitelist.max_change'], **kwargs)
    except InputError as error:
        raise _input_failure(error)
    except edit.ConcurrentChange as error:
        raise WhitelistFailure(str(error), EXIT_CONFLICT)
    except errors.AccountDBError as error:
        raise _from_accountdb_error(error, 'whitelist not changed')
    finally:
        client.close()
    if not sent:
        click.echo('nothing to change; {0}'.format(_summary(cache)))
        return
    parts = []
    if sent.add:
        parts.append('added {0} ({1})'.format(len(sent.add), _short(sent.add)))
    if sent.remove:
        parts.append('removed {0} ({1})'.format(len(sent.remove), _short(sent.remove)))
    click.echo('{0}; {1}'.format(', '.join(parts), _summary(cache)))


def _short(vmids, limit=80):
    text = vmids.format()
    return text if len(text) <= limit else text[:limit].rsplit(',', 1)[0] + ',...'


def _parse_arguments(items):
    try:
        return parse_items(items, 'argument')
    except InputError as error:
        raise _input_failure(error)


def _change_command(name, verb):
    """Return the ``add`` or ``remove`` command (they differ only in the direction)."""

    @whitelist_group.command(name, epilog=EXIT_CODES_HELP, help=(
        '{0} VMIDs or ranges (one request, If-Match).\n\nThe change is made against the cached '
        'list (fetched first if nothing is cached) and sent with If-Match: <cached ETag>. Only the '
        'effective change is sent.'.format(verb)))
    @click.argument('items', nargs=-1, required=True, metavar='VMID|RANGE...')
    @click.pass_obj
    def command(obj, items):
        _apply(obj, **{name: _parse_arguments(items)})

    return command


add = _change_command('add', 'Add')
remove = _change_command('remove', 'Remove')


@whitelist_group.command('set', epilog=EXIT_CODES_HELP)
@click.option('--from-file', 'source', type=click.File('rb'), required=True, metavar='FILE',
              help="One VMID or range per line ('#' comments, blank lines allowed); '-' reads stdin.")
@click.option('--allow-empty', is_flag=True,
              help='Accept an empty input: clears the whitelist, so every guest is reported.')
@click.pass_obj
def set_(obj, source, allow_empty):
    """Make the whitelist exactly FILE's list (one request, If-Match).

    Fetches the current list, then sends only the difference (adds and
    removes) in one request with If-Match: <fresh ETag>.
    """
    name = getattr(source, 'name', '-')
    label = 'stdin' if name in ('-', '<stdin>') else click.format_filename(name)
    try:
        lines = source.read().splitlines()
    except OSError as error:
        raise WhitelistFailure('{0}: cannot read ({1})'.format(label, error.strerror or error))
    try:
        wanted = parse_items(lines, '{0} line'.format(label))
    except InputError as error:
        raise _input_failure(error)
    if not wanted and not allow_empty:
        raise WhitelistFailure('{0} lists no VMIDs; that would clear the whitelist so every guest is '
                               'reported: pass --allow-empty if that is what you want; nothing was '
                               'sent'.format(label))
    _apply(obj, set_to=wanted)


COMMANDS = [whitelist_group]
