"""One delivery pass: ready events from the outbox to AccountDB, in order, in batches.

A pass lists the ready events in outbox order (names only, once per round:
the listing is reused batch after batch until used up), claims them one
by one into batches of at most ``delivery.batch_size``, and sends each batch
through the :class:`~pve_hooks.accountdb.connection.Connection` (breaker, backoff,
health probe). Once AccountDB has answered a batch of the pass, the next
batch is claimed by a worker thread while the current one is in flight, so
the disk work of claiming overlaps the wait for AccountDB (a backlog drains
about a third faster; see docs/performance.md); not for batches smaller than
CLAIM_AHEAD_MIN_BATCH, where the handoff costs more than it saves. Per-event results decide
each event's fate:

- ``accepted`` / ``duplicate`` → acknowledged (removed from the outbox);
- ``rejected`` → moved to ``dead/`` with AccountDB's reason, logged at
  critical level (the client bisects a 400/422/413 batch so only the
  offending event is rejected);
- no result, or the whole batch failed (transient, configuration, auth) →
  returned to ready and retried later.

Per-guest order: an event for a guest is never sent before an earlier
undelivered event for the same guest. When an event for VMID X is held back
(its batch failed, it had no result, it could not be claimed), every later
event for X is left untouched for the rest of the pass; one claimed ahead
before X was held goes back to ready/ unsent.

Whitelist: an event for a guest outside a non-empty whitelist is
acknowledged locally as ``filtered`` and counted, never sent. With no
whitelist cache at all nothing is filtered (the whitelist module logs that).
"""

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from pve_hooks.accountdb import errors
from pve_hooks.accountdb.connection import Deferred

log = logging.getLogger(__name__)

# Smallest delivery.batch_size at which the next batch is claimed ahead in the worker thread.
# Handing a batch to the thread and back costs about as much as claiming a few events, so
# for tiny batches claiming ahead would cost more than it saves (measured: with batch_size 1
# it made one-by-one delivery ~7 % slower; docs/performance.md, "Outbox drain").
CLAIM_AHEAD_MIN_BATCH = 16


class Interrupted(BaseException):
    """Raised inside a pass by the daemon's shutdown timer; the pass returns its batch."""


class PassResult:
    """What one delivery pass did; counters are event counts."""

    __slots__ = ('batches', 'accepted', 'duplicate', 'rejected', 'filtered', 'released',
                 'quarantined', 'held_ids', 'deferred', 'error', 'latencies')

    def __init__(self):
        self.batches = 0
        self.accepted = 0
        self.duplicate = 0
        self.rejected = 0
        self.filtered = 0
        self.released = 0
        self.quarantined = 0
        self.held_ids = set()  # events left in ready/ because an earlier one of their guest was held
        self.deferred = None   # Deferred reason when nothing could be attempted
        self.error = None      # the AccountDBError that ended the pass, if any
        self.latencies = []    # seconds from occurred_at/spool to acknowledgement, per delivered event

    @property
    def held(self):
        """Events left in ready/ this pass to keep their guest's order."""
        return len(self.held_ids)

    @property
    def delivered(self):
        """Events AccountDB has now (accepted + duplicate)."""
        return self.accepted + self.duplicate

    def as_dict(self):
        """Return the counters as a dict (for logs and tests)."""
        counters = {name: getattr(self, name) for name in self.__slots__
                    if name not in ('error', 'latencies', 'deferred', 'held_ids')}
        counters['held'] = self.held
        return counters


