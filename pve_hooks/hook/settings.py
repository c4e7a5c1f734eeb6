"""The hookscript's configuration reader: the keys it needs, stdlib only, never fatal.

Same sources and precedence as :func:`pve_hooks.config.loader.load` (schema
defaults < the YAML file named by ``PVE_HOOKS_CONFIG`` or
/etc/pve-hooks/config.yaml < ``PVE_HOOKS_<SECTION>__<KEY>``), but only for
:data:`HOOK_KEYS`, read with :mod:`pve_hooks.hook.miniyaml` instead of PyYAML, and
never raising: every problem becomes one line in ``problems`` and only the
affected values fall back to the schema's defaults (a valid paths.spool_dir
is still honoured next to an invalid option, so the event lands where the
daemon reads), and the event is still spooled.
"""

from pve_hooks.hook import miniyaml
from pve_hooks.config import schema

# The same names as pve_hooks.config.loader (which imports difflib; not on the hot path).
DEFAULT_FILE = '/etc/pve-hooks/config.yaml'
ENV_FILE = 'PVE_HOOKS_CONFIG'
HOOK_KEYS = ('node', 'paths.spool_dir', 'proxmox.pve_root', 'hook.on_error', 'hook.chain_dir',
             'hook.chain_timeout', 'hook.chain_deadline', 'hook.chain_on_error', 'hook.journal_socket',
             'hook.lock_timeout', 'outbox.max_events', 'outbox.max_bytes', 'outbox.tmp_max_age')


def valid_node(value):
    """Return True if ``value`` can be a Proxmox node name (the check config.load applies)."""
    return bool(value) and '/' not in value and ' ' not in value


def read_file(path):
    """Return {dotted key: raw value} for HOOK_KEYS found in YAML file ``path``.

    Raise OSError if it cannot be read, MiniYamlError if it is outside the
    subset, ValueError if it is not a mapping of sections.
    """
    data = miniyaml.load_file(path)
    if not isinstance(data, dict):
        raise ValueError('{0}: the configuration must be a mapping of sections'.format(path))
    found = {}
    for key in HOOK_KEYS:
        node = data
        for part in key.split('.'):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            found[key] = node
    return found


def scan_file(path):
    """Return {dotted key: raw value} for HOOK_KEYS found line by line in ``path``, for a file the full parse refused.

    A line-level fallback, so that a construct miniyaml does not read (a block
    list, an anchor) elsewhere in the file does not send the event to the
    default spool while the daemon reads the configured ``paths.spool_dir``:
    a top-level ``section:`` line (an anchor after it is ignored) opens a
    section, and ``key: value`` lines at the section's first indentation give
    ``section.key`` when their value is a scalar miniyaml reads. A key found
    twice is left out (ambiguous). Raise OSError or MiniYamlError if the file
    cannot be read at all.
    """
    wanted = frozenset(HOOK_KEYS)
    text = miniyaml.read_bounded(path).decode('utf-8', 'replace')
    found, seen = {}, set()
    section, indent = '', None
    for raw in text.split('\n'):
        raw = raw.rstrip('\r')
        stripped = raw.lstrip(' ')
        if not stripped or stripped.startswith('#') or stripped.startswith('\t'):
            continue
        this_indent = len(raw) - len(stripped)
        key, colon, rest = stripped.partition(':')
        if this_indent == 0:
            rest = rest.strip()
            section = key if colon and (not rest or rest[0] in '#&') else ''
            indent = None
            if section or not colon:
                continue
            dotted = key  # a top-level scalar such as node
        else:
            if not section:
                continue
            if indent is None:
                indent = this_indent
            if this_indent != indent:
                continue
            dotted = section + '.' + key
        if dotted not in wanted:
            continue
        try:
            value = miniyaml.loads(stripped, path).popitem()[1]  # this one line: {key: value}
        except miniyaml.MiniYamlError:
            continue
        if value is None or isinstance(value, dict):
            continue
        if dotted in seen:
            found.pop(dotted, None)
            continue
        seen.add(dotted)
        found[dotted] = value
    return found


