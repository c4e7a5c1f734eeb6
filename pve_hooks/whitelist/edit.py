"""The operator's changes to AccountDB's whitelist: ``pve-hooks whitelist add|remove|set``.

:func:`change` plans the effective change against the cached list the
operator last saw and sends it as ONE bulk request with
``If-Match: <cached ETag>``; a 412 (someone else changed the list since)
refetches the cache and raises :class:`ConcurrentChange`, so two operators
cannot silently overwrite each other.
"""

import logging

from pve_hooks.accountdb.errors import PreconditionFailed
from pve_hooks.config import schema
from pve_hooks.whitelist.cache import FAILED, describe
from pve_hooks.whitelist.vmidset import InputError, VmidSet

log = logging.getLogger(__name__)


class ConcurrentChange(Exception):
    """AccountDB's whitelist changed since it was read (412); the cache has been refetched."""


class Change:
    """A planned bulk change: ``add`` and ``remove`` are VmidSets of effective changes."""

    __slots__ = ('add', 'remove')

    def __init__(self, add, remove):
        self.add = add
        self.remove = remove

    def __len__(self):
        return len(self.add) + len(self.remove)

    def __bool__(self):
        return bool(self.add) or bool(self.remove)


def plan(current, add=None, remove=None, set_to=None):
    """Return the :class:`Change` that turns ``current`` (a VmidSet) into what is asked.

    Give ``add`` and/or ``remove`` (VmidSets), or ``set_to`` (the whole
    desired list). VMIDs already present are not re-added, absent ones not
    removed. Raise InputError when a VMID is both added and removed.
    """
    if set_to is not None:
        return Change(set_to - current, current - set_to)
    add = add or VmidSet()
    remove = remove or VmidSet()
    both = add - (add - remove)
    if both:
        raise InputError(['{0} both added and removed; give each VMID once'.format(both.format())])
    return Change(add - current, remove - (remove - current))


def check_size(change, limit):
    """Given a :class:`Change` and the most VMIDs one may touch, return None; raise InputError if it touches more."""
    if len(change) > limit:
        raise InputError(['this change touches {0} VMIDs, more than whitelist.max_change ({1}); '
                          'split it or raise whitelist.max_change'.format(len(change), limit)])


def change(client, cache, add=None, remove=None, set_to=None, fresh=False, limit=None, now=None):
    """Apply a bulk change to AccountDB's whitelist in ONE request; return the :class:`Change` sent.

    ``client`` is an :class:`accountdb.client.Client`, ``cache`` the node's
    :class:`~pve_hooks.whitelist.cache.WhitelistCache`. ``add``/``remove``
    are applied to the cached list (the one the operator last saw; it is
    fetched first if nothing is cached); ``set_to`` or ``fresh`` fetches the
    current list first. The request carries ``If-Match: <cached ETag>``. On
    success the cache holds the new state. An empty change sends nothing.
    ``limit`` caps the VMIDs touched (``whitelist.max_change``; None: the
    schema's default).

    Raise InputError (nothing sent), ConcurrentChange (412: the cache was
    refetched; retry), or the client's AccountDBError.
    """
    limit = schema.BY_KEY['whitelist.max_change'].default if limit is None else limit
    if fresh or set_to is not None or not cache.has_list or not cache.from_this_source:
        if cache.refresh(client, now) == FAILED:
            raise cache.last_exception
    wanted = plan(cache.vmids, add=add, remove=remove, set_to=set_to)
    check_size(wanted, limit)
    if not wanted:
        return wanted
    try:
        response = client.update_whitelist(add=wanted.add.to_list(), remove=wanted.remove.to_list(),
                                           if_match=cache.etag)
    except PreconditionFailed:
        etag = cache.etag
        outcome = cache.refresh(client, now)
        if outcome == FAILED:
            raise ConcurrentChange('the whitelist changed on AccountDB since it was read (ETag {0}) and '
                                   'refetching it failed ({1}); nothing was changed, retry later'.format(
                                       etag, cache.last_error))
        raise ConcurrentChange('the whitelist changed on AccountDB since it was read (ETag {0}); nothing '
                               'was changed; the cache now holds the current list ({1}, ETag {2}): check '
                               'it with `pve-hooks whitelist show` and run the command again'.format(
                                   etag, describe(cache.vmids), cache.etag))
    try:
        cache.store_response(response, now)
    except OSError as error:
        log.warning('%s: the whitelist was changed but the cache could not be written (%s)',
                    cache.path, error.strerror or error)
    return wanted