class Delivery:
    """Runs delivery passes for one node.

    ``settings`` supplies ``node`` and ``delivery.batch_size``; ``outbox`` is an
    outbox.Outbox; ``connection`` a connection.Connection wrapping the
    AccountDB client; ``whitelist`` an object with ``allows(vmid)`` or None;
    ``clock`` returns epoch seconds; ``should_stop()`` returns True when the
    daemon is shutting down (checked between batches).
    """

    claim_ahead_min_batch = CLAIM_AHEAD_MIN_BATCH

    def __init__(self, settings, outbox, connection, whitelist=None, clock=time.time, should_stop=None):
        self.settings = settings
        self.outbox = outbox
        self.connection = connection
        self.whitelist = whitelist
        self.clock = clock
        self.should_stop = should_stop or (lambda: False)
        self.last_delivery_at = None
        self.totals = {'accepted': 0, 'duplicate': 0, 'rejected': 0, 'filtered': 0,
                       'quarantined': 0, 'released': 0}
        self.in_flight = []   # entries claimed and not yet settled (returned on shutdown)
        self.returned_on_interrupt = 0   # events the last interrupted pass returned to ready

    def run(self):
        """Deliver what can be delivered now; return a :class:`PassResult`.

        Never raises for AccountDB or outbox trouble (it is logged and
        reflected in the result); :class:`Interrupted` from the shutdown
        timer propagates after the in-flight batch was returned to ready.
        """
        result = PassResult()
        self.returned_on_interrupt = 0
        try:
            self._drain(result)
        except Interrupted:
            self.returned_on_interrupt = self.return_in_flight(result)
            raise
        finally:
            self.return_in_flight(result)
        for key in self.totals:
            self.totals[key] += getattr(result, key)
        if result.delivered:
            self.last_delivery_at = self.clock()
        return result

    def return_in_flight(self, result=None):
        """Return every claimed, unsettled event to ready (shutdown, failure); return how many."""
        entries, self.in_flight = self.in_flight, []
        count = self._release(entries)
        if result is not None:
            result.released += count
        return count

    def _release(self, entries):
        """Move claimed ``entries`` back to ready/ (one directory fsync); return how many moved."""
        if not entries:
            return 0
        try:
            failed = self.outbox.release_many(entries)
        except OSError as error:   # the fsync of ready/: the renames are done, recover() handles a crash
            failed = []
            log.error('cannot sync the outbox ready queue after returning %d events (%s)', len(entries), error)
        for entry, error in failed:
            log.error('cannot return event %s to the outbox ready queue (%s); it will be recovered '
                      'at the next start', entry.event_id, error, extra={'EVENT_ID': entry.event_id})
        return len(entries) - len(failed)

    # -- the pass -------------------------------------------------------------------
    def _drain(self, result):
        batch_size = self.settings['delivery.batch_size']
        held = set()   # guests whose later events wait for the next pass
        pool = _Prefetch()
        try:
            while not self.should_stop():
                try:
                    # One listing (names only, no stat) serves every batch until it is used up; events spooled
                    # meanwhile have higher seqs, so the next listing picks them up in order.
                    listing = self.outbox.ready_names()
                except OSError as error:
                    log.error('cannot list the outbox (%s); retrying at the next pass', error)
                    return
                settled_before = _settled(result)
                if not self._send_listed(listing, batch_size, held, result, pool):
                    return  # the connection failed or is deferred: stop this pass
                if _settled(result) == settled_before:
                    return  # nothing left that can move in this pass (empty, or all held)
        finally:
            pool.close()

    def _send_listed(self, listing, batch_size, held, result, pool):
        """Claim and send the events of ``listing`` (ready/ names, sorted) batch after batch.

        Return False if a send failed or was deferred (the pass stops), True otherwise.

        Once a batch of this pass has been answered, the next batch is claimed
        by ``pool``'s worker thread while the current one is in flight (the
        claim is disk work, the send mostly waiting on AccountDB), unless
        batches are smaller than ``claim_ahead_min_batch``. Events claimed
        ahead whose guest is held meanwhile go back to ready/ unsent, so
        per-guest order holds; if the send fails they all go back.
        """
        claims, position = self._take(listing, 0, batch_size, held, track=self.in_flight)
        answered = False
        while claims:
            batch = self._admit(claims, held, result)
            ahead = None
            if (answered and batch_size >= self.claim_ahead_min_batch and position < len(listing)
                    and not self.should_stop()):
                ahead = pool.submit(self._take, listing, position, batch_size, held)
            try:
                sent = self._send(batch, held, result) if batch else True
            finally:
                if ahead is not None:   # always collected, so an interrupted pass returns these too
                    claims, position = ahead.result()
                    self.in_flight.extend(entry for entry, event, _note in claims if event is not None)
            if not sent or self.should_stop():
                if ahead is not None:
                    self._unclaim(claims)
                return sent
            answered = answered or bool(batch)
            if ahead is None:
                if position >= len(listing) or self.should_stop():
                    return True
                claims, position = self._take(listing, position, batch_size, held, track=self.in_flight)
        return True

    def _take(self, listing, position, batch_size, held, track=None):
        """Claim up to ``batch_size`` sendable events from ``listing[position:]`` (ready/ names, sorted).

        Return (claims, next position); each claim is (entry, event, note):
        event None with note ``'held'`` (its guest waits, the file was not
        touched) or the reason it could not be claimed; a claimed event's note
        is True if it is to be sent, False if the whitelist filters it
        (filtered events do not count toward ``batch_size``). Reads ``held``
        but changes nothing of this object's state except appending claimed
        entries to ``track`` when given, so it can run in the worker thread
        (:meth:`_admit` does the bookkeeping on the main thread).
        """
        claims = []
        blocked = set()   # guests that lost an event in this call
        sendable = 0
        while position < len(listing) and sendable < batch_size:
            entry = self.outbox.ready_entry(listing[position])
            position += 1
            if entry is None:   # not an event's name: quarantined, nothing to order
                continue
            if entry.vmid in held or entry.vmid in blocked:
                claims.append((entry, None, 'held'))
                continue
            try:
                event = self.outbox.claim(entry)
            except OSError as error:
                event, note = None, str(error)
            else:
                note = 'quarantined or gone'
            if event is None:
                blocked.add(entry.vmid)
                claims.append((entry, None, note))
                continue
            if track is not None:
                track.append(entry)
            allowed = self.whitelist is None or self._allowed(event.get('vmid', entry.vmid))
            claims.append((entry, event, allowed))
            sendable += allowed
        return claims, position

    def _admit(self, claims, held, result):
        """Do the bookkeeping of ``claims`` (from :meth:`_take`); return the batch to send, [(entry, event)].

        Unclaimable events hold their guest; whitelisted-out events are
        acknowledged; events of a guest held since they were claimed go back
        to ready/ unsent.
        """
        batch = []
        overtaken = []   # claimed ahead, then an earlier event of their guest was held
        for entry, event, note in claims:
            if note == 'held':
                result.held_ids.add(entry.event_id)
            elif event is None:
                # Quarantined (the outbox logged why) or taken by someone else: either way later
                # events of this guest wait for the next pass, so order is never inverted.
                held.add(entry.vmid)
                result.quarantined += 1
                log.debug('event %s not claimable (%s); later events of guest %s wait for the next pass',
                          entry.event_id, note, entry.vmid,
                          extra={'EVENT_ID': entry.event_id, 'VMID': entry.vmid})
            elif entry.vmid in held:
                overtaken.append((entry, event, note))
                result.held_ids.add(entry.event_id)
            elif not note:
                self._settle(entry, 'ack')
                result.filtered += 1
                log.debug('event %s for guest %s filtered by the whitelist; acknowledged locally',
                          entry.event_id, event.get('vmid'),
                          extra={'EVENT_ID': entry.event_id, 'VMID': event.get('vmid')})
            else:
                batch.append((entry, event))
        self._unclaim(overtaken)
        return batch

    def _unclaim(self, claims):
        """Return the claimed events of ``claims`` to ready/, uncounted: this pass never tried them."""
        entries = [entry for entry, event, _note in claims if event is not None]
        if not entries:
            return
        self._release(entries)
        self._forget(entries)

    def _allowed(self, vmid):
        try:
            return bool(self.whitelist.allows(vmid))
        except Exception as error:  # never lose or block an event over a whitelist bug
            log.error('whitelist check failed for guest %s (%s); sending the event unfiltered', vmid, error,
                      extra={'VMID': vmid})
            return True

    def _send(self, batch, held, result):
        """Send ``batch``; settle every event; return True if AccountDB answered."""
        events = [event for _entry, event in batch]
        node = self.settings['node']
        started = self.clock()
        try:
            results = self.connection.call('event batch', self.connection.client.send_events_bisect,
                                           node, events)
        except Deferred as deferred:
            result.deferred = deferred.reason
            self._hold_all(batch, held, result)
            return False
        except errors.AccountDBError as error:
            result.error = error
            self._hold_all(batch, held, result)
            return False
        result.batches += 1
        by_id = _index_results(results)
        now = self.clock()
        log.debug('sent %d event%s to AccountDB', len(batch), '' if len(batch) == 1 else 's',
                  extra={'BATCH_SIZE': len(batch), 'DURATION_MS': int((now - started) * 1000),
                         'NODE': node})
        delivered = []   # acknowledged together below: one counter update per batch, not per event
        for entry, event in batch:
            outcome = by_id.get(event.get('event_id'))
            status = outcome.get('status') if outcome else None
            if status in ('accepted', 'duplicate'):
                delivered.append(entry)
                setattr(result, status, getattr(result, status) + 1)
                age = _event_age(entry, now)
                if age is not None:
                    result.latencies.append(age)
            elif status == 'rejected':
                reason = _reject_reason(outcome)
                self._settle(entry, 'dead', reason)
                result.rejected += 1
                log.critical('AccountDB rejected event %s (guest %s, %s): %s; moved to dead letters, '
                             'inspect with pve-hooks outbox show %s', entry.event_id, event.get('vmid'),
                             event.get('phase'), reason, entry.event_id,
                             extra={'EVENT_ID': entry.event_id, 'VMID': event.get('vmid'),
                                    'PHASE': event.get('phase'), 'NODE': node})
            else:
                self._settle(entry, 'release')
                held.add(entry.vmid)
                result.released += 1
                log.warning('AccountDB returned no usable result for event %s (guest %s); kept in the '
                            'outbox for the next pass', entry.event_id, event.get('vmid'),
                            extra={'EVENT_ID': entry.event_id, 'VMID': event.get('vmid')})
        self._ack_many(delivered)
        return True

    def _ack_many(self, entries):
        """Acknowledge ``entries`` (AccountDB has them) and drop them from in_flight."""
        try:
            failed = self.outbox.ack_many(entries)
        except OSError as error:
            failed = []
            log.error('cannot update the outbox counters after acknowledging %d events (%s); they are '
                      'recounted at the next start', len(entries), error)
        for entry, error in failed:
            log.error('cannot acknowledge event %s in the outbox (%s); it will be retried and deduplicated '
                      'by AccountDB', entry.event_id, error, extra={'EVENT_ID': entry.event_id})
        self._forget(entries)

    def _forget(self, entries):
        """Drop ``entries`` (settled one way or another) from in_flight."""
        settled = set(entries)
        self.in_flight = [entry for entry in self.in_flight if entry not in settled]

    def _hold_all(self, batch, held, result):
        for entry, _event in batch:
            held.add(entry.vmid)
        self.return_in_flight(result)

    def _settle(self, entry, action, reason=None):
        """Acknowledge, dead-letter or release ``entry`` and drop it from in_flight."""
        try:
            if action == 'ack':
                self.outbox.ack(entry)
            elif action == 'dead':
                self.outbox.dead(entry, reason)
            else:
                self.outbox.release(entry)
        except OSError as error:
            log.error('cannot %s event %s in the outbox (%s); it will be retried and deduplicated by '
                      'AccountDB', {'ack': 'acknowledge', 'dead': 'dead-letter'}.get(action, 'release'),
                      entry.event_id, error, extra={'EVENT_ID': entry.event_id})
        finally:
            try:
                self.in_flight.remove(entry)
            except ValueError:
                pass