def load(environ, default_file=DEFAULT_FILE):
    """Return (values, problems, path) for the hookscript.

    ``environ`` is the environment; ``default_file`` the file read when
    PVE_HOOKS_CONFIG is not set (a missing default file is fine).

    ``values`` maps each of HOOK_KEYS to its typed value; ``problems`` is a
    list of one-line messages (file unreadable or not parsable: the whole file
    is ignored; an invalid value, in the file or the environment: that key
    keeps its default); ``path`` is
    the configuration file that was read, or None.
    """
    values = {key: schema.BY_KEY[key].default_value() for key in HOOK_KEYS}
    problems = []
    path = environ.get(ENV_FILE) or default_file
    named = bool(environ.get(ENV_FILE))
    used = None
    raw = {}
    try:
        raw = read_file(path)
        used = path
    except FileNotFoundError:
        if named:
            problems.append('{0}: configuration file not found (named by {1}); create it or fix {1}'.format(
                path, ENV_FILE))
    except OSError as error:
        problems.append('{0}: cannot read the configuration file ({1}); check its permissions'.format(
            path, error.strerror or error))
    except ValueError as error:  # MiniYamlError included
        try:
            raw = scan_file(path)
        except (OSError, ValueError):
            raw = {}
        if raw:
            used = path
            problems.append('{0}; read only its simple lines ({1}); check it with pve-hooks config check'.format(
                error, ', '.join(sorted(raw))))
        else:
            problems.append('{0}; check it with pve-hooks config check'.format(error))
    file_values = {}
    for key, value in raw.items():
        option = schema.BY_KEY[key]
        try:
            file_values[key] = option.type.convert(value)
        except ValueError as error:
            problems.append('{0}: {1}: {2}; fix the file (pve-hooks config check)'.format(path, key, error))
    if 'node' in file_values and not valid_node(file_values['node']):
        problems.append('{0}: node: expected a node name such as pve1, got {1!r}; fix the file'.format(
            path, file_values.pop('node')))
    values.update(file_values)  # the valid ones; an invalid value keeps its default
    for key in HOOK_KEYS:
        option = schema.BY_KEY[key]
        if option.env_name in environ:
            try:
                value = option.type.convert(environ[option.env_name])
                if key == 'node' and not valid_node(value):
                    raise ValueError('expected a node name such as pve1, got {0!r}'.format(value))
            except ValueError as error:
                problems.append('{0}: {1}; fix or unset the variable'.format(option.env_name, error))
                continue
            values[key] = value
    return values, problems, used


def check_file(path, reference=None):
    """Return one line per way the hookscript would read YAML file ``path`` differently from PyYAML.

    Compares the values of HOOK_KEYS as read by this module and by
    ``reference(path)`` (default :func:`pve_hooks.config.loader.read_yaml`, i.e.
    PyYAML); [] when they agree. For :func:`pve_hooks.config.loader.check_hookscript_reads`
    (imports PyYAML; never called by the hookscript).
    """
    if reference is None:
        from pve_hooks.config.loader import read_yaml as reference

    try:
        ours = read_file(path)
    except OSError as error:
        return ['{0}: the hookscript cannot read this file ({1})'.format(path, error.strerror or error)]
    except ValueError as error:
        return ['{0}; the hookscript cannot read this file (it understands a simple YAML subset: nested '
                'mappings, scalars, [a, b] lists) and would fall back to its simple lines and defaults; '
                'simplify the file'.format(error)]
    data = reference(path)
    problems = []
    for key in HOOK_KEYS:
        node = data
        for part in key.split('.'):
            node = node.get(part) if isinstance(node, dict) else None
        if node != ours.get(key) or type(node) is not type(ours.get(key)):
            problems.append('{0}: {1}: the hookscript reads {2!r} but PyYAML reads {3!r}; quote the value or '
                            'write it more simply'.format(path, key, ours.get(key), node))
    return problems
