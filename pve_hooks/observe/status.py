"""The node's status snapshot: computed here once, rendered many ways.

One JSON-able dict says how pve-hooks is doing on this node. :func:`build`
is the only place that computes it; two feeders give it its inputs:

- the running daemon (:class:`Board`): jobs publish what they did into the
  board, and its :meth:`Board.snapshot` adds the live outbox, breaker,
  connection and whitelist figures. The daemon writes the published part to
  ``<paths.state_dir>/daemon.json`` (statedir.DAEMON);
- everyone else (:func:`read`): ``pve-hooks status`` and the health
  self-checks read daemon.json and the other state files, and the outbox,
  without writing anything.

Readers of a snapshot: ``pve-hooks status`` (:func:`lines`, or the dict as
JSON), the health self-checks (pve_hooks.health.own), the heartbeat body
(:func:`heartbeat_body`), systemd's ``STATUS=`` (:func:`one_line`), the
metrics collector (pve_hooks.observe.metrics) and the alerts
(pve_hooks.observe.alerts.evaluate). The snapshot::

    node, version, taken_at
    daemon       running, pid, version, started_at, heartbeat_at, heartbeat_age,
                 connection ('up'/'down'/'unknown'), connection_kind, last_error, stopped_at
    outbox       depth, bytes, oldest_age (None when empty), dead, quarantine,
                 dropped, spooled, hookscript_errors
    breaker      state ('closed'/'open'/'half_open'), failures, opened_at, changed_at
    last_delivery_at, last_inventory_sync_at, last_heartbeat_sent_at, last_whitelist_refresh_at
    delivery     filtered_total
    inventory    guests, last_put_at, read_ok, read_at, outcome, pvesh_failures, pvesh_error
    whitelist    state, filtering, count, fetched_at, age, ... (WhitelistCache.status) or None
    health       {status, checks: [{name, status, reason, values}]} or None (not run yet)
    alerts       active alert conditions (names), as the daemon last evaluated them

Times are epoch seconds (None: never), ages seconds.
"""

import os
import time

from pve_hooks import UNIT, __version__, statedir
from pve_hooks.accountdb import breaker as breaker_mod
from pve_hooks.observe.logs import format_duration
from pve_hooks.outbox.store import Outbox
from pve_hooks.whitelist.cache import WhitelistCache

OUTBOX_KEYS = ('depth', 'bytes', 'oldest_age', 'dead', 'quarantine', 'dropped', 'spooled', 'hookscript_errors')
BREAKER_KEYS = ('state', 'failures', 'opened_at', 'changed_at')
INVENTORY_KEYS = ('guests', 'last_put_at', 'read_ok', 'read_at', 'outcome', 'pvesh_failures', 'pvesh_error')
# What the daemon publishes (daemon.json) beyond the daemon section.
LAST_KEYS = ('last_delivery_at', 'last_inventory_sync_at', 'last_heartbeat_sent_at', 'last_whitelist_refresh_at')

def build(settings, now, daemon, outbox, breaker, inventory=None, whitelist=None, running=None):
    """Return the snapshot (see the module docstring) from its inputs.

    ``daemon``: the published figures (daemon.json's content, or the live
    board's), a dict; ``outbox``: Outbox.stats() or None when unreadable;
    ``breaker``: Breaker.snapshot(); ``inventory``: the inventory sync's
    state (inventory.json) merged over what the daemon published;
    ``whitelist``: WhitelistCache.status(now) or None; ``running``: whether
    the daemon process is alive (None: judge by its pid). Raise nothing.
    """
    pid = daemon.get('pid')
    if running is None:
        running = bool(pid) and not daemon.get('stopped_at') and pid_alive(pid)
    heartbeat_at = daemon.get('heartbeat_at')
    published_inventory = daemon.get('inventory') or {}
    inventory = dict(published_inventory, **{key: value for key, value in (inventory or {}).items()
                                             if value is not None})
    return {
        'node': settings['node'],
        'version': __version__,
        'taken_at': now,
        'daemon': {
            'running': running, 'pid': pid if running else None, 'version': daemon.get('version'),
            'started_at': daemon.get('started_at'), 'heartbeat_at': heartbeat_at,
            'heartbeat_age': None if not isinstance(heartbeat_at, (int, float)) else max(0.0, now - heartbeat_at),
            'connection': daemon.get('connection') if running else None,
            'connection_kind': daemon.get('connection_kind') if running else None,
            'last_error': daemon.get('last_error') if running else None,
            'stopped_at': daemon.get('stopped_at'),
        },
        'outbox': {key: (outbox or {}).get(key) for key in OUTBOX_KEYS},
        'breaker': {key: breaker.get(key) for key in BREAKER_KEYS},
        'last_delivery_at': daemon.get('last_delivery_at'),
        'last_inventory_sync_at': inventory.get('last_sync_at') or daemon.get('last_inventory_sync_at'),
        'last_heartbeat_sent_at': daemon.get('last_heartbeat_sent_at'),
        'last_whitelist_refresh_at': daemon.get('last_whitelist_refresh_at'),
        'delivery': {'filtered_total': daemon.get('filtered_total', 0)},
        'inventory': {key: inventory.get(key) for key in INVENTORY_KEYS},
        'whitelist': whitelist,
        'health': daemon.get('health'),
        'alerts': list(daemon.get('alerts') or ()),
    }

