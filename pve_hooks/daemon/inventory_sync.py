"""Inventory reconciliation: keep AccountDB's list of this node's guests right.

Proxmox runs no hook on create, destroy, clone, config change, offline
migration or on a live migration's source, and PVE 8 can skip post-stop
(see docs/architecture.md and the Proxmox facts). So every
``reconcile.interval`` seconds (and at start) the daemon compares what
Proxmox says with what AccountDB last acknowledged, and PUTs the full
inventory when they differ.

One pass (:meth:`InventorySync.run`):

1. Decide whether to read Proxmox at all. pvesh costs hundreds of
   milliseconds per call, so ``<proxmox.pve_root>/.vmlist`` is used as a
   cheap change detector: the pvesh calls are skipped when ALL of these hold
   — the last read succeeded, ``.vmlist`` exists and its content for this
   node is unchanged, no hookscript event was delivered since the last read,
   the whitelist did not change, no full resync is due, and the last read is
   younger than ``reconcile.reread_interval``. ``.vmlist`` does not change on
   status changes (start/stop), which is why delivered events trigger a
   re-read and why ``reconcile.reread_interval`` bounds how long a status
   change nobody hooked (a guest powering itself off on PVE 8, a crash) can
   go unnoticed.
2. Read the guests through pvesh (``pvesh get /nodes/{node}/qemu`` and
   ``/lxc``). ANY failure — pvesh missing, failing, hanging past
   ``proxmox.pvesh_timeout``, printing garbage — is logged (once per
   distinct failure) and retried at the next interval; no inventory is sent
   from a failed read. As a second guard, an empty guest list is refused
   while ``.vmlist`` lists guests on this node.
3. Drop guests outside a non-empty whitelist (the same filter event
   delivery uses): AccountDB is told only about guests it asked for. An
   empty whitelist, or none cached, reports every guest.
4. PUT the inventory only if its content hash (volatile fields such as
   uptime excluded) differs from the last one AccountDB ACKNOWLEDGED, or
   when ``reconcile.full_resync_interval`` has passed since the last PUT.
   The acknowledged hash lives in ``<paths.state_dir>/inventory.json``; a
   failed PUT keeps the inventory in memory and is retried as soon as the
   connection allows, without reading pvesh again while it is fresh.
5. With ``reconcile.auto_attach``, guests that appeared since the previous
   successful read are handed to :func:`pve_hooks.proxmox.attach.attach_guests`. The
   first read after the state file was created only records the baseline:
   existing guests are attached by the operator (``pve-hooks attach``).
"""

import hashlib
import json
import logging
import os
import time

from pve_hooks.accountdb import errors
from pve_hooks.proxmox import inventory
from pve_hooks.proxmox import pvesh
from pve_hooks.proxmox.attach import attach_guests
from pve_hooks import statedir as state
from pve_hooks.accountdb.connection import Deferred
from pve_hooks.observe.logs import RepeatSummariser

log = logging.getLogger(__name__)

# run() outcomes
SENT = 'sent'              # PUT acknowledged by AccountDB
UNCHANGED = 'unchanged'    # read OK, same hash as acknowledged: nothing sent
SKIPPED = 'skipped'        # .vmlist unchanged etc.: pvesh not called
READ_FAILED = 'read-failed'  # pvesh/inventory failure: nothing sent
SEND_FAILED = 'send-failed'  # AccountDB failed or deferred: kept for a retry
REJECTED = 'rejected'      # AccountDB refused the inventory (400/422): logged, retried next interval


def state_path(settings):
    """Given Settings, return ``<paths.state_dir>/inventory.json`` (:data:`pve_hooks.statedir.INVENTORY`)."""
    return state.path(settings, state.INVENTORY)


def cluster_name(pve_root):
    """Return the cluster name from ``<pve_root>/corosync.conf`` (``totem { cluster_name: X }``), or None.

    A standalone node has no corosync.conf. Never raises.
    """
    try:
        with open(os.path.join(pve_root, 'corosync.conf'), 'rb') as stream:
            text = stream.read(1 << 20).decode('utf-8', 'replace')
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.strip().partition(':')
        if sep and key.strip() == 'cluster_name' and value.strip():
            return value.strip()
    return None


def vmlist_signature(pve_root, node):
    """Return a digest of ``.vmlist``'s entries for ``node`` (plus the global version), or None.

    None when the file is missing or unreadable (then pvesh is always read);
    the VmlistError is logged at debug level only, since the pvesh read that
    follows is authoritative.
    """
    try:
        found = inventory.read_vmlist(pve_root)
    except inventory.VmlistError as error:
        log.debug('%s; reading guests through pvesh instead', error)
        return None
    if found is None:
        return None
    version, ids = found
    mine = sorted((vmid, entry['type'], entry.get('version')) for vmid, entry in ids.items()
                  if entry['node'] == node)
    blob = json.dumps([version, mine], separators=(',', ':'), default=str)
    return hashlib.sha256(blob.encode('utf-8')).hexdigest()


