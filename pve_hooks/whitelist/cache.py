"""The VMID whitelist's cache: the last list fetched, on disk, and its conditional refresh.

AccountDB's whitelist says which guests this node reports: a non-empty list
means "only these VMIDs", an empty one means "all guests"
(:mod:`pve_hooks.whitelist.filter` applies it per guest).

:class:`WhitelistCache` keeps the last list fetched in
``<paths.state_dir>/whitelist.json`` (:data:`pve_hooks.statedir.WHITELIST`,
written atomically by :func:`pve_hooks.statedir.write_json`) with its ETag,
Last-Modified and fetch time, so a restart needs no fetch and a node that
cannot reach AccountDB keeps filtering with the last known list. Refreshes
are conditional (``If-None-Match``/``If-Modified-Since``): a 304 costs no
body and only bumps ``fetched_at``.

What happens when things go wrong (docs/whitelist.md says the same):

- refresh fails, a list is cached: keep filtering with it; one WARNING on
  the transition to failing, one INFO on recovery; one CRITICAL when the
  cached list is older than ``whitelist.max_stale``.
- no list was ever fetched: nothing is filtered (every guest is reported);
  one WARNING when the filter is first used, and one WARNING when a fetch
  fails; the state is ``no-cache``.
- the cache file is corrupt: it is renamed to ``whitelist.json.corrupt-<time>``,
  one WARNING names it, and the node continues as with no cache.

The operator's add/remove/set, sent as ONE bulk request with ``If-Match``,
is :mod:`pve_hooks.whitelist.edit`.
"""

import json
import logging
import os
import time

from pve_hooks import statedir
from pve_hooks.accountdb.errors import AccountDBError
from pve_hooks.config import schema
from pve_hooks.observe.logs import format_duration
from pve_hooks.whitelist.filter import Filter, NoListFilter
from pve_hooks.whitelist.vmidset import VmidSet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

# refresh() outcomes
UPDATED = 'updated'        # 200: the list was (re)placed
UNCHANGED = 'unchanged'    # 304: the cached list is current
FAILED = 'failed'          # the fetch failed; the cached list (if any) is kept
NOT_DUE = 'not-due'        # refresh_if_due(): the refresh interval has not passed

# status()['state'] values
OK = 'ok'                  # a list is cached and the last refresh succeeded
FAILING = 'failing'        # a list is cached, the last refresh failed, not yet stale
STALE = 'stale'            # a list is cached and older than whitelist.max_stale
NO_CACHE = 'no-cache'      # no list was ever fetched: nothing is filtered

NO_CACHE_WARNING = ('no cached VMID whitelist and fetching it failed ({0}): reporting ALL guests '
                    '(nothing filtered) until the first successful fetch; retrying every {1}')


def _schema_default(key):
    return schema.BY_KEY[key].default


def _empty_record():
    return {'version': FORMAT_VERSION, 'vmids': None, 'etag': None, 'last_modified': None,
            'fetched_at': None, 'last_attempt_at': None, 'last_error': None, 'failing_since': None,
            'source': None}


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_record(data):
    """Given the decoded cache file, return it as a full record; raise ValueError naming the problem."""
    if not isinstance(data, dict):
        raise ValueError('not a JSON object')
    record = _empty_record()
    vmids = data.get('vmids')
    if vmids is not None:
        # Any integer: the cache holds what AccountDB sent (the client checks only that they are
        # integers), and a value no guest can have must not make the whole file "corrupt".
        if not isinstance(vmids, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in vmids):
            raise ValueError("'vmids' is not a list of integers")
    record['vmids'] = vmids
    for key in ('etag', 'last_modified', 'last_error', 'source'):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError('{0!r} is not a string'.format(key))
        record[key] = data.get(key)
    for key in ('fetched_at', 'last_attempt_at', 'failing_since'):
        if data.get(key) is not None and not _is_number(data[key]):
            raise ValueError('{0!r} is not a number'.format(key))
        record[key] = data.get(key)
    if vmids is not None and record['fetched_at'] is None:
        raise ValueError("'vmids' without 'fetched_at'")
    return record