def read(settings, clock=time.time):
    """Return the snapshot from the files on disk (for ``status`` and ``health``), writing nothing.

    Raise OSError when the outbox cannot be read.
    """
    now = clock()
    daemon = statedir.read_json(statedir.path(settings, statedir.DAEMON), {}) or {}
    inventory = statedir.read_json(statedir.path(settings, statedir.INVENTORY), {}) or {}
    outbox = Outbox.from_settings(settings, clock=clock).stats()
    breaker = breaker_mod.from_settings(settings, clock=clock).snapshot()
    whitelist = WhitelistCache.from_settings(settings, clock=clock).status(now)
    return build(settings, now, daemon, outbox, breaker, inventory, whitelist)

class Board:
    """The running daemon's status: jobs publish into it, readers take :meth:`snapshot`.

    ``settings``; ``clock`` (epoch seconds); ``outbox``, ``breaker``,
    ``connection`` and ``whitelist`` (or None) are the live objects whose
    figures each snapshot reads; ``published`` the figures a previous run
    left in daemon.json (its ``last_*`` times carry over a restart).
    """

    # Outbox figures are listed at most this often (a listing costs ~0.1 s per 100,000 events).
    OUTBOX_REFRESH = 1.0

    def __init__(self, settings, clock, outbox, breaker, connection, whitelist=None, published=None):
        self.settings = settings
        self.clock = clock
        self.outbox = outbox
        self.breaker = breaker
        self.connection = connection
        self.whitelist = whitelist
        carried = published or {}
        self.published = {key: carried.get(key) for key in LAST_KEYS + ('filtered_total',) if key in carried}
        self.published.update(pid=os.getpid(), version=__version__, started_at=clock())
        self.outbox_stats = None
        self._outbox_at = None
        self.version = 0   # moves on every publish: a writer compares it to decide whether to write

    def publish(self, **figures):
        """Record figures a job reports (any of the snapshot's daemon-level keys). Return None."""
        self.published.update(figures)
        self.version += 1

    def remember(self, **figures):
        """Record figures derived from a snapshot (the active alerts) without counting as news. Return None."""
        self.published.update(figures)

    def count(self, key, amount):
        """Add ``amount`` to the running total ``key`` (e.g. filtered_total). Return None."""
        if amount:
            self.publish(**{key: self.published.get(key, 0) + amount})

    def refresh_outbox(self, force=False):
        """Re-read the outbox figures (at most every OUTBOX_REFRESH s unless ``force``); return them.

        An unreadable outbox keeps the previous figures (the error is in the
        returned value's absence of change; the health check reports it).
        """
        now = self.clock()
        if force or self._outbox_at is None or not 0 <= now - self._outbox_at < self.OUTBOX_REFRESH:
            try:
                self.outbox_stats = self.outbox.stats()
                self._outbox_at = now
            except OSError:
                pass
        return self.outbox_stats

    def pending(self):
        """Events waiting in the outbox as last listed (None before the first listing)."""
        return (self.outbox_stats or {}).get('depth')

    def figures(self):
        """Return the published figures with the live connection state: daemon.json's content."""
        connection = self.connection
        failing = connection.state != 'up' and connection.last_error is not None
        return dict(self.published, node=self.settings['node'], connection=connection.state,
                    connection_kind=connection.kind if failing else None,
                    last_error=str(connection.last_error) if failing else None)

    def snapshot(self, running=True):
        """Return the snapshot of the running daemon (see :func:`build`)."""
        now = self.clock()
        figures = dict(self.figures(), heartbeat_at=now)
        whitelist = self.whitelist.status(now) if self.whitelist is not None else None
        return build(self.settings, now, figures, self.refresh_outbox(), self.breaker.snapshot(),
                     whitelist=whitelist, running=running)

