"""VMIDs as a compact set of sorted ranges, and the parser for operator input.

A :class:`VmidSet` holds disjoint, non-adjacent, sorted inclusive ranges
``(low, high)``. It is what operators type (``100-199``), what ``whitelist
show`` prints, and what bulk changes are computed on, so a range such as
``100-999999999`` never has to be expanded to be compared. Membership is a
binary search (O(log r) for r ranges); the per-guest filter in
:mod:`pve_hooks.whitelist.cache` uses a plain frozenset instead (O(1)).

:func:`parse_items` reads one VMID or range per line (comments after ``#``
and blank lines allowed), collects every error with its line or argument
number, and raises :class:`InputError` listing them all.
"""

import bisect

# Proxmox VE accepts guest IDs from 100 to 999999999 (pve-guest-common).
MIN_VMID = 100
MAX_VMID = 999999999


class InputError(Exception):
    """Operator input is invalid. ``errors`` lists one line per problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__('; '.join(self.errors))


class VmidSet:
    """An immutable set of VMIDs stored as sorted, merged inclusive ranges."""

    __slots__ = ('ranges', '_lows', '_count')

    def __init__(self, ranges=()):
        """Given (low, high) pairs in any order, possibly overlapping, merge them."""
        merged = []
        for low, high in sorted((int(low), int(high)) for low, high in ranges):
            if low > high:
                raise ValueError('inverted range {0}-{1}'.format(low, high))
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        self.ranges = tuple(merged)
        self._lows = [low for low, _ in merged]
        self._count = sum(high - low + 1 for low, high in merged)

    @classmethod
    def from_ints(cls, vmids):
        """Return the VmidSet holding the integers in ``vmids`` (any order, duplicates allowed)."""
        ranges = []
        for vmid in sorted(set(vmids)):
            if ranges and vmid == ranges[-1][1] + 1:
                ranges[-1][1] = vmid
            else:
                ranges.append([vmid, vmid])
        result = cls.__new__(cls)
        result.ranges = tuple((low, high) for low, high in ranges)
        result._lows = [low for low, _ in ranges]
        result._count = sum(high - low + 1 for low, high in ranges)
        return result

    def __contains__(self, vmid):
        index = bisect.bisect_right(self._lows, vmid) - 1
        return index >= 0 and vmid <= self.ranges[index][1]

    def __len__(self):
        return self._count

    def __bool__(self):
        return bool(self.ranges)

    def __iter__(self):
        for low, high in self.ranges:
            yield from range(low, high + 1)

    def __eq__(self, other):
        return isinstance(other, VmidSet) and self.ranges == other.ranges

    def __hash__(self):
        return hash(self.ranges)

    def __repr__(self):
        return 'VmidSet({0!r})'.format(self.format())

    def __or__(self, other):
        return VmidSet(self.ranges + other.ranges)

    def __sub__(self, other):
        """Return the VMIDs in self that are not in ``other`` (computed on ranges)."""
        result = []
        others = other.ranges
        j = 0
        for low, high in self.ranges:
            while j < len(others) and others[j][1] < low:
                j += 1
            k = j
            while k < len(others) and others[k][0] <= high:
                o_low, o_high = others[k]
                if o_low > low:
                    result.append((low, o_low - 1))
                low = max(low, o_high + 1)
                if low > high:
                    break
                k += 1
            if low <= high:
                result.append((low, high))
        return VmidSet(result)

    def to_list(self):
        """Return the VMIDs as a sorted list of integers (expands every range)."""
        return list(self)

    def format(self, separator=','):
        """Return the set compactly, e.g. ``'100-199,250,300-301'``; '' when empty."""
        return separator.join(str(low) if low == high else '{0}-{1}'.format(low, high)
                              for low, high in self.ranges)


def _vmid(text):
    """Return the VMID in ``text`` or raise ValueError with the reason."""
    if not text.isascii() or not text.isdigit():
        raise ValueError("{0!r} is not a VMID (an integer from {1} to {2}) or a range such as "
                         "100-199".format(text, MIN_VMID, MAX_VMID))
    value = int(text)
    if not MIN_VMID <= value <= MAX_VMID:
        raise ValueError('{0!r} is outside the VMID range {1}-{2}'.format(text, MIN_VMID, MAX_VMID))
    return value


def parse_item(text):
    """Given ``'100'`` or ``'100-199'`` (surrounding space allowed), return (low, high).

    Raise ValueError whose message names the text and the fix.
    """
    text = text.strip()
    if not text:
        raise ValueError('empty item; give a VMID or a range such as 100-199')
    low_text, dash, high_text = text.partition('-')
    low_text, high_text = low_text.strip(), high_text.strip()
    if len(low_text.split()) > 1 or len(high_text.split()) > 1:
        raise ValueError('{0!r} holds more than one item; give one VMID or range per line or '
                         'argument'.format(text))
    if not dash:
        value = _vmid(text)
        return value, value
    if not low_text or not high_text or '-' in high_text:
        raise ValueError('{0!r} is not a range; write it as LOW-HIGH, e.g. 100-199'.format(text))
    try:
        low, high = _vmid(low_text), _vmid(high_text)
    except ValueError as error:
        raise ValueError('in range {0!r}: {1}'.format(text, error))
    if low > high:
        raise ValueError('{0!r} is an inverted range; write {1}-{2}'.format(text, high, low))
    return low, high


def parse_items(lines, source='line'):
    """Given lines (file lines or command-line arguments), return a VmidSet.

    Each line holds one VMID or range; text after ``#`` and blank lines are
    ignored. ``source`` names the items in errors: ``'line'`` gives
    ``line 7: '300-200' is an inverted range; write 200-300``, ``'argument'``
    gives ``argument 2: ...``. Raise :class:`InputError` listing every bad
    item (so nothing is sent when any input is bad).
    """
    ranges, errors = [], []
    for number, line in enumerate(lines, 1):
        if isinstance(line, bytes):
            try:
                line = line.decode('utf-8')
            except UnicodeDecodeError:
                errors.append('{0} {1}: not UTF-8 text'.format(source, number))
                continue
        text = line.split('#', 1)[0].strip()
        if not text:
            continue
        try:
            ranges.append(parse_item(text))
        except ValueError as error:
            errors.append('{0} {1}: {2}'.format(source, number, error))
    if errors:
        raise InputError(errors)
    return VmidSet(ranges)
