"""The reference AccountDB's SQLite store: events (deduplicated), inventories, heartbeats, whitelist.

One connection guarded by a lock (the HTTP server is threaded); WAL
journal, so a killed server keeps every committed batch. ``event_id`` has a
UNIQUE constraint: a redelivered event is answered 'duplicate' and stored once.
"""

import email.utils
import hashlib
import json
import sqlite3
import threading
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT NOT NULL UNIQUE,
    node TEXT NOT NULL,
    vmid INTEGER NOT NULL,
    seq INTEGER,
    phase TEXT NOT NULL,
    received_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_node ON events (node, vmid);
CREATE TABLE IF NOT EXISTS inventories (
    node TEXT PRIMARY KEY,
    etag TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL,
    puts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS heartbeats (
    node TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    last_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS whitelist (
    vmid INTEGER PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def http_date(seconds):
    """Return ``seconds`` since the epoch as an HTTP date (GMT)."""
    return email.utils.formatdate(seconds, usegmt=True)


class Store:
    """The server's database at ``path``; ``clock`` gives wall-clock seconds."""

    def __init__(self, path, clock=time.time):
        self.clock = clock
        self.lock = threading.Lock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.execute('PRAGMA journal_mode=WAL')
        self.db.execute('PRAGMA synchronous=NORMAL')
        self.db.executescript(SCHEMA)
        self._whitelist_cache = None

    def close(self):
        """Close the database."""
        with self.lock:
            self.db.close()

    # -- events -------------------------------------------------------------

    def add_events(self, node, events):
        """Store valid events (dicts) in one transaction. Return one status per event.

        'accepted' for a new event_id, 'duplicate' for one already stored
        (including earlier in the same batch).
        """
        now = self.clock()
        ids = [event['event_id'] for event in events]
        with self.lock:
            self.db.execute('BEGIN IMMEDIATE')
            try:
                seen = set()
                for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit is 999 on old builds
                    chunk = ids[start:start + 500]
                    seen.update(row[0] for row in self.db.execute(
                        'SELECT event_id FROM events WHERE event_id IN ({0})'.format(','.join('?' * len(chunk))),
                        chunk))
                statuses, rows = [], []
                for event in events:
                    if event['event_id'] in seen:
                        statuses.append('duplicate')
                        continue
                    seen.add(event['event_id'])
                    statuses.append('accepted')
                    rows.append((event['event_id'], event.get('node') or node, event['vmid'], event.get('seq'),
                                 event['phase'], now, json.dumps(event)))
                self.db.executemany(
                    'INSERT INTO events (event_id, node, vmid, seq, phase, received_at, body) '
                    'VALUES (?, ?, ?, ?, ?, ?, ?)', rows)
                self.db.execute('COMMIT')
            except BaseException:
                self.db.execute('ROLLBACK')
                raise
        return statuses

    def events(self, node=None):
        """Return stored events as dicts (columns plus the decoded body), in arrival order."""
        query = 'SELECT event_id, node, vmid, seq, phase, received_at, body FROM events'
        args = ()
        if node is not None:
            query += ' WHERE node = ?'
            args = (node,)
        with self.lock:
            rows = self.db.execute(query + ' ORDER BY rowid', args).fetchall()
        return [{'event_id': r[0], 'node': r[1], 'vmid': r[2], 'seq': r[3], 'phase': r[4],
                 'received_at': r[5], 'body': json.loads(r[6])} for r in rows]

    # -- inventories and heartbeats ----------------------------------------

    def put_inventory(self, node, inventory):
        """Store ``node``'s inventory. Return its ETag (a hash of the canonical JSON)."""
        body = json.dumps(inventory, sort_keys=True, separators=(',', ':'))
        etag = '"{0}"'.format(hashlib.sha256(body.encode('utf-8')).hexdigest()[:32])
        with self.lock:
            self.db.execute(
                'INSERT INTO inventories (node, etag, body, updated_at) VALUES (?, ?, ?, ?) '
                'ON CONFLICT(node) DO UPDATE SET etag=excluded.etag, body=excluded.body, '
                'updated_at=excluded.updated_at, puts=puts+1', (node, etag, body, self.clock()))
        return etag

    def inventories(self):
        """Return {node: {"etag", "updated_at", "puts", "inventory"}}."""
        with self.lock:
            rows = self.db.execute('SELECT node, etag, body, updated_at, puts FROM inventories').fetchall()
        return {r[0]: {'etag': r[1], 'inventory': json.loads(r[2]), 'updated_at': r[3], 'puts': r[4]}
                for r in rows}

    def heartbeat(self, node, body):
        """Record a heartbeat from ``node``."""
        with self.lock:
            self.db.execute(
                'INSERT INTO heartbeats (node, count, last_at, body) VALUES (?, 1, ?, ?) '
                'ON CONFLICT(node) DO UPDATE SET count=count+1, last_at=excluded.last_at, body=excluded.body',
                (node, self.clock(), json.dumps(body, sort_keys=True)))

    def heartbeats(self):
        """Return {node: {"count", "last_at", "last"}}."""
        with self.lock:
            rows = self.db.execute('SELECT node, count, last_at, body FROM heartbeats').fetchall()
        return {r[0]: {'count': r[1], 'last_at': r[2], 'last': json.loads(r[3])} for r in rows}

    # -- whitelist ------------------------------------------------------------

    def _meta(self, key, default):
        row = self.db.execute('SELECT value FROM meta WHERE key = ?', (key,)).fetchone()
        return row[0] if row else default

    def whitelist(self):
        """Return (body bytes, etag, last_modified HTTP date, last_modified seconds), cached per version."""
        with self.lock:
            version = int(self._meta('whitelist_version', '0'))
            if self._whitelist_cache is None or self._whitelist_cache[0] != version:
                modified = float(self._meta('whitelist_modified', '0')) or 0.0
                vmids = [row[0] for row in self.db.execute('SELECT vmid FROM whitelist ORDER BY vmid')]
                body = json.dumps({'vmids': vmids}, separators=(',', ':')).encode('utf-8')
                etag = '"wl-{0}"'.format(version)
                self._whitelist_cache = (version, body, etag, http_date(int(modified)), int(modified))
            return self._whitelist_cache[1:]

    def whitelist_etag(self):
        """Return the whitelist's current ETag."""
        with self.lock:
            return '"wl-{0}"'.format(int(self._meta('whitelist_version', '0')))

    def update_whitelist(self, add, remove, if_match=None):
        """Apply one bulk change. Return the new state like :meth:`whitelist`, or None if ``if_match`` is stale.

        The version (and so the ETag) changes only when the set changes.
        """
        with self.lock:
            self.db.execute('BEGIN IMMEDIATE')
            try:
                version = int(self._meta('whitelist_version', '0'))
                if if_match is not None and if_match.strip() not in ('*', '"wl-{0}"'.format(version)):
                    self.db.execute('ROLLBACK')
                    return None
                before = self.db.total_changes
                self.db.executemany('INSERT OR IGNORE INTO whitelist (vmid) VALUES (?)', [(v,) for v in add])
                self.db.executemany('DELETE FROM whitelist WHERE vmid = ?', [(v,) for v in remove])
                if self.db.total_changes != before:
                    # Last-Modified has 1 s resolution: never let it go backwards or repeat silently.
                    modified = max(int(self.clock()), int(float(self._meta('whitelist_modified', '0'))))
                    self.db.executemany('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)',
                                        [('whitelist_version', str(version + 1)),
                                         ('whitelist_modified', str(modified))])
                self.db.execute('COMMIT')
            except BaseException:
                self.db.execute('ROLLBACK')
                raise
        return self.whitelist()

    # -- everything -------------------------------------------------------

    def dump(self):
        """Return everything the store holds, for ``dev-accountdb dump``."""
        events = self.events()
        per_node = {}
        for event in events:
            per_node.setdefault(event['node'], 0)
            per_node[event['node']] += 1
        body, etag, last_modified, _ = self.whitelist()
        return {'events': {'total': len(events), 'per_node': per_node,
                           'latest': [e['body'] for e in events[-20:]]},
                'inventories': {node: {'etag': v['etag'], 'updated_at': v['updated_at'], 'puts': v['puts'],
                                       'guests': len(v['inventory'].get('guests', []))
                                       if isinstance(v['inventory'], dict) else None}
                                for node, v in self.inventories().items()},
                'heartbeats': self.heartbeats(),
                'whitelist': {'vmids': json.loads(body)['vmids'], 'etag': etag, 'last_modified': last_modified}}