def vmlist_count(pve_root, node):
    """Return how many guests ``.vmlist`` places on ``node`` (None when it cannot be read)."""
    try:
        found = inventory.read_vmlist(pve_root)
    except inventory.VmlistError:
        return None
    if found is None:
        return None
    return sum(1 for entry in found[1].values() if entry['node'] == node)


class InventorySync:
    """Inventory passes for one node.

    ``settings``: node, proxmox.*, reconcile.*, paths.state_dir.
    ``connection``: a connection.Connection (its ``client.put_inventory``).
    ``whitelist``: an object with ``allows(vmid)`` and optionally ``etag``
    and ``filter.active`` (whitelist.WhitelistCache), or None.
    ``pvesh_run(settings, path)``: pvesh.run by default.
    ``clock``: epoch seconds. ``attach``: callable(settings, guests, tick=)
    for auto-attach, or None for pve_hooks.proxmox.attach.attach_guests.
    ``tick()``: called per guest attached and every second while qm/pct run
    (the daemon passes its systemd watchdog's ping), or None.
    After each read ``pvesh_failures`` (failed reads in a row) and
    ``pvesh_error`` say how Proxmox answered; the daemon publishes them.
    """

    def __init__(self, settings, connection, whitelist=None, pvesh_run=pvesh.run, clock=time.time,
                 attach=None, tick=None):
        self.settings = settings
        self.connection = connection
        self.whitelist = whitelist
        self.pvesh_run = pvesh_run
        self.clock = clock
        self.attach = attach
        self.tick = tick
        self.path = state_path(settings)
        self.state = state.clamp_future(state.read_json(self.path, {}) or {}, clock())
        self.dirty = True          # read Proxmox at the first pass after start
        self.dirty_reason = 'start-up'
        self.next_at = 0.0         # due at start
        self.pending = None        # (inventory, hash, read_at) not yet acknowledged
        self.pvesh_failures = 0    # failed reads in a row (published for the pvesh alert)
        self.pvesh_error = ''      # why the last read failed ('' after a success)
        self.last_outcome = None
        self._repeats = RepeatSummariser(clock=clock)

    # -- scheduling -----------------------------------------------------------------
    def mark_dirty(self, reason):
        """Make the next pass read Proxmox (e.g. hookscript events were delivered: a status changed)."""
        if not self.dirty:
            self.dirty = True
            self.dirty_reason = reason

    def due(self, now):
        """True when a pass should run now (the interval passed, or an unsent inventory can be retried)."""
        if now >= self.next_at:
            return True
        return self.pending is not None and self.connection.due(now)

    @property
    def last_sync_at(self):
        """Epoch of the last inventory AccountDB acknowledged (or confirmed unchanged), or None."""
        return self.state.get('last_sync_at')

    # -- the pass -------------------------------------------------------------------
    def run(self, now=None):
        """Run one inventory pass; return one of the outcome constants. Never raises for
        pvesh, pmxcfs or AccountDB trouble (Deferred/AccountDBError are logged and kept)."""
        now = self.clock() if now is None else now
        self.next_at = now + self.settings['reconcile.interval']
        if self.pending is not None and now - self.pending[2] < self.settings['reconcile.interval']:
            outcome = self._put(*self.pending[:2], now=now)
            self.last_outcome = outcome
            return outcome
        self.pending = None
        signature = vmlist_signature(self.settings['proxmox.pve_root'], self.settings['node'])
        whitelist_tag = self._whitelist_tag()
        full_due = self._full_due(now)
        reason = self._reread_reason(now, signature, whitelist_tag, full_due)
        if reason is None:
            log.debug('inventory unchanged according to .vmlist; pvesh not called')
            self.last_outcome = SKIPPED
            return SKIPPED
        guests = self._read(reason)
        if guests is None:
            self.last_outcome = READ_FAILED
            return READ_FAILED
        self.dirty = False
        self.dirty_reason = None
        self.state.update(read_ok=True, read_at=now, vmlist=signature, whitelist=whitelist_tag)
        self._auto_attach(guests)
        reported = [guest for guest in guests if self._allowed(guest['vmid'])]
        document = inventory.build_inventory(self.settings['node'],
                                             cluster_name(self.settings['proxmox.pve_root']),
                                             reported, self.clock)
        digest = inventory.content_hash(document)
        if digest == self.state.get('acked_hash') and not full_due:
            self.state['last_sync_at'] = now
            self._save()
            log.debug('inventory unchanged (%d guests); nothing sent', len(reported))
            self.last_outcome = UNCHANGED
            return UNCHANGED
        self._save()
        outcome = self._put(document, digest, now=now, read_at=now)
        self.last_outcome = outcome
        return outcome

    def _whitelist_tag(self):
        if self.whitelist is None:
            return None
        return getattr(self.whitelist, 'etag', None)

    def _full_due(self, now):
        last = self.state.get('last_put_at')
        return last is None or now - last >= self.settings['reconcile.full_resync_interval'] or now < last

    def _reread_reason(self, now, signature, whitelist_tag, full_due):
        """Return why Proxmox must be read now, or None when the pvesh calls can be skipped."""
        if self.dirty:
            return self.dirty_reason or 'changes reported'
        if not self.state.get('read_ok'):
            return 'the previous read failed'
        if signature is None:
            return '.vmlist unavailable'
        if signature != self.state.get('vmlist'):
            return '.vmlist changed'
        if whitelist_tag != self.state.get('whitelist'):
            return 'whitelist changed'
        if full_due:
            return 'full resync due'
        read_at = self.state.get('read_at') or 0
        if now - read_at >= self.settings['reconcile.reread_interval'] or now < read_at:
            return 'reconcile.reread_interval passed'
        return None

    def _read(self, reason):
        """Return this node's guests, or None after logging why they could not be read."""
        node = self.settings['node']
        try:
            guests = inventory.read_guests(self.settings, node, self.pvesh_run)
            if not guests:
                expected = vmlist_count(self.settings['proxmox.pve_root'], node)
                if expected:
                    raise pvesh.PveshError('pvesh listed no guests but .vmlist places {0} on node {1}'.format(
                        expected, node))
        except pvesh.PveshError as error:
            self.pvesh_failures += 1
            self.state['read_ok'] = False
            self._save()
            repeat = self._repeats.failed('pvesh', str(error))
            if repeat:
                log.error('cannot read the guests of node %s (%s); inventory not sent, AccountDB keeps the '
                          'previous one; next try in %s s%s', node, error,
                          int(self.settings['reconcile.interval']), repeat.suffix, extra={'NODE': node})
            self.pvesh_error = str(error)
            return None
        failures = self._repeats.succeeded('pvesh')
        if failures:
            log.info('pvesh works again after %d failed read%s; reconciling the inventory', failures,
                     '' if failures == 1 else 's', extra={'NODE': node})
        self.pvesh_failures = 0
        self.pvesh_error = ''
        log.debug('read %d guests through pvesh (%s)', len(guests), reason, extra={'NODE': node})
        return guests

    def _allowed(self, vmid):
        if self.whitelist is None:
            return True
        try:
            return bool(self.whitelist.allows(vmid))
        except Exception as error:
            log.error('whitelist check failed for guest %s (%s); reporting it', vmid, error)
            return True

    def _put(self, document, digest, now, read_at=None):
        node = self.settings['node']
        if read_at is not None:
            self.pending = (document, digest, read_at)
        try:
            etag = self.connection.call('inventory', self.connection.client.put_inventory, node, document)
        except Deferred:
            return SEND_FAILED
        except errors.RejectedError as error:
            self.pending = None
            log.error('AccountDB rejected the inventory of node %s (%s); it is sent again at the next '
                      'interval', node, error, extra={'NODE': node, 'HTTP_STATUS': error.status})
            return REJECTED
        except errors.AccountDBError:
            return SEND_FAILED  # the connection logged it once; retried when it allows
        self.pending = None
        sent_at = self.clock()
        self.state.update(acked_hash=digest, acked_etag=etag, last_put_at=sent_at, last_sync_at=sent_at,
                          guests=len(document.get('guests', ())))
        self._save()
        log.info('inventory of node %s sent to AccountDB: %d guest%s', node, len(document['guests']),
                 '' if len(document['guests']) == 1 else 's', extra={'NODE': node})
        return SENT

    def _auto_attach(self, guests):
        vmids = sorted(guest['vmid'] for guest in guests)
        known = self.state.get('known_vmids')
        self.state['known_vmids'] = vmids
        if not self.settings['reconcile.auto_attach'] or known is None:
            return
        new = [guest for guest in guests if guest['vmid'] not in set(known)]
        if not new:
            return
        attach = self.attach or attach_guests
        names = ', '.join(str(guest['vmid']) for guest in new)
        try:
            summary = attach(self.settings, new, tick=self.tick)
        except Exception as error:  # attaching is best effort; reconciliation goes on
            log.error('auto-attach of new guests %s failed (%s); attach them with pve-hooks attach', names, error)
            return
        line = summary.line() if hasattr(summary, 'line') else 'done'
        failed = bool(getattr(summary, 'failed', None))
        log.log(logging.ERROR if failed else logging.INFO, 'auto-attach of new guests %s: %s%s', names, line,
                '; attach them with pve-hooks attach' if failed else '')

    def _save(self):
        try:
            state.write_json(self.path, self.state)
        except OSError as error:
            log.error('cannot save the inventory state %s (%s); the next pass may resend the inventory',
                      self.path, error.strerror or error)
