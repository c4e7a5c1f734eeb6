"""The ``box`` fixture of the outbox's unit tests: an Outbox in tmp_path, with ``box.test_clock``."""

import pytest

from tests.support.outbox import make_outbox


@pytest.fixture
def box(tmp_path):
    return make_outbox(str(tmp_path / 'spool'))
