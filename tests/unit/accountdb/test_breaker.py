"""The circuit breaker: transitions, persistence, and two instances sharing one file."""

import json
import os

from pve_hooks.accountdb import breaker as breaker_mod
from pve_hooks.accountdb.breaker import Breaker


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def make(tmp_path, clock, changes=None, threshold=3, timeout=30.0):
    on_change = None if changes is None else (lambda old, new: changes.append((old, new)))
    return Breaker(str(tmp_path / 'state' / 'breaker.json'), threshold, timeout, clock=clock,
                   on_change=on_change)


def test_starts_closed_and_allows(tmp_path):
    breaker = make(tmp_path, Clock())
    assert breaker.state == 'closed' and breaker.allow()
    assert not os.path.exists(breaker.path)  # nothing written until something happens


def test_reading_takes_no_lock_and_creates_nothing(tmp_path):
    clock = Clock()
    reader = make(tmp_path, clock, threshold=1)
    assert reader.state == 'closed' and reader.snapshot()['failures'] == 0 and reader.retry_in() == 0.0
    assert not os.path.exists(str(tmp_path / 'state'))  # a read-only command leaves no state directory
    make(tmp_path, clock, threshold=1).record_failure()  # a change locks: breaker.json.lock exists now
    os.unlink(reader.path + '.lock')
    assert reader.state == 'open' and reader.snapshot()['failures'] == 1
    assert sorted(os.listdir(str(tmp_path / 'state'))) == ['breaker.json']


def test_opens_after_threshold_consecutive_transient_failures(tmp_path):
    changes = []
    breaker = make(tmp_path, Clock(), changes)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == 'closed'
    breaker.record_failure()
    assert breaker.state == 'open' and not breaker.allow()
    assert changes == [('closed', 'open')]


def test_a_success_resets_the_count(tmp_path):
    breaker = make(tmp_path, Clock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == 'closed'


def test_only_transient_failures_count(tmp_path):
    breaker = make(tmp_path, Clock(), threshold=1)
    for kind in ('configuration', 'auth', 'rejected', 'conflict'):
        breaker.record_failure(kind)
    assert breaker.state == 'closed'
    breaker.record_failure('transient')
    assert breaker.state == 'open'


def test_half_opens_after_the_reset_timeout_then_closes_on_success(tmp_path):
    clock, changes = Clock(), []
    breaker = make(tmp_path, clock, changes, threshold=1, timeout=30.0)
    breaker.record_failure()
    clock.now += 29.9
    assert breaker.state == 'open'
    assert breaker.retry_in() == 30.0 - 29.9 or abs(breaker.retry_in() - 0.1) < 1e-6
    clock.now += 0.1
    assert breaker.allow() and breaker.state == 'half_open'
    breaker.record_success()
    assert breaker.state == 'closed'
    assert changes == [('closed', 'open'), ('open', 'half_open'), ('half_open', 'closed')]


def test_a_failed_probe_reopens_for_a_full_timeout(tmp_path):
    clock = Clock()
    breaker = make(tmp_path, clock, threshold=2, timeout=10.0)
    breaker.record_failure()
    breaker.record_failure()
    clock.now += 10
    assert breaker.state == 'half_open'
    breaker.record_failure()  # one failure is enough in half-open
    assert breaker.state == 'open'
    clock.now += 9
    assert breaker.state == 'open'
    clock.now += 1
    assert breaker.state == 'half_open'


def test_state_is_persisted_and_shared_by_two_instances(tmp_path):
    clock = Clock()
    daemon_changes, cli_changes = [], []
    daemon = make(tmp_path, clock, daemon_changes, threshold=2)
    cli = make(tmp_path, clock, cli_changes, threshold=2)
    daemon.record_failure()
    cli.record_failure()  # the count is shared: this is the second consecutive failure
    assert daemon.state == 'open' and cli.state == 'open'
    assert cli_changes == [('closed', 'open')] and daemon_changes == []  # logged once, by whoever changed it
    with open(daemon.path) as stream:
        saved = json.load(stream)
    assert saved['state'] == 'open' and saved['failures'] == 2 and saved['opened_at'] == clock.now
    assert oct(os.stat(daemon.path).st_mode & 0o777) == '0o600'
    cli.record_success()
    assert daemon.state == 'closed'


def test_a_new_instance_reads_the_saved_state(tmp_path):
    clock = Clock()
    make(tmp_path, clock, threshold=1).record_failure()
    assert make(tmp_path, clock, threshold=1).state == 'open'


def test_corrupt_file_counts_as_closed_with_one_warning(tmp_path, caplog):
    path = tmp_path / 'state' / 'breaker.json'
    path.parent.mkdir()
    path.write_text('{"state": "open", "failures": "x"')
    breaker = make(tmp_path, Clock(), threshold=1)
    assert breaker.state == 'closed'
    assert breaker.state == 'closed'
    warnings = [r for r in caplog.records if 'corrupt circuit breaker state' in r.getMessage()]
    assert len(warnings) == 1
    breaker.record_failure()
    assert json.loads(path.read_text())['state'] == 'open'


def test_wrong_shapes_are_corrupt(tmp_path):
    path = tmp_path / 'state' / 'breaker.json'
    path.parent.mkdir()
    for text in ('[]', '{"state": "sideways", "failures": 0}', '{"state": "open", "failures": 1}', '\xff'):
        path.write_text(text)
        assert make(tmp_path, Clock()).state == 'closed'


def test_unwritable_state_dir_does_not_crash(tmp_path):
    blocker = tmp_path / 'state'
    blocker.write_text('a file where the directory should be')
    breaker = Breaker(str(blocker / 'breaker.json'), 1, 30.0, clock=Clock())
    breaker.record_failure()  # logged once, kept in memory for this process
    assert breaker.state == 'open'


def test_from_settings_uses_state_dir_and_options(tmp_path):
    from pve_hooks.config import loader as config

    settings = config.load(env={}, require_file=False, overrides=[
        'paths.state_dir=' + str(tmp_path), 'breaker.failure_threshold=4', 'breaker.reset_timeout=12'])
    breaker = breaker_mod.from_settings(settings, clock=Clock())
    assert breaker.path == str(tmp_path / 'breaker.json')
    assert breaker.threshold == 4 and breaker.reset_timeout == 12.0


def test_reading_the_state_changes_nothing_so_the_daemon_logs_the_half_open_once(tmp_path):
    clock = Clock()
    daemon_changes, status_changes = [], []
    daemon = make(tmp_path, clock, daemon_changes, threshold=1, timeout=5.0)
    status_reader = make(tmp_path, clock, status_changes, threshold=1, timeout=5.0)
    daemon.record_failure()
    before = open(daemon.path).read()
    clock.now += 5
    assert status_reader.state == 'half_open' and status_reader.snapshot()['failures'] == 1
    assert open(daemon.path).read() == before and status_changes == []
    assert daemon.allow()
    assert daemon_changes == [('closed', 'open'), ('open', 'half_open')]
    assert daemon.allow() and daemon_changes[-1] == ('open', 'half_open') and len(daemon_changes) == 2


def test_times_written_before_the_clock_stepped_back_are_clamped(tmp_path):
    clock = Clock()
    breaker = make(tmp_path, clock, threshold=1, timeout=30.0)
    breaker.record_failure('transient')
    assert breaker.state == 'open'
    clock.now -= 86400                      # the clock steps back a day
    assert 0 < breaker.retry_in() <= 30.0   # not a day and 30 s
    clock.now += 31
    assert breaker.allow()                  # half-open after reset_timeout, as without the step
