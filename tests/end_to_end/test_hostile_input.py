"""Hostile input and stalls: every row of the table (tests/support/hostile.py) run for real.

Each row builds its input with real files, processes, sockets and the
reference AccountDB, and asserts what the user or the node sees and that no
event was lost. docs/reliability.md prints the same table.
"""

import pathlib

import pytest

import tests.end_to_end.hostile  # noqa: F401 - registers the rows
from tests.support.hostile import CASES, doc_rows

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize('row', CASES, ids=[row.id for row in CASES])
def test_hostile_input(row, request):
    row.run(request.getfixturevalue)


def test_the_documented_table_is_the_tested_table():
    documented = doc_rows((ROOT / 'docs' / 'reliability.md').read_text())
    tested = {row.id: (row.area, row.given, row.outcome) for row in CASES}
    assert documented == tested
