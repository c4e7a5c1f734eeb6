"""The configuration schema: the one place every option, its type and its default live.

This module is imported by the hookscript's hot path, so it follows the
import rules in :mod:`pve_hooks.hook` (built-ins only; no ``re``, ``enum``,
``dataclasses`` or ``typing``; ``posix`` rather than ``os``).

Each :class:`Option` names a dotted key (``accountdb.url``), a type, a default
and a one-line description. Types are small objects with a ``convert(value)``
method that returns the typed value or raises ``ValueError`` with a message
that completes the sentence "expected ..., got ...".
"""

import posix  # not os: see pve_hooks.hook


class _Type:
    """Base of the schema's value types. ``name`` is shown in docs and errors."""

    name = 'value'

    def convert(self, value):
        """Given a raw value (str from env/CLI, or a YAML scalar), return it typed.

        Raise ValueError with 'expected ..., got ...' text if it does not fit.
        """
        raise NotImplementedError

    def _fail(self, value):
        raise ValueError('expected {0}, got {1!r}'.format(self.name, value))


class String(_Type):
    name = 'a string'

    def convert(self, value):
        if isinstance(value, bool) or isinstance(value, (list, dict)):
            self._fail(value)
        if value is None:
            self._fail(value)
        return str(value)


class Path(String):
    name = 'an absolute path'

    def convert(self, value):
        value = String.convert(self, value)
        if not value.startswith('/'):
            self._fail(value)
        return value


class Command(String):
    """A program: an absolute path, or a name looked up on PATH."""

    name = 'a program name or absolute path'

    def convert(self, value):
        value = String.convert(self, value)
        if not value or (' ' in value and not value.startswith('/')):
            self._fail(value)
        return value


class Url(String):
    name = 'an http:// or https:// URL'

    def convert(self, value):
        value = String.convert(self, value).strip()
        netloc = value.split('://', 1)[-1].split('/', 1)[0]
        if '@' in netloc:
            # Never echo the value: it holds a password. The token file is the only credential.
            raise ValueError('credentials in the URL are not allowed: remove "user:password@" '
                             '(AccountDB takes the token from accountdb.token_file)')
        if not (value.startswith('http://') or value.startswith('https://')) or len(value) < 10:
            self._fail(value)
        return value.rstrip('/')


class EndpointPath(String):
    name = "a URL path starting with '/'"

    def convert(self, value):
        value = String.convert(self, value)
        if not value.startswith('/'):
            self._fail(value)
        return value


class Listen(String):
    name = "an address:port such as '127.0.0.1:9959'"

    def convert(self, value):
        value = String.convert(self, value)
        host, sep, port = value.rpartition(':')
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self._fail(value)
        return value


class Integer(_Type):
    def __init__(self, minimum=None, maximum=None):
        self.minimum = minimum
        self.maximum = maximum
        self.name = 'an integer' + _bounds(minimum, maximum)

    def convert(self, value):
        if isinstance(value, bool):
            self._fail(value)
        if isinstance(value, int):
            result = value
        elif isinstance(value, str) and value.strip().lstrip('+-').isdigit():
            result = int(value.strip())
        else:
            self._fail(value)
        if (self.minimum is not None and result < self.minimum) or (
                self.maximum is not None and result > self.maximum):
            self._fail(value)
        return result


class Number(_Type):
    def __init__(self, minimum=None, maximum=None):
        self.minimum = minimum
        self.maximum = maximum
        self.name = 'a number' + _bounds(minimum, maximum)

    def convert(self, value):
        if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
            self._fail(value)
        try:
            result = float(value)
        except (TypeError, ValueError):
            self._fail(value)
        if result != result or result in (float('inf'), float('-inf')):
            self._fail(value)
        if (self.minimum is not None and result < self.minimum) or (
                self.maximum is not None and result > self.maximum):
            self._fail(value)
        return result


class Boolean(_Type):
    name = 'true or false'
    _WORDS = {'true': True, 'yes': True, 'on': True, '1': True,
              'false': False, 'no': False, 'off': False, '0': False}

    def convert(self, value):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in self._WORDS:
            return self._WORDS[value.strip().lower()]
        self._fail(value)


class Choice(_Type):
    def __init__(self, *choices):
        self.choices = choices
        self.name = 'one of ' + ', '.join(choices)

    def convert(self, value):
        if isinstance(value, str) and value.strip() in self.choices:
            return value.strip()
        self._fail(value)


class StringList(_Type):
    """A list of strings; from env/CLI a comma-separated string."""

    name = 'a list of strings'

    def convert(self, value):
        if isinstance(value, str):
            return [part.strip() for part in value.split(',') if part.strip()]
        if isinstance(value, list) and all(
                isinstance(item, (str, int, float)) and not isinstance(item, bool) for item in value):
            return [str(item) for item in value]
        self._fail(value)


