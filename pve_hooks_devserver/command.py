"""``pve-hooks dev-accountdb``: run the reference AccountDB, or dump what it holds.

Needs no pve-hooks configuration: it is a stand-in for the operator's
AccountDB, for trials, demos and tests (docs/accountdb-api.md). It ships in
the pve-hooks-dev-accountdb package; ``pve_hooks.cli.dev_accountdb``
registers it as a subcommand of ``pve-hooks`` when that package is installed.
"""

import json
import logging
import os
import sqlite3
import ssl
import sys

import click

from pve_hooks.cli import UserError
from pve_hooks_devserver import faults
from pve_hooks_devserver.store import Store


def _load_faults(text):
    """Given --faults (JSON text or @FILE), return the validated spec; raise UserError."""
    if text is None:
        return None
    if text.startswith('@'):
        try:
            with open(text[1:], encoding='utf-8') as stream:
                text = stream.read()
        except OSError as error:
            raise UserError('--faults {0}: cannot read the file ({1})'.format(text, error.strerror))
    try:
        return faults.parse(text)
    except faults.FaultSpecError as error:
        raise UserError('--faults: {0}'.format(error))


@click.group('dev-accountdb', invoke_without_command=True)
@click.option('--listen', metavar='HOST:PORT',
              help='Address to serve on, e.g. 127.0.0.1:8765 (port 0: any free port).')
@click.option('--db', 'db', metavar='FILE', type=click.Path(dir_okay=False),
              help='SQLite database file (created if missing).')
@click.option('--token-file', metavar='FILE', type=click.Path(dir_okay=False),
              help='File holding the bearer token clients must send (mode 0600).')
@click.option('--faults', 'faults_text', metavar='JSON|@FILE',
              help='Fault injection rules to start with (see docs/accountdb-api.md).')
@click.option('--tls-cert', metavar='PEM', type=click.Path(dir_okay=False), help='Serve HTTPS with this certificate.')
@click.option('--tls-key', metavar='PEM', type=click.Path(dir_okay=False), help='Private key for --tls-cert.')
@click.option('-v', '--verbose', is_flag=True, help='Log every request on stderr.')
@click.pass_context
def dev_accountdb(ctx, listen, db, token_file, faults_text, tls_cert, tls_key, verbose):
    """Run the reference AccountDB (contract v1) on a SQLite database.

    For test and demo machines; installed by the pve-hooks-dev-accountdb
    package. Prints "dev-accountdb listening on URL" first; stops cleanly on
    SIGTERM or SIGINT. Subcommand: dump.
    """
    if ctx.invoked_subcommand is not None:
        return
    missing = [name for name, value in (('--listen', listen), ('--db', db), ('--token-file', token_file))
               if not value]
    if missing:
        raise click.UsageError('missing {0} (e.g. pve-hooks dev-accountdb --listen 127.0.0.1:8765 '
                               '--db accountdb.sqlite --token-file token)'.format(', '.join(missing)))
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError('--tls-cert and --tls-key go together')
    from pve_hooks.config import loader as config
    from pve_hooks_devserver import server

    spec = _load_faults(faults_text)
    try:
        config.read_token(token_file, check_owner=False)
    except config.TokenError as error:
        raise UserError(str(error))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format='%(message)s')
    try:
        server.serve(listen, db, token_file, spec, (tls_cert, tls_key) if tls_cert else None)
    except sqlite3.Error as error:
        raise UserError('{0}: cannot use the database ({1}); check the path and that it is an SQLite '
                        'file'.format(db, error))
    except ssl.SSLError as error:
        raise UserError('cannot load --tls-cert/--tls-key ({0})'.format(' '.join(str(error).split())))
    except ValueError as error:
        raise UserError(str(error))
    except OSError as error:
        raise UserError('cannot serve on {0}: {1}'.format(listen, error.strerror or error))


@dev_accountdb.command('dump')
@click.option('--db', 'db', metavar='FILE', required=True, type=click.Path(dir_okay=False),
              help='The database of a reference AccountDB.')
@click.option('--json', 'as_json', is_flag=True, help='Print everything as JSON.')
def dump(db, as_json):
    """Show what a reference AccountDB database holds."""
    if not os.path.isfile(db):
        raise UserError('{0}: no such database file; give the --db of a dev-accountdb run'.format(db))
    try:
        store = Store(db)
        try:
            data = store.dump()
        finally:
            store.close()
    except sqlite3.Error as error:
        raise UserError('{0}: cannot read the database ({1}); is it a dev-accountdb --db file?'.format(db, error))
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    events = data['events']
    click.echo('events: {0}'.format(events['total']))
    for node, count in sorted(events['per_node'].items()):
        click.echo('  {0}: {1}'.format(node, count))
    click.echo('inventories: {0}'.format(len(data['inventories'])))
    for node, item in sorted(data['inventories'].items()):
        click.echo('  {0}: {1} guests, etag {2}, {3} puts'.format(node, item['guests'], item['etag'], item['puts']))
    click.echo('heartbeats: {0}'.format(len(data['heartbeats'])))
    for node, item in sorted(data['heartbeats'].items()):
        click.echo('  {0}: {1} received, last at {2:.0f}'.format(node, item['count'], item['last_at']))
    whitelist = data['whitelist']
    vmids = whitelist['vmids']
    shown = ', '.join(str(v) for v in vmids[:20]) + (' ...' if len(vmids) > 20 else '')
    click.echo('whitelist: {0} ({1} VMIDs, etag {2})'.format(shown or 'empty (all guests allowed)',
                                                             len(vmids), whitelist['etag']))