class _Prefetch:
    """One worker thread for claiming ahead, started on first use and stopped by :meth:`close`.

    A pass that fits in one batch never starts it, so an idle daemon has no extra thread.
    """

    def __init__(self):
        self.executor = None

    def submit(self, function, *args):
        """Run ``function(*args)`` in the worker; return its Future."""
        if self.executor is None:
            self.executor = ThreadPoolExecutor(1, thread_name_prefix='pve-hooks-claim')
        return self.executor.submit(function, *args)

    def close(self):
        """Wait for the worker to finish and stop it. Return None."""
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


def _settled(result):
    return result.accepted + result.duplicate + result.rejected + result.filtered + result.quarantined


def _index_results(results):
    """Return {event_id: result dict} from the client's per-event results."""
    index = {}
    if isinstance(results, dict):   # send_events_bisect: {event_id: result}
        results = list(results.values())
    for item in results or ():
        if isinstance(item, dict) and item.get('event_id'):
            index[item['event_id']] = item
        elif hasattr(item, 'event_id'):
            index[item.event_id] = {'event_id': item.event_id, 'status': getattr(item, 'status', None),
                                    'error': getattr(item, 'error', None)}
    return index


def _reject_reason(outcome):
    reason = outcome.get('error') or outcome.get('reason') or 'no reason given'
    return ' '.join(str(reason).split())[:500]


def _event_age(entry, now):
    mtime = getattr(entry, 'mtime', None)
    if mtime is None:
        return None
    return max(0.0, now - mtime)