def pid_alive(pid):
    """True when a process ``pid`` exists (or cannot be checked for lack of permission)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True

def rfc3339(epoch):
    """Return ``epoch`` as RFC 3339 UTC with microseconds (``...T10:35:26.123456Z``), None for None."""
    if epoch is None:
        return None
    return time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(epoch)) + '.{0:06d}Z'.format(int((epoch % 1) * 1e6))

def heartbeat_body(snapshot):
    """Return the heartbeat document (docs/accountdb-api.md, Heartbeat) rendered from ``snapshot``."""
    body = {
        'node': snapshot['node'],
        'sent_at': rfc3339(snapshot['taken_at']),
        'agent_version': snapshot['version'],
        'outbox': {key: snapshot['outbox'].get(key) for key in ('depth', 'oldest_age', 'dead', 'quarantine',
                                                                'dropped')},
        'breaker': snapshot['breaker']['state'],
        'last_delivery_at': rfc3339(snapshot['last_delivery_at']),
        'last_inventory_sync_at': rfc3339(snapshot['last_inventory_sync_at']),
    }
    whitelist = snapshot['whitelist']
    if whitelist is not None:
        body['whitelist'] = {'age': whitelist.get('age'), 'state': whitelist.get('state')}
    if snapshot['health'] is not None:
        body['health'] = snapshot['health']
    return body

def _plural(count, noun):
    return '{0} {1}{2}'.format(count, noun, '' if count == 1 else 's')

def one_line(snapshot, connection_summary=None):
    """Return systemd's STATUS= line: outbox, AccountDB, breaker, last inventory.

    ``connection_summary`` is the live connection's own wording (e.g. "up",
    "down since 12:00, next try in 30s"); without it the snapshot's state.
    """
    outbox = snapshot['outbox']
    depth = outbox.get('depth')
    first = 'outbox ' + (_plural(depth, 'event') if depth is not None else '?')
    if outbox.get('oldest_age') is not None:
        first += ' (oldest {0})'.format(format_duration(outbox['oldest_age']))
    connection = connection_summary or snapshot['daemon'].get('connection') or 'unknown'
    synced = snapshot['last_inventory_sync_at']
    return '; '.join([first, 'AccountDB ' + connection,
                      'breaker ' + str(snapshot['breaker']['state']).replace('_', '-'),
                      'inventory synced {0} ago'.format(format_duration(snapshot['taken_at'] - synced))
                      if synced else 'inventory not synced yet'])

def _ago(epoch, now):
    if epoch is None:
        return 'never'
    return '{0} ago'.format(format_duration(max(0.0, now - epoch)))

def lines(snapshot):
    """Return the human-readable lines of ``pve-hooks status`` for ``snapshot``."""
    now = snapshot['taken_at']
    run, outbox = snapshot['daemon'], snapshot['outbox']
    result = []
    if run['running']:
        result.append('reconciler:      running (pid {0}), last loop {1}, AccountDB {2}'.format(
            run['pid'], _ago(run['heartbeat_at'], now), run['connection'] or 'unknown'))
        if run['last_error']:
            result.append('last error:      {0}'.format(run['last_error']))
    else:
        result.append('reconciler:      not running (start it: systemctl start {0})'.format(UNIT))
    oldest = outbox['oldest_age']
    result.append('outbox:          {0} waiting{1}'.format(
        _plural(outbox['depth'] or 0, 'event'), ', oldest {0}'.format(format_duration(oldest))
        if oldest is not None else ''))
    result.append('dead letters:    {0}{1}'.format(outbox['dead'], ' (see pve-hooks outbox list --dead)'
                                                   if outbox['dead'] else ''))
    result.append('quarantined:     {0}'.format(outbox['quarantine']))
    if outbox.get('dropped'):
        result.append('dropped (full):  {0}'.format(outbox['dropped']))
    result.append('breaker:         {0}'.format(str(snapshot['breaker']['state']).replace('_', '-')))
    result.append('last delivery:   {0}'.format(_ago(snapshot['last_delivery_at'], now)))
    result.append('last inventory:  {0}'.format(_ago(snapshot['last_inventory_sync_at'], now)))
    result.append('last heartbeat:  {0}'.format(_ago(snapshot['last_heartbeat_sent_at'], now)))
    whitelist = snapshot['whitelist']
    if whitelist is None:
        result.append('whitelist:       unavailable')
    elif whitelist.get('age') is None:
        result.append('whitelist:       none cached (every guest reported)')
    else:
        result.append('whitelist:       {0} VMIDs, fetched {1} ({2})'.format(
            whitelist.get('count'), _ago(now - whitelist['age'], now), whitelist.get('state')))
    if snapshot['health'] is not None:
        result.append('node health:     {0}'.format(snapshot['health'].get('status')))
    if snapshot['alerts']:
        result.append('alerts active:   {0}'.format(', '.join(snapshot['alerts'])))
    return result
