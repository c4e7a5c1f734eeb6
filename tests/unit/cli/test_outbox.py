"""Unit tests for pve_hooks.cli.outbox helpers (the commands are tested in tests/integration/test_cli_outbox.py)."""

import errno

import pytest

from pve_hooks.cli import UserError
from pve_hooks.cli import outbox as cli_outbox


@pytest.mark.parametrize('seconds, text', [(None, '-'), (0, '0s'), (59.9, '59s'), (61, '1m'), (7200, '2h'),
                                           (3 * 86400 + 5, '3d')])
def test_age(seconds, text):
    assert cli_outbox._age(seconds) == text


def test_guard_turns_oserror_into_one_clear_user_error():
    def fails():
        raise PermissionError(errno.EACCES, 'Permission denied', '/var/spool/pve-hooks/outbox/lock')

    with pytest.raises(UserError) as info:
        cli_outbox._guard(fails)
    assert str(info.value.message) == ('cannot use the outbox at /var/spool/pve-hooks/outbox/lock: Permission denied; '
                                       'run as root or check paths.spool_dir')
