"""A health check's result and how results are combined and printed (Nagios plugin conventions)."""

import json

OK, WARNING, CRITICAL, UNKNOWN = 'OK', 'WARNING', 'CRITICAL', 'UNKNOWN'
STATUSES = (OK, WARNING, CRITICAL, UNKNOWN)
EXIT_CODES = {OK: 0, WARNING: 1, CRITICAL: 2, UNKNOWN: 3}
# Worst first when combining results (monitoring-plugins' max_state_alt order).
SEVERITY = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}


class CheckResult:
    """One check's outcome.

    ``name``; ``status`` one of OK, WARNING, CRITICAL, UNKNOWN; ``reason`` one
    line; ``values`` a JSON-able dict of measurements; ``perfdata`` a list of
    Nagios perfdata items (``label=value[uom];warn;crit;min;max``).
    """

    __slots__ = ('name', 'status', 'reason', 'values', 'perfdata')

    def __init__(self, name, status, reason, values=None, perfdata=()):
        if status not in STATUSES:
            raise ValueError('status must be one of {0}, got {1!r}'.format(', '.join(STATUSES), status))
        self.name = name
        self.status = status
        self.reason = ' '.join(str(reason).split())
        self.values = dict(values or {})
        self.perfdata = list(perfdata)

    def to_dict(self):
        """Return {name, status, reason, values} (what the heartbeat and --json carry)."""
        return {'name': self.name, 'status': self.status, 'reason': self.reason, 'values': self.values}

    def __eq__(self, other):
        return isinstance(other, CheckResult) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return 'CheckResult({0!r}, {1}, {2!r})'.format(self.name, self.status, self.reason)


def perf(label, value, uom='', warn=None, crit=None, minimum=None, maximum=None):
    """Return one Nagios perfdata item, e.g. ``rootfs=25.0%;85;95;0;100``."""
    def fmt(number):
        if number is None:
            return ''
        return '{0:g}'.format(round(number, 6)) if isinstance(number, float) else str(number)
    text = '{0}={1}{2};{3};{4};{5};{6}'.format(label, fmt(value), uom, fmt(warn), fmt(crit), fmt(minimum),
                                                 fmt(maximum))
    return text.rstrip(';')


def level(value, warning, critical):
    """Return OK, WARNING or CRITICAL for ``value`` against its two thresholds."""
    if value >= critical:
        return CRITICAL
    if value >= warning:
        return WARNING
    return OK


def overall(results):
    """Return the worst status of ``results`` (CRITICAL > WARNING > UNKNOWN > OK); UNKNOWN when empty."""
    if not results:
        return UNKNOWN
    return max((result.status for result in results), key=lambda status: SEVERITY[status])


def exit_code(results):
    """Return the Nagios exit code of ``overall(results)``: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."""
    return EXIT_CODES[overall(results)]


def nagios_line(results):
    """Return the plugin output: ``PVE-HOOKS <STATUS> - <reasons> | <perfdata>`` on one line.

    The reasons are those of the checks that are not OK (or 'all N checks OK').
    """
    status = overall(results)
    bad = [result for result in results if result.status != OK]
    if bad:
        text = '; '.join('{0} {1}: {2}'.format(result.name, result.status, result.reason) for result in bad)
    elif results:
        text = 'all {0} checks OK'.format(len(results))
    else:
        text = 'no checks run'
    perfdata = ' '.join(item for result in results for item in result.perfdata)
    line = 'PVE-HOOKS {0} - {1}'.format(status, text.replace('|', '/'))
    return line + (' | ' + perfdata if perfdata else '')


def to_json(results):
    """Return a JSON document: {status, exit_code, checks: [{name, status, reason, values}]}."""
    return json.dumps({'status': overall(results), 'exit_code': exit_code(results),
                       'checks': [result.to_dict() for result in results]}, sort_keys=True)


def table(results):
    """Return a human-readable table (CHECK, STATUS, REASON) plus an overall line."""
    width = max([len('CHECK')] + [len(result.name) for result in results])
    lines = ['{0:<{1}}  {2:<8}  {3}'.format('CHECK', width, 'STATUS', 'REASON')]
    for result in results:
        lines.append('{0:<{1}}  {2:<8}  {3}'.format(result.name, width, result.status, result.reason))
    lines.append('overall: {0}'.format(overall(results)))
    return '\n'.join(lines)
