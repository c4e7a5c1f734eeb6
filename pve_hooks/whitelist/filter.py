"""Which guests this node reports: the per-guest filter built from AccountDB's VMID whitelist.

A non-empty list means "only these VMIDs", an empty one means "all guests".
While no list was ever fetched nothing is filtered, and the first use says
so once (see docs/whitelist.md). The filter is replaced, never changed, when
the list changes, so a pass that holds one sees one list throughout.
"""

import logging

log = logging.getLogger(__name__)

UNFILTERED_WARNING = ('no VMID whitelist fetched yet ({0} holds none): reporting ALL guests (nothing '
                      'filtered) until the first successful fetch')


class Filter:
    """Which guests to report. ``allows(vmid)`` is one frozenset lookup (O(1)).

    ``vmids`` None (no list cached) or empty (AccountDB says "all") allow
    every guest; ``active`` is True when the filter actually restricts.
    """

    def __init__(self, vmids=None):
        self._vmids = frozenset(vmids) if vmids else None
        self.active = self._vmids is not None
        if self.active:
            # The set's own membership test, bound once: a C call per guest, no Python frame.
            self.allows = self._vmids.__contains__

    def allows(self, vmid):
        """Return True when guest ``vmid`` (an int) is reported (this method: no list, allow all)."""
        return True

    def select(self, vmids):
        """Given an iterable of VMIDs, return the list of those allowed (order kept)."""
        allowed = self._vmids
        if allowed is None:
            return list(vmids)
        return [vmid for vmid in vmids if vmid in allowed]

    def __len__(self):
        return len(self._vmids) if self._vmids is not None else 0


class NoListFilter(Filter):
    """The filter while no list was ever fetched: allows all and logs UNFILTERED_WARNING on first use.

    ``path`` is the cache file that holds no list (named in the warning).
    ``warned`` is a one-element list shared by every such filter of one
    cache, so the warning is logged once per cache (per process), not once
    per reload of the file.
    """

    def __init__(self, path, warned):
        Filter.__init__(self, None)
        self._path = path
        self._warned = warned

    def _warn(self):
        if not self._warned[0]:
            self._warned[0] = True
            log.warning(UNFILTERED_WARNING.format(self._path))

    def allows(self, vmid):
        """Return True (every guest is reported); the first call of this cache logs the warning."""
        self._warn()
        return True

    def select(self, vmids):
        """Given an iterable of VMIDs, return them all as a list; the first call logs the warning."""
        self._warn()
        return list(vmids)
