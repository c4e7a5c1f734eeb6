"""The table of hostile inputs and stalls (issue: no hang, no crash, no silent misroute).

One table, one row per case: each row names the input, the outcome a user
or the node sees (the one-line error or the documented recovery), and a
function that builds the input for real and asserts that outcome, including
that no event was lost. Rows live in tests/end_to_end/hostile/*.py, one
module per area, each registering its rows with :func:`case`;
tests/end_to_end/test_hostile_input.py runs them all, and the same table is
printed in docs/reliability.md ("Hostile input and stalls"), kept in step by
a test.

    @case('hook-chain-background-child', 'hookscript',
          'a chained hook leaves `sleep 300 &` behind, chain_timeout 2',
          'returns within hook.chain_deadline + 1 s; the event is in ready/')
    def _(fixtures):
        node = fixtures('make_node')('pve1')
        ...
"""

CASES = []


class Case:
    """One row: ``id`` (unique, kebab-case), ``area``, ``given`` (the input), ``outcome``, ``run(fixtures)``."""

    def __init__(self, id, area, given, outcome, run):  # noqa: A002 - the table's column name
        self.id = id
        self.area = area
        self.given = given
        self.outcome = outcome
        self.run = run

    def __repr__(self):
        return 'Case({0!r})'.format(self.id)


def case(id, area, given, outcome):  # noqa: A002
    """Register the decorated function ``run(fixtures)`` as a row; ``fixtures(name)`` returns a pytest fixture."""
    def register(run):
        if any(existing.id == id for existing in CASES):
            raise ValueError('duplicate hostile-input case id {0!r}'.format(id))
        CASES.append(Case(id, area, given, outcome, run))
        return run
    return register


def doc_rows(text):
    """Return {id: (area, given, outcome)} from the markdown table in ``text`` under 'Hostile input and stalls'."""
    section = text.split('## Hostile input and stalls', 1)[1].split('\n## ', 1)[0]   # its ### tables too
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip('|').split('|')]
        if len(cells) == 4 and cells[0].startswith('`') and cells[0].endswith('`'):
            rows[cells[0].strip('`')] = tuple(cells[1:])
    return rows