class Optional(_Type):
    """Another type, or null (written ``null`` or an empty string in env/CLI)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name + ' or null'

    def convert(self, value):
        if value is None or (isinstance(value, str) and value.strip().lower() in ('', 'null', 'none', '~')):
            return None
        try:
            return self.inner.convert(value)
        except ValueError as error:
            if not str(error).startswith('expected '):
                raise  # the inner type's own sentence (it may withhold the value, e.g. a URL's password)
            self._fail(value)


def _bounds(minimum, maximum):
    if minimum is not None and maximum is not None:
        return ' from {0} to {1}'.format(minimum, maximum)
    if minimum is not None:
        return ' >= {0}'.format(minimum)
    if maximum is not None:
        return ' <= {0}'.format(maximum)
    return ''


def short_hostname():
    """Return the node name as Proxmox computes it: ``uname -n`` up to the first dot."""
    return posix.uname().nodename.split('.', 1)[0]


class Computed:
    """A default computed when the configuration is loaded (e.g. the host name)."""

    def __init__(self, function, text):
        self.function = function
        self.text = text

    def __call__(self):
        return self.function()


class Option:
    """One configuration option: dotted key, type, default, one-line description."""

    __slots__ = ('key', 'type', 'default', 'description', 'secret')

    def __init__(self, key, type_, default, description, secret=False):
        self.key = key
        self.type = type_
        self.default = default
        self.description = description
        self.secret = secret

    def default_value(self):
        """Return the option's default (calling a Computed default)."""
        if isinstance(self.default, Computed):
            return self.default()
        if isinstance(self.default, list):
            return list(self.default)
        return self.default

    @property
    def env_name(self):
        """The environment variable that overrides this option."""
        return 'PVE_HOOKS_' + self.key.upper().replace('.', '__')


