"""Load, merge and validate the configuration; read the token file.

Sources, lowest to highest precedence: the schema's defaults, the YAML file,
the environment (``PVE_HOOKS_<SECTION>__<KEY>``), the command line
(``--set section.key=value``). Every error is collected with its key and
source before anything is reported.

The daemon and the CLI use :func:`load`; the hookscript has its own
stdlib-only reader (:mod:`pve_hooks.hook.settings`) over the same schema.
"""

import difflib
import os
import stat

from pve_hooks.config import schema
from pve_hooks.hook.miniyaml import MAX_BYTES, MAX_DEPTH, read_bounded  # noqa: F401 - the hookscript's bounds

DEFAULT_FILE = '/etc/pve-hooks/config.yaml'
ENV_FILE = 'PVE_HOOKS_CONFIG'
ENV_PREFIX = 'PVE_HOOKS_'


class ConfigError(Exception):
    """The configuration is invalid. ``errors`` lists one line per problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__('; '.join(self.errors))


class TokenError(Exception):
    """The token file is missing, unreadable, insecure or empty; the message says the fix."""


class Settings(dict):
    """Effective configuration: dotted key -> typed value.

    ``sources`` maps each key to where its value came from: ``default``, the
    file's path, ``env PVE_HOOKS_...`` or ``cli --set``. ``file`` is the
    configuration file that was read (None when none was).
    """

    def __init__(self, values, sources, file=None):
        super().__init__(values)
        self.sources = dict(sources)
        self.file = file

    def section(self, prefix):
        """Return {rest: value} for the keys under ``prefix.`` (e.g. 'accountdb.endpoints')."""
        start = prefix + '.'
        return {key[len(start):]: value for key, value in self.items() if key.startswith(start)}

    def endpoint(self, name, **params):
        """Return the AccountDB URL path for endpoint ``name`` with ``{node}`` etc. substituted."""
        path = self['accountdb.endpoints.' + name]
        params.setdefault('node', self['node'])
        for key, value in params.items():
            path = path.replace('{' + key + '}', str(value))
        return path


def config_path(explicit=None, env=None):
    """Return (path, named_explicitly) for the configuration file.

    ``explicit`` is the --config option; otherwise PVE_HOOKS_CONFIG in ``env``;
    otherwise the default file, which may be missing.
    """
    env = os.environ if env is None else env
    if explicit:
        return explicit, True
    if env.get(ENV_FILE):
        return env[ENV_FILE], True
    return DEFAULT_FILE, False


def _flatten(mapping, prefix, errors, source, out):
    for key, value in mapping.items():
        if not isinstance(key, str):
            errors.append('{0}{1!r}: keys must be strings (from {2})'.format(prefix, key, source))
            continue
        dotted = prefix + key
        if isinstance(value, dict):
            if dotted in schema.BY_KEY:
                out[dotted] = value  # rejected by the type check with a clear message
            else:
                _flatten(value, dotted + '.', errors, source, out)
        else:
            out[dotted] = value


def _unknown(key, source):
    candidates = difflib.get_close_matches(key, list(schema.BY_KEY), n=1, cutoff=0.6)
    if not candidates:
        # A misspelt last part under a right section: suggest by the last part.
        section = key.rsplit('.', 1)[0]
        same = [k for k in schema.BY_KEY if k.rsplit('.', 1)[0] == section]
        candidates = difflib.get_close_matches(key, same, n=1, cutoff=0.4)
    hint = "; did you mean '{0}'?".format(candidates[0]) if candidates else ''
    return '{0}: unknown option (from {1}){2}'.format(key, source, hint)


def _bounded_loader():
    """Return a yaml.SafeLoader subclass that refuses anchors and aliases and nesting deeper than MAX_DEPTH.

    An alias bomb (a few hundred bytes, each level ten aliases of the one
    before) takes seconds and memory growing tenfold per level to expand,
    and deep nesting exhausts the recursion limit; the configuration needs
    neither (and the hookscript's reader, miniyaml, refuses both too).
    """
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, 'anchor', None) is not None:
                raise yaml.composer.ComposerError(None, None, 'anchors and aliases (&name, *name) are not '
                                                  'allowed; write the values out', event.start_mark)
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    raise yaml.composer.ComposerError(None, None, 'nested deeper than {0} levels; the '
                                                      'configuration is two levels deep'.format(MAX_DEPTH),
                                                      event.start_mark)
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return BoundedLoader


def read_yaml(path):
    """Return the mapping in YAML file ``path`` ({} for an empty file).

    Raise ConfigError naming the file (and line and column for a syntax
    error) if it cannot be read, is not a regular file, is larger than
    MAX_BYTES, uses anchors or aliases, is nested deeper than MAX_DEPTH or
    is not a mapping.
    """
    import yaml

    try:
        text = read_bounded(path)
    except OSError as error:
        raise ConfigError(['{0}: cannot read the configuration file ({1}); check the path '
                           'and permissions'.format(path, error.strerror or error)])
    try:
        data = yaml.load(text, Loader=_bounded_loader())  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise ConfigError(['{0}: malformed YAML: nested too deeply; the configuration is two levels '
                           'deep'.format(path)])
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = ', line {0}, column {1}'.format(mark.line + 1, mark.column + 1) if mark else ''
        problem = error.problem or error.context or 'invalid YAML'
        raise ConfigError(['{0}{1}: malformed YAML: {2}'.format(path, where, problem)])
    except yaml.YAMLError as error:
        raise ConfigError(['{0}: malformed YAML: {1}'.format(path, str(error).splitlines()[0])])
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(['{0}: the configuration must be a mapping of sections, got a {1}'.format(
            path, type(data).__name__)])
    return data


def parse_overrides(pairs):
    """Given ``['a.b=v', ...]`` from --set, return ({key: raw value}, [errors]).

    Each item without a '=' gives one error; the others are still returned.
    """
    result, errors = {}, []
    for pair in pairs:
        key, sep, value = pair.partition('=')
        if not sep or not key.strip():
            errors.append("--set {0!r}: expected section.key=value".format(pair))
            continue
        result[key.strip()] = value
    return result, errors


def env_overrides(env):
    """Return {dotted key: (raw value, variable name)} for PVE_HOOKS_* variables in ``env``."""
    result = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_FILE:
            continue
        key = name[len(ENV_PREFIX):].lower().replace('__', '.')
        result[key] = (value, name)
    return result


def load(config_file=None, env=None, overrides=(), require_file=None):
    """Load the effective configuration.

    ``config_file`` is an explicit --config path; ``env`` the environment
    (default os.environ); ``overrides`` the ``--set`` pairs. A missing default
    file is fine; a missing file that was named is an error.

    Return a :class:`Settings`. Raise :class:`ConfigError` listing every
    problem, each with its key (or file position) and source.
    """
    env = os.environ if env is None else env
    path, explicit = config_path(config_file, env)
    if require_file is not None:
        explicit = require_file
    errors = []
    layers = []  # (source, {key: raw})

    file_used = None
    if explicit or os.path.exists(path):
        if explicit and not os.path.exists(path):
            raise ConfigError(['{0}: configuration file not found; create it (pve-hooks config sample '
                               '> {0}) or name another with --config or PVE_HOOKS_CONFIG'.format(path)])
        data = read_yaml(path)
        flat = {}
        _flatten(data, '', errors, path, flat)
        layers.append((path, flat))
        file_used = path

    env_layer = env_overrides(env)
    for key, (raw, name) in env_layer.items():
        layers.append(('env ' + name, {key: raw}))

    cli, cli_errors = parse_overrides(overrides)
    errors.extend(cli_errors)
    layers.append(('cli --set', cli))

    values = {}
    sources = {}
    for option in schema.OPTIONS:
        sources[option.key] = 'default'
    for source, layer in layers:
        for key, raw in layer.items():
            option = schema.BY_KEY.get(key)
            if option is None:
                errors.append(_unknown(key, source))
                continue
            try:
                values[key] = option.type.convert(raw)
            except ValueError as error:
                shown = '<secret>' if option.secret else None
                message = str(error) if shown is None else 'expected {0}'.format(option.type.name)
                errors.append('{0}: {1} (from {2})'.format(key, message, source))
                continue
            sources[key] = source
    for option in schema.OPTIONS:
        if option.key not in values:
            values[option.key] = option.default_value()
    errors.extend(_cross_checks(values, sources))
    if errors:
        raise ConfigError(errors)
    return Settings(values, sources, file_used)


def _cross_checks(values, sources):
    """Return errors for combinations of options that cannot work together."""
    errors = []
    for low, high in (('health.rootfs_warning', 'health.rootfs_critical'),
                      ('health.memory_warning', 'health.memory_critical'),
                      ('health.load_warning', 'health.load_critical'),
                      ('health.outbox_age_warning', 'health.outbox_age_critical'),
                      ('retry.base_delay', 'retry.max_delay'),
                      ('hook.chain_timeout', 'hook.chain_deadline')):
        if values[low] > values[high]:
            errors.append('{0}: {1} is above {2} ({3}) (from {4})'.format(
                low, values[low], high, values[high], sources[low]))
    if values['logging.target'] == 'file' and not values['logging.file']:
        errors.append('logging.file: must be set when logging.target is file (from {0})'.format(
            sources['logging.target']))
    if not values['node'] or '/' in values['node'] or ' ' in values['node']:
        errors.append('node: expected a node name such as pve1, got {0!r} (from {1})'.format(
            values['node'], sources['node']))
    return errors


def read_token(path, check_owner=True):
    """Return the bearer token stored in ``path``, stripped of white space.

    Refuse (raise TokenError with the fix) when the file is missing, not a
    regular file, not owned by root (when ``check_owner``), readable or
    writable by group or others, unreadable, or empty. The token itself is
    never part of a message.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise TokenError('{0}: token file not found; write the AccountDB token there '
                         '(install -m 600 -o root /dev/stdin {0}) or set accountdb.token_file'.format(path))
    except OSError as error:
        raise TokenError('{0}: cannot read the token file ({1})'.format(path, error.strerror))
    if not stat.S_ISREG(info.st_mode):
        raise TokenError('{0}: token file is not a regular file'.format(path))
    if check_owner and info.st_uid != 0:
        raise TokenError('{0}: token file must be owned by root (chown root:root {0})'.format(path))
    if info.st_mode & 0o077:
        raise TokenError('{0}: token file is accessible by group or others (mode {1:04o}); '
                         'run chmod 600 {0}'.format(path, stat.S_IMODE(info.st_mode)))
    try:
        with open(path, 'rb') as stream:
            raw = stream.read(65536)
    except OSError as error:
        raise TokenError('{0}: cannot read the token file ({1})'.format(path, error.strerror))
    try:
        token = raw.decode('utf-8').strip()
    except UnicodeDecodeError:
        raise TokenError('{0}: token file is not UTF-8 text'.format(path))
    if not token:
        raise TokenError('{0}: token file is empty; write the AccountDB token into it'.format(path))
    if any(ch.isspace() for ch in token) or not token.isprintable():
        raise TokenError('{0}: token file must hold one token on one line without spaces'.format(path))
    return token


def check_hookscript_reads(settings, reference=None):
    """Raise ConfigError unless the hookscript reads ``settings.file`` as the daemon does.

    The hookscript reads the file with its own small reader
    (:mod:`pve_hooks.hook.miniyaml`); where it cannot, it falls back to a
    line scan and defaults, so two readers of one file would disagree
    silently (the worst case: events spooled where the daemon does not
    look). ``pve-hooks config check``, the daemon's start and its reload
    call this. ``reference`` is as for
    :func:`pve_hooks.hook.settings.check_file`. Nothing to check without a file.
    """
    if not settings.file:
        return
    from pve_hooks.hook.settings import check_file

    problems = check_file(settings.file, reference)
    if problems:
        raise ConfigError(problems)