class WhitelistCache:
    """The cached whitelist of one node, shared by the daemon and the CLI through its file.

    ``state_dir`` is ``paths.state_dir``; ``clock`` returns epoch seconds.
    ``refresh_interval`` and ``max_stale`` are seconds (None: the schema's
    defaults; :meth:`from_settings` passes the configured ones). ``source``
    is the whitelist's URL, recorded with the list: a list cached from
    another URL keeps filtering but is refetched unconditionally. The cache
    file is read at construction; nothing is fetched.
    """

    def __init__(self, state_dir, clock=time.time, refresh_interval=None, max_stale=None, source=None):
        self.path = os.path.join(state_dir, statedir.WHITELIST)
        self.clock = clock
        self.source = source
        self.refresh_interval = float(refresh_interval if refresh_interval is not None
                                      else _schema_default('whitelist.refresh_interval'))
        self.max_stale = float(max_stale if max_stale is not None
                               else _schema_default('whitelist.max_stale'))
        self.last_exception = None   # the error of the last failed refresh in this process
        self._record = _empty_record()
        self._unfiltered_warned = [False]
        self._set_filter(NoListFilter(self.path, self._unfiltered_warned))
        self._set = None
        self._file_id = None
        self._failing = False         # this process has logged the transition to failing
        self._stale_logged = False    # this process has logged the CRITICAL for staleness
        self.load()

    @classmethod
    def from_settings(cls, settings, clock=time.time):
        """Return the cache for ``settings`` (paths.state_dir, whitelist.*)."""
        source = None
        if settings['accountdb.url']:
            source = settings['accountdb.url'] + settings.endpoint('whitelist')
        return cls(settings['paths.state_dir'], clock=clock,
                   refresh_interval=settings['whitelist.refresh_interval'],
                   max_stale=settings['whitelist.max_stale'], source=source)

    # --- the file -------------------------------------------------------

    def _stat_id(self):
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def load(self):
        """(Re)read the cache file; return True when it holds a list.

        A missing file means no cache. A corrupt one is renamed to
        ``whitelist.json.corrupt-<epoch>`` with a WARNING and treated as no
        cache. Never raises for the file's content; an unreadable file (e.g.
        permissions) is logged and treated as no cache.
        """
        file_id = self._stat_id()
        try:
            with open(self.path, 'rb') as stream:
                raw = stream.read()
        except FileNotFoundError:
            self._set_record(_empty_record(), None)
            return False
        except OSError as error:
            log.warning('%s: cannot read the whitelist cache (%s); continuing without it',
                        self.path, error.strerror or error)
            self._set_record(_empty_record(), file_id)
            return False
        try:
            record = statedir.clamp_future(validate_record(json.loads(raw.decode('utf-8'))), self.clock())
        except (ValueError, RecursionError) as error:   # includes JSON and UTF-8 decoding errors
            self._quarantine(str(error).splitlines()[0][:200])
            self._set_record(_empty_record(), None)
            return False
        self._set_record(record, file_id)
        return record['vmids'] is not None

    def _quarantine(self, reason):
        target = '{0}.corrupt-{1}'.format(self.path, int(self.clock()))
        suffix = 0
        while os.path.exists(target):
            suffix += 1
            target = '{0}.corrupt-{1}.{2}'.format(self.path, int(self.clock()), suffix)
        try:
            os.rename(self.path, target)
            moved = 'moved it to {0}'.format(target)
        except OSError as error:
            moved = 'could not move it aside ({0}); it will be overwritten'.format(error.strerror or error)
        log.warning('%s: whitelist cache is corrupt (%s); %s and continuing as if nothing was cached '
                    '(every guest reported until the next successful fetch)', self.path, reason, moved)

    def reload_if_changed(self):
        """Re-read the file if another process (the CLI, the daemon) replaced it; return True if it did."""
        file_id = self._stat_id()
        if file_id == self._file_id:
            return False
        self.load()
        return True

    def save(self):
        """Write the cache file atomically (:func:`pve_hooks.statedir.write_json`). Raise OSError."""
        statedir.write_json(self.path, self._record, mode=0o644)
        self._file_id = self._stat_id()

    def _save_quietly(self):
        try:
            self.save()
        except OSError as error:
            log.error('%s: cannot write the whitelist cache (%s); keeping it in memory only, a restart '
                      'will fetch it again', self.path, error.strerror or error)

    def _set_record(self, record, file_id):
        self._record = record
        self._file_id = file_id
        vmids = record['vmids']
        if vmids is None:
            self._set_filter(NoListFilter(self.path, self._unfiltered_warned))
        else:
            self._set_filter(Filter(vmids))
        self._set = None

    # --- what is cached ------------------------------------------------

    @property
    def has_list(self):
        """True when a list has been fetched (even an empty one, which allows all)."""
        return self._record['vmids'] is not None

    @property
    def from_this_source(self):
        """False when the cached list came from another AccountDB URL (accountdb.url was changed)."""
        recorded = self._record['source']
        return self.source is None or recorded is None or recorded == self.source

    @property
    def vmids(self):
        """The cached list as a :class:`VmidSet` (empty when nothing is cached)."""
        if self._set is None:
            self._set = VmidSet.from_ints(self._record['vmids'] or ())
        return self._set

    @property
    def etag(self):
        return self._record['etag']

    @property
    def last_modified(self):
        return self._record['last_modified']

    @property
    def fetched_at(self):
        return self._record['fetched_at']

    @property
    def last_error(self):
        return self._record['last_error']

    @property
    def filter(self):
        """The current :class:`Filter` (replaced, not mutated, when the list changes)."""
        return self._filter

    def _set_filter(self, new):
        self._filter = new
        # Bound directly, so the daemon's per-guest cache.allows(vmid) costs what Filter.allows does.
        self.allows = new.allows

    def allows(self, vmid):
        """Return True when guest ``vmid`` is reported (no list, or an empty one, allows all)."""
        return self._filter.allows(vmid)

    def age(self, now=None):
        """Seconds since the list was last confirmed by AccountDB (200 or 304); None when no list."""
        if self._record['fetched_at'] is None:
            return None
        now = self.clock() if now is None else now
        return max(0.0, now - self._record['fetched_at'])

    def is_stale(self, now=None):
        """True when a list is cached and older than ``max_stale``."""
        age = self.age(now)
        return age is not None and age > self.max_stale

    def state(self, now=None):
        """Return OK, FAILING, STALE or NO_CACHE."""
        if not self.has_list:
            return NO_CACHE
        if self.is_stale(now):
            return STALE
        return FAILING if self._record['last_error'] else OK

    def status(self, now=None):
        """Return a JSON-able dict for ``status``, metrics and health.

        Keys: state, filtering (bool), count, fetched_at, age, etag,
        last_modified, last_attempt_at, last_error, failing_since,
        refresh_interval, max_stale, path.
        """
        now = self.clock() if now is None else now
        record = self._record
        return {
            'state': self.state(now),
            'filtering': self._filter.active,
            'count': len(record['vmids']) if record['vmids'] is not None else 0,
            'fetched_at': record['fetched_at'],
            'age': self.age(now),
            'etag': record['etag'],
            'last_modified': record['last_modified'],
            'last_attempt_at': record['last_attempt_at'],
            'last_error': record['last_error'],
            'failing_since': record['failing_since'],
            'refresh_interval': self.refresh_interval,
            'max_stale': self.max_stale,
            'path': self.path,
        }

    # --- refreshing ----------------------------------------------------

    def due(self, now=None):
        """True when no refresh was attempted yet or ``refresh_interval`` has passed since the last one."""
        now = self.clock() if now is None else now
        last = self._record['last_attempt_at']
        return last is None or now - last >= self.refresh_interval or now < last

    def refresh_if_due(self, client, now=None):
        """Refresh when :meth:`due`; return the outcome or NOT_DUE. Never raises AccountDB errors."""
        now = self.clock() if now is None else now
        self.reload_if_changed()
        if not self.due(now):
            return NOT_DUE
        return self.refresh(client, now)

    def refresh(self, client, now=None):
        """Fetch the whitelist conditionally with ``client`` (an :class:`accountdb.Client`).

        Return UPDATED (200: list replaced), UNCHANGED (304: fetched_at
        bumped) or FAILED (the cached list is kept; the error is in
        ``last_exception`` and ``status()['last_error']``). Logs as described
        in the module docstring. Never raises AccountDB errors.
        """
        now = self.clock() if now is None else now
        self.reload_if_changed()
        # A list cached from another AccountDB (accountdb.url changed) is fetched unconditionally:
        # its ETag could happen to match the new server's and keep the wrong list.
        conditional = self.has_list and self.from_this_source
        try:
            response = client.get_whitelist(etag=self.etag if conditional else None,
                                            last_modified=self.last_modified if conditional else None)
            if response.status == 304 and not conditional:
                raise AccountDBError('AccountDB answered 304 Not Modified to an unconditional request',
                                     status=304)
        except AccountDBError as error:
            return self._failed(error, now)
        if response.status == 304:
            self._record['fetched_at'] = now
            outcome = UNCHANGED
            log.debug('whitelist unchanged (304, ETag %s); %d VMIDs cached', self.etag,
                      len(self._record['vmids']), extra={'HTTP_STATUS': 304})
        else:
            previous = self._record['vmids']
            self._store(response, now)
            outcome = UPDATED
            if previous is None or sorted(previous) != self._record['vmids']:
                log.info('whitelist updated: %s (was %s), ETag %s', describe(self._record['vmids']),
                         describe(previous) if previous is not None else 'nothing cached', self.etag,
                         extra={'HTTP_STATUS': response.status})
        self._succeeded(now)
        self._save_quietly()
        return outcome

    def _store(self, response, now):
        """Replace the cached list with a 200 response's (GET or POST)."""
        vmids = sorted(set(int(v) for v in response.vmids))
        self._record.update(vmids=vmids, etag=response.etag, last_modified=response.last_modified,
                            fetched_at=now, source=self.source or self._record['source'])
        self._set_filter(Filter(vmids))
        self._set = None

    def _succeeded(self, now):
        record = self._record
        if self._failing or record['last_error']:
            log.info('whitelist refresh works again after failing for %s (last error: %s); %s cached',
                     _since(record['failing_since'], now), record['last_error'],
                     describe(record['vmids']))
        record.update(last_attempt_at=now, last_error=None, failing_since=None)
        self._failing = False
        self._stale_logged = False
        self.last_exception = None

    def _failed(self, error, now):
        record = self._record
        self.last_exception = error
        reason = str(error)
        record['last_attempt_at'] = now
        record['last_error'] = reason
        if record['failing_since'] is None:
            record['failing_since'] = now
        extra = {'HTTP_STATUS': error.status} if error.status is not None else {}
        if not self.has_list:
            if not self._failing:
                log.warning(NO_CACHE_WARNING.format(reason, format_duration(self.refresh_interval)),
                            extra=extra)
        elif not self._failing:
            log.warning('whitelist refresh failed (%s); keeping the cached list (%s, fetched %s ago, '
                        'ETag %s); retrying every %s', reason, describe(record['vmids']),
                        format_duration(self.age(now)), self.etag,
                        format_duration(self.refresh_interval), extra=extra)
        self._failing = True
        if self.is_stale(now) and not self._stale_logged:
            log.critical('whitelist cache is %s old, older than whitelist.max_stale (%s), and AccountDB '
                         'cannot be reached (%s); still filtering with it (%s) until a refresh works',
                         format_duration(self.age(now)), format_duration(self.max_stale), reason,
                         describe(record['vmids']), extra=extra)
            self._stale_logged = True
        self._save_quietly()
        return FAILED

    def store_response(self, response, now=None):
        """Record a 200 whitelist response (e.g. a POST's new state) as the cache and save it.

        Raise OSError if the file cannot be written.
        """
        now = self.clock() if now is None else now
        self._store(response, now)
        self._succeeded(now)
        self.save()


def describe(vmids):
    """Given a list of VMIDs (or a VmidSet), return e.g. '3 VMIDs' or 'empty list (all guests reported)'."""
    if not vmids:
        return 'empty list (all guests reported)'
    return '{0} VMID{1}'.format(len(vmids), '' if len(vmids) == 1 else 's')


def _since(then, now):
    if then is None:
        return 'an unknown time'
    return format_duration(now - then)

