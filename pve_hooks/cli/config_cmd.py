"""``pve-hooks config check|show|sample``."""

import json

import click

from pve_hooks.config import loader as config
from pve_hooks.config import schema
from pve_hooks.cli import ConfigProblem
from pve_hooks.config.sample import render_sample
from pve_hooks.observe.alerts import safe_url


def redact_userinfo(value):
    """Return ``value`` with the password of a ``scheme://user:password@host`` URL replaced."""
    scheme, sep, rest = value.partition('://')
    if not sep or '@' not in rest.split('/', 1)[0]:
        return value
    userinfo, _, host = rest.partition('@')
    user = userinfo.split(':', 1)[0]
    return '{0}://{1}:<secret>@{2}'.format(scheme, user, host)


@click.group('config')
def config_group():
    """Check, show or print a sample of the configuration."""


@config_group.command('check')
@click.pass_obj
def check(obj):
    """Validate the configuration; exit 0 when valid, 1 with every error listed."""
    try:
        settings = obj.load()
    except config.ConfigError as error:
        raise ConfigProblem(error.errors)
    try:  # the hookscript reads the file with its own small parser: it must agree
        config.check_hookscript_reads(settings)
    except config.ConfigError as error:
        raise ConfigProblem(error.errors)
    click.echo('configuration OK ({0})'.format(settings.file or 'defaults and environment only'))


@config_group.command('show')
@click.option('--json', 'as_json', is_flag=True, help='Print JSON: {key: {value, source}}.')
@click.pass_obj
def show(obj, as_json):
    """Print the effective configuration and where each value came from."""
    settings = obj.settings
    rows = []
    for option in schema.OPTIONS:
        value = settings[option.key]
        if option.secret and value is not None:
            # A secret URL (alerts.webhook) keeps its scheme and host, so the operator sees which service it is.
            value = safe_url(value) if isinstance(value, str) and '://' in value else '<secret>'
        elif isinstance(value, str):
            value = redact_userinfo(value)
        rows.append((option.key, value, settings.sources[option.key]))
    if as_json:
        click.echo(json.dumps({key: {'value': value, 'source': source} for key, value, source in rows},
                              indent=2, sort_keys=True))
        return
    width = max(len(key) for key, _, _ in rows)
    for key, value, source in rows:
        click.echo('{0:<{w}}  {1:<40}  ({2})'.format(key, json.dumps(value), source, w=width))


@config_group.command('sample')
def sample():
    """Print a commented sample config.yaml generated from the schema."""
    click.echo(render_sample(), nl=False)


COMMANDS = [config_group]