O = Option
OPTIONS = (
    O('node', String(), Computed(short_hostname, 'short host name (uname -n up to the first dot)'),
      'This Proxmox node\'s name, as Proxmox computes it.'),

    # AccountDB
    O('accountdb.url', Optional(Url()), None,
      'Base URL of AccountDB, e.g. https://accountdb.example.com; required by the daemon.'),
    O('accountdb.token_file', Path(), '/etc/pve-hooks/token',
      'File holding the bearer token (owner root, mode 0600); never put the token in config.yaml.'),
    O('accountdb.verify_tls', Boolean(), True, 'Verify AccountDB\'s TLS certificate.'),
    O('accountdb.ca_bundle', Optional(Path()), None,
      'CA bundle (PEM) to verify AccountDB with, for a private CA; null uses the system store.'),
    O('accountdb.timeout.connect', Number(0.1, 300), 5.0, 'Seconds to wait for a TCP/TLS connection.'),
    O('accountdb.timeout.read', Number(0.1, 3600), 30.0, 'Seconds to wait for a response once connected.'),
    O('accountdb.timeout.total', Number(0.5, 3600), 45.0,
      'Seconds one request may take in all (connect, send, headers, body), however slowly the server '
      'trickles its answer; must stay below the systemd watchdog (WatchdogSec=60s).'),
    O('accountdb.gzip_min_bytes', Integer(0), 4096,
      'Request bodies at least this large are sent gzip-compressed (Content-Encoding: gzip).'),
    O('accountdb.max_response_bytes', Integer(1024), 16 * 1024 * 1024,
      'Larger responses are treated as malformed (transient error).'),
    O('accountdb.endpoints.health', EndpointPath(), '/api/v1/health', 'Path of the health endpoint.'),
    O('accountdb.endpoints.events', EndpointPath(), '/api/v1/events', 'Path of the event batch endpoint.'),
    O('accountdb.endpoints.inventory', EndpointPath(), '/api/v1/nodes/{node}/inventory',
      'Path of the node inventory endpoint ({node} is substituted).'),
    O('accountdb.endpoints.heartbeat', EndpointPath(), '/api/v1/nodes/{node}/heartbeat',
      'Path of the node heartbeat endpoint ({node} is substituted).'),
    O('accountdb.endpoints.whitelist', EndpointPath(), '/api/v1/whitelist', 'Path of the VMID whitelist endpoint.'),

    # Retry and circuit breaker
    O('retry.base_delay', Number(0.01, 3600), 1.0, 'First retry delay in seconds (doubles each attempt, full jitter).'),
    O('retry.max_delay', Number(0.1, 86400), 300.0, 'Cap on the retry delay in seconds.'),
    O('retry.max_retry_after', Number(0, 86400), 600.0, 'Longest Retry-After from AccountDB that is honoured.'),
    O('breaker.failure_threshold', Integer(1), 5, 'Consecutive transient failures that open the circuit breaker.'),
    O('breaker.reset_timeout', Number(0.1, 86400), 30.0, 'Seconds the breaker stays open before a half-open probe.'),

    # Paths
    O('paths.spool_dir', Path(), '/var/spool/pve-hooks', 'Outbox spool directory (mode 0700, root).'),
    O('paths.state_dir', Path(), '/var/lib/pve-hooks',
      'State directory: breaker, whitelist cache, inventory hash, daemon heartbeat (mode 0700, root).'),

    # Proxmox
    O('proxmox.pvesh', Command(), 'pvesh', 'The pvesh program used to read the node\'s guests and status.'),
    O('proxmox.pvesh_timeout', Number(0.1, 3600), 30.0, 'Seconds before a pvesh call is killed and counted as failed.'),
    O('proxmox.pve_root', Path(), '/etc/pve', 'Root of the Proxmox cluster file system (pmxcfs).'),
    O('proxmox.qm', Command(), 'qm', 'The qm program, used by attach/detach for VMs.'),
    O('proxmox.pct', Command(), 'pct', 'The pct program, used by attach/detach for containers.'),
    O('proxmox.snippets_storage', String(), 'local',
      'Proxmox storage whose snippets directory holds the hookscript (volume id <storage>:snippets/accountdb-hook).'),
    O('proxmox.storage_cfg', Path(), '/etc/pve/storage.cfg',
      'Proxmox storage configuration, read to find the snippets storage\'s path.'),
    O('proxmox.hookscript_source', Path(), '/usr/share/pve-hooks/hookscripts/accountdb-hook',
      'The packaged hookscript that `pve-hooks snippets install` copies into the snippets storage.'),
    O('proxmox.set_timeout', Number(0.1, 3600), 60.0,
      'Seconds a qm set / pct set call (attach, detach) may take before it is killed and counted as failed.'),

    # Hookscript
    O('hook.on_error', Choice('continue', 'abort'), 'continue',
      'What the hookscript does when it cannot spool an event: continue (exit 0) or abort (fail pre-start).'),
    O('hook.chain_dir', Path(), '/etc/pve-hooks/hooks.d',
      'Executables run after spooling, in name order, with the same argv and environment.'),
    O('hook.chain_timeout', Number(0.1, 3600), 30.0, 'Seconds each chained hookscript may run before it is killed.'),
    O('hook.chain_deadline', Number(0.1, 3600), 60.0,
      'Seconds all chained hookscripts of one call may take together (Proxmox waits for them, holding the guest '
      'lock): each gets hook.chain_timeout or what is left, whichever is less; hooks not started in time are not '
      'run. Must be at least hook.chain_timeout.'),
    O('hook.lock_timeout', Number(0.1, 60), 2.0,
      'Seconds the hookscript waits for the outbox lock; a stalled holder cannot block a guest start: the event is '
      'then written without updating the outbox counters (the daemon recounts them).'),
    O('hook.chain_on_error', Choice('continue', 'abort'), 'continue',
      'Whether a chained script failing in pre-start fails the guest start (abort) or is only logged.'),
    O('hook.journal_socket', Path(), '/run/systemd/journal/socket',
      'journald\'s native socket the hookscript logs to (a missing socket is fine: stderr still gets errors).'),

    # Outbox
    O('outbox.max_events', Integer(1), 100000,
      'Most events the outbox holds; further events are dropped, counted and logged at critical level.'),
    O('outbox.max_bytes', Integer(4096), 256 * 1024 * 1024,
      'Most bytes the outbox holds; further events are dropped, counted and logged at critical level.'),
    O('outbox.tmp_max_age', Number(1, 86400 * 30), 3600.0,
      'Seconds after which a leftover file in the outbox tmp/ directory (a writer that died) is removed.'),

    # Delivery
    O('delivery.batch_size', Integer(1, 10000), 500, 'Most events sent to AccountDB in one request.'),
    O('delivery.poll_interval', Number(0.01, 3600), 1.0,
      'Seconds between checks of the outbox when inotify is unavailable.'),

    # Reconciler
    O('reconcile.interval', Number(1, 86400), 300.0, 'Seconds between inventory reconciliations.'),
    O('reconcile.heartbeat_interval', Number(1, 86400), 60.0, 'Seconds between heartbeats to AccountDB.'),
    O('reconcile.full_resync_interval', Number(1, 86400 * 30), 86400.0,
      'Seconds after which the inventory is sent even if unchanged.'),
    O('reconcile.reread_interval', Number(1, 86400 * 30), 900.0,
      'Seconds after which guests are read through pvesh even when /etc/pve/.vmlist is unchanged '
      '(status changes that no hook reported do not change .vmlist).'),
    O('reconcile.auto_attach', Boolean(), False,
      'Attach the hookscript to new guests the daemon discovers (same rules as pve-hooks attach).'),
    O('reconcile.shutdown_timeout', Number(0.1, 300), 5.0,
      'Seconds SIGTERM waits for the in-flight batch before returning it to the outbox.'),

    # Whitelist
    O('whitelist.refresh_interval', Number(1, 86400), 300.0, 'Seconds between whitelist refreshes (conditional GET).'),
    O('whitelist.max_stale', Number(1, 86400 * 365), 86400.0,
      'A cached whitelist older than this many seconds is logged at critical level.'),
    O('whitelist.max_change', Integer(1, 10000000), 100000,
      'Most VMIDs one `pve-hooks whitelist add/remove/set` may change; larger inputs are refused, nothing sent.'),

    # Logging
    O('logging.level', Choice('debug', 'info', 'warning', 'error', 'critical'), 'info', 'Lowest level logged.'),
    O('logging.target', Choice('auto', 'journal', 'stderr', 'file'), 'auto',
      'Where logs go: auto = journald when available, else stderr.'),
    O('logging.file', Optional(Path()), None, 'Log file for logging.target=file.'),
    O('logging.max_bytes', Integer(1024), 10 * 1024 * 1024, 'Size at which the log file is rotated.'),
    O('logging.backup_count', Integer(0, 100), 5, 'Rotated log files kept.'),

    # Metrics
    O('metrics.textfile', Optional(Path()), '/var/lib/prometheus/node-exporter/pve-hooks.prom',
      'Prometheus text file written after every pass (node_exporter textfile collector); null disables.'),
    O('metrics.listen', Optional(Listen()), None,
      'Address:port serving /metrics over HTTP, e.g. 127.0.0.1:9959; null (default) serves nothing.'),

    # Alerts
    O('alerts.command', Optional(StringList()), None,
      'Program and arguments run with each alert as JSON on stdin (no shell).'),
    O('alerts.webhook', Optional(Url()), None,
      'URL that receives each alert as a JSON POST; treated as a secret (its path usually is one): shown as '
      'scheme://host/*** and never logged.', secret=True),
    O('alerts.timeout', Number(0.1, 300), 10.0, 'Seconds an alert command or webhook may take.'),
    O('alerts.after', Number(0, 86400), 300.0, 'Seconds the breaker must stay open before it is alerted.'),
    O('alerts.repeat_interval', Number(1, 86400 * 7), 3600.0,
      'Seconds before an alert for a condition that is still active is sent again.'),
    O('alerts.outbox_depth', Integer(1), 10000, 'Outbox depth that raises an alert.'),
    O('alerts.pvesh_failures', Integer(1), 3, 'Consecutive pvesh failures that raise an alert.'),

    # Health
    O('health.pvesh_interval', Number(1, 86400), 60.0, 'Seconds between the daemon\'s pvesh-based health checks.'),
    O('health.pvesh_timeout', Number(0.1, 600), 10.0, 'Seconds a health check\'s pvesh call may take.'),
    O('health.systemctl', Command(), 'systemctl', 'The systemctl program used to check Proxmox services.'),
    O('health.systemctl_timeout', Number(0.1, 600), 5.0, 'Seconds a systemctl is-active call may take.'),
    O('health.services', StringList(), ['pveproxy', 'pvedaemon', 'pve-cluster', 'pvestatd'],
      'Proxmox services that must be active.'),
    O('health.rootfs_warning', Number(0, 1), 0.85, 'Root file system usage (fraction) that is WARNING.'),
    O('health.rootfs_critical', Number(0, 1), 0.95, 'Root file system usage (fraction) that is CRITICAL.'),
    O('health.memory_warning', Number(0, 1), 0.90, 'Memory usage (fraction) that is WARNING.'),
    O('health.memory_critical', Number(0, 1), 0.97, 'Memory usage (fraction) that is CRITICAL.'),
    O('health.load_warning', Number(0), 2.0, '1-minute load per CPU that is WARNING.'),
    O('health.load_critical', Number(0), 4.0, '1-minute load per CPU that is CRITICAL.'),
    O('health.reconciler_stale', Number(1), 180.0,
      'Seconds since the daemon\'s last heartbeat after which it is considered dead (CRITICAL).'),
    O('health.outbox_age_warning', Number(1), 600.0, 'Age in seconds of the oldest outbox event that is WARNING.'),
    O('health.outbox_age_critical', Number(1), 3600.0, 'Age in seconds of the oldest outbox event that is CRITICAL.'),
)
del O

BY_KEY = {option.key: option for option in OPTIONS}

SECTIONS = ()
for _option in OPTIONS:
    _section = _option.key.split('.', 1)[0]
    if _section not in SECTIONS:
        SECTIONS += (_section,)
del _option, _section


def defaults():
    """Return a dict of dotted key -> default value for every option."""
    return {option.key: option.default_value() for option in OPTIONS}
