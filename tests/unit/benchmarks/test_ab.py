"""Unit tests for benchmarks/ab/ab.py: parsing both benchmarks' reports (text and --json), the verdict, the table.

The text reports below are real output: of the revision before the move into subpackages (e2cc291, whose
scripts have no --json) and of the tree after it. benchmarks/ is not a package: its files are loaded by path.
"""

import argparse
import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _load(name, *path):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'benchmarks', *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ab = _load('bench_ab', 'ab', 'ab.py')

HOOK_LATENCY_BASE = """\
interpreter: /tmp/pve-hooks-bench-h6r2y02x/usr/bin/python3 (a copy of /usr/bin/python3 in a scratch prefix laid out like /usr, this tree's pve_hooks in its lib/python3/dist-packages)
hookscript: /tmp/pve-hooks-bench-h6r2y02x/snippets/accountdb-hook (executed: its #! flags -IS apply)
pve_hooks found in /tmp/pve-hooks-bench-h6r2y02x/usr/lib/python3/dist-packages/pve_hooks: without site processing; this tree's code
spool: /tmp/pve-hooks-bench-h6r2y02x/spool
sequential, 200 runs each, alternating:
  bare `python -I -c pass`     median   12.14 ms
  bare `python -I -S -c pass`  median    9.96 ms
  hookscript                   median   16.57 ms
  (this machine's `/usr/bin/python3 -I -c pass`, its own site-packages: median 13.34 ms)
  ratio vs -I: 1.36x (target <= 1.3x); vs -I -S (no site, the floor): 1.66x
64 started at once, 5 rounds each, alternating:
  bare -I     p99  876.05 ms  median  348.84 ms
  bare -I -S  p99  688.22 ms  median  251.12 ms
  hookscript  p99  905.36 ms  median  420.18 ms
  p99 ratio vs -I: 1.03x (target <= 1.5x); vs -I -S: 1.32x
split, fresh processes: importing pve_hooks.hook 1.60 ms, hook.main() 1.10 ms (config, event, durable write: fsync file, rename, fsync dir); os imported: no
"""

HOOK_LATENCY_HEAD = """\
interpreter: /tmp/pve-hooks-bench-n5tioy57/usr/bin/python3 (a copy of /usr/bin/python3 in a scratch prefix laid out like /usr, this tree's pve_hooks in its lib/python3/dist-packages)
hookscript: /tmp/pve-hooks-bench-n5tioy57/snippets/accountdb-hook (executed: its #! flags -IS apply)
pve_hooks found in /tmp/pve-hooks-bench-n5tioy57/usr/lib/python3/dist-packages/pve_hooks: without site processing; this tree's code
spool: /tmp/pve-hooks-bench-n5tioy57/spool
sequential, 10 runs each, alternating:
  bare `python -I -c pass`     median    8.32 ms
  bare `python -I -S -c pass`  median    6.69 ms
  hookscript                   median   10.52 ms
  (this machine's `/usr/bin/python3 -I -c pass`, its own site-packages: median 10.29 ms)
  ratio vs -I: 1.26x (target <= 1.3x); vs -I -S (no site, the floor): 1.57x
8 started at once, 1 rounds each, alternating:
  bare -I     p99   26.65 ms  median   23.21 ms
  bare -I -S  p99   22.62 ms  median   21.07 ms
  hookscript  p99   56.93 ms  median   46.12 ms
  p99 ratio vs -I: 2.14x (target <= 1.5x); vs -I -S: 2.52x
split, fresh processes: importing pve_hooks.hook.main 1.73 ms, hook.main() 1.09 ms (config, event, durable write: fsync file, rename, fsync dir); os imported: no
"""

OUTBOX_DRAIN_BASE = """\
outbox drain, reference AccountDB on loopback, 2 CPUs
  batched (batch_size 500): 100000 events in 8.7 s = 11,448 events/s (start-up 1.43 s, then 13,630 events/s)   target <= 30 s: met
  baseline, one request per event: 2000 events in 3.4 s (start-up 0.25 s, then 632 events/s); 100000 events would take 158 s
  CPU seconds during the batched drain: daemon 5.2, AccountDB 2.3; one-by-one sample: daemon 2.3, AccountDB 0.8
  steady rates, batched / one-by-one: 21.6x; whole-run rates (both start-ups counted, the sample's at its size): 19.5x
  ratio, one-by-one time / batched time for 100000 events: 18.1x   target >= 20x: MISSED
"""


def _without(text, fragment):
    """Return ``text`` without its line containing ``fragment`` (which must be there)."""
    lines = text.splitlines(True)
    kept = [line for line in lines if fragment not in line]
    assert len(kept) == len(lines) - 1
    return ''.join(kept)


# --- hook_latency's text report ---

def test_hook_latency_text_of_the_base_revision():
    figures = ab.parse_hook_latency_text(HOOK_LATENCY_BASE)
    assert figures['bare_median_ms'] == 12.14
    assert figures['floor_median_ms'] == 9.96
    assert figures['hook_median_ms'] == 16.57
    assert figures['ratio_vs_bare'] == pytest.approx(16.57 / 12.14)   # from the medians, not the rounded 1.36x
    assert figures['ratio_vs_floor'] == pytest.approx(16.57 / 9.96)
    assert figures['burst_hook_p99_ms'] == 905.36                    # the burst line, not the sequential one
    assert figures['burst_p99_ratio_vs_bare'] == 1.03
    assert figures['burst_p99_ratio_vs_floor'] == 1.32
    assert (figures['import_ms'], figures['main_ms']) == (1.60, 1.10)
    assert figures['this_tree'] is True and figures['os_imported'] is False


def test_hook_latency_text_after_the_move_names_hook_main():
    figures = ab.parse_hook_latency_text(HOOK_LATENCY_HEAD)
    assert (figures['import_ms'], figures['main_ms']) == (1.73, 1.09)
    assert figures['hook_median_ms'] == 10.52
    assert figures['burst_p99_ratio_vs_bare'] == 2.14


def test_hook_latency_text_says_when_the_package_is_not_the_trees():
    text = HOOK_LATENCY_BASE.replace("; this tree's code", "; NOT this tree's code (an older install?)")
    assert ab.parse_hook_latency_text(text)['this_tree'] is False
    text = HOOK_LATENCY_BASE.replace('os imported: no', 'os imported: YES (the hot path imports it)')
    assert ab.parse_hook_latency_text(text)['os_imported'] is True


@pytest.mark.parametrize('fragment, key', [
    ('hookscript                   median', 'hook_median_ms'),
    ('bare `python -I -c pass`', 'bare_median_ms'),
    ('split, fresh processes', 'import_ms'),
])
def test_hook_latency_text_without_a_figure_is_an_error(fragment, key):
    with pytest.raises(ValueError, match=key):
        ab.parse_hook_latency_text(_without(HOOK_LATENCY_BASE, fragment))


def test_hook_latency_text_without_the_origin_line_is_an_error():
    with pytest.raises(ValueError, match='where pve_hooks was found'):
        ab.parse_hook_latency_text(_without(HOOK_LATENCY_BASE, 'pve_hooks found in'))


# --- outbox_drain's text report ---

def test_outbox_drain_text():
    figures = ab.parse_outbox_drain_text(OUTBOX_DRAIN_BASE)
    assert (figures['events'], figures['sample'], figures['batch_size']) == (100000, 2000, 500)
    assert figures['events_per_s'] == 11448
    assert figures['drain_s'] == pytest.approx(100000 / 11448)       # 8.735 s, where the report says 8.7
    assert (figures['startup_s'], figures['steady_rate']) == (1.43, 13630)
    assert (figures['baseline_startup_s'], figures['baseline_steady_rate']) == (0.25, 632)
    assert figures['baseline_extrapolated_s'] == 158
    assert (figures['daemon_cpu_s'], figures['server_cpu_s']) == (5.2, 2.3)
    assert figures['steady_ratio'] == 21.6
    assert figures['ratio'] == 18.1


@pytest.mark.parametrize('fragment, key', [
    ('ratio, one-by-one time', 'ratio'),
    ('batched (batch_size', 'batch_size'),
    ('baseline, one request per event', 'sample'),
])
def test_outbox_drain_text_without_a_figure_is_an_error(fragment, key):
    with pytest.raises(ValueError, match=key):
        ab.parse_outbox_drain_text(_without(OUTBOX_DRAIN_BASE, fragment))


# --- --json: the benchmarks' own key_figures() feed the same table as their text reports ---

def _hook_latency_json():
    hook_latency = _load('bench_hook_latency', 'hook_latency.py')
    kinds = {'hook': [0.012, 0.010, 0.011], 'bare': [0.008, 0.009, 0.0085], 'floor': [0.007] * 3, 'system': []}
    median = {'hook': 0.011, 'bare': 0.0085, 'floor': 0.007}
    tail = {'hook': 0.5, 'bare': 0.4, 'floor': 0.25}
    args = argparse.Namespace(runs=3, burst=4, rounds=1, spool_dir=None, python=None)
    return hook_latency.key_figures(kinds, median, tail, 0.0015, 0.001, False, True, False, args)


def _outbox_drain_json():
    outbox_drain = _load('bench_outbox_drain', 'outbox_drain.py')
    args = argparse.Namespace(events=100000, sample=2000, batch_size=500)
    single = {'seconds': 3.4, 'startup': 0.25, 'steady_rate': 632.0, 'daemon_cpu': 2.3, 'server_cpu': 0.8}
    batched = {'seconds': 8.0, 'startup': 1.4, 'steady_rate': 13630.0, 'daemon_cpu': 5.2, 'server_cpu': 2.3}
    return outbox_drain.key_figures(args, single, batched)


@pytest.mark.parametrize('benchmark, make_json, text', [
    ('hook_latency', _hook_latency_json, HOOK_LATENCY_BASE),
    ('outbox_drain', _outbox_drain_json, OUTBOX_DRAIN_BASE),
])
def test_json_and_text_carry_every_compared_figure(benchmark, make_json, text):
    from_json, source = ab.parse_output(benchmark, json.dumps(make_json()) + '\n')
    assert source == 'json'
    from_text, source = ab.parse_output(benchmark, text)
    assert source == 'text'
    for key, _, _, _ in ab.FIGURES[benchmark]:
        assert isinstance(from_json[key], float), key
        assert isinstance(from_text[key], float), key


def test_json_figures_are_computed_as_the_text_parser_computes_them():
    hook = _hook_latency_json()
    assert hook['ratio_vs_bare'] == pytest.approx(0.011 / 0.0085)
    assert hook['hook_median_ms'] == pytest.approx(11.0)
    assert hook['hook_p95_ms'] == pytest.approx(12.0)
    drain = _outbox_drain_json()
    assert drain['drain_s'] == 8.0 and drain['events_per_s'] == pytest.approx(12500)
    assert drain['ratio'] == pytest.approx((0.25 + 100000 / 632.0) / 8.0)


def test_json_from_the_other_benchmark_is_refused():
    with pytest.raises(ValueError, match='outbox_drain'):
        ab.parse_output('hook_latency', json.dumps(_outbox_drain_json()))


# --- verdict ---

def test_verdict_inside_the_spread_of_a_is_noise_even_beyond_ten_percent():
    result = ab.verdict([10.0, 14.0, 12.0], [13.5, 13.5, 13.5], ab.LOWER)
    assert result['ratio'] == pytest.approx(13.5 / 12.0)
    assert result['verdict'] == 'within noise'
    assert (result['median_a'], result['median_b'], result['min_a'], result['max_a']) == (12.0, 13.5, 10.0, 14.0)
    assert ab.verdict([10.0, 10.0, 13.0], [13.0], ab.LOWER)['verdict'] == 'within noise'   # the spread's ends count
    assert ab.verdict([10.0, 10.0, 13.0], [13.1], ab.LOWER)['verdict'] == 'REGRESSION?'


def test_verdict_within_ten_percent_is_noise_even_outside_the_spread():
    assert ab.verdict([10.0, 10.0, 10.0], [11.0, 11.0], ab.LOWER)['verdict'] == 'within noise'
    assert ab.verdict([10.0, 10.0, 10.0], [9.0], ab.LOWER)['verdict'] == 'within noise'
    assert ab.verdict([10.0, 10.0, 10.0], [11.02], ab.LOWER)['verdict'] == 'REGRESSION?'


@pytest.mark.parametrize('b, better, expected', [
    ([12.0, 12.5, 11.9], ab.LOWER, 'REGRESSION?'),     # a time went up
    ([8.0, 8.1, 7.9], ab.LOWER, 'faster'),
    ([8.0, 8.1, 7.9], ab.HIGHER, 'REGRESSION?'),       # a rate went down
    ([12.0, 12.5, 11.9], ab.HIGHER, 'faster'),
])
def test_verdict_direction(b, better, expected):
    assert ab.verdict([10.0, 10.2, 9.9], b, better)['verdict'] == expected


def test_verdict_tolerance():
    assert ab.verdict([10.0, 10.0], [10.5], ab.LOWER, tolerance=0.0)['verdict'] == 'REGRESSION?'
    assert ab.verdict([10.0, 10.0], [12.0], ab.LOWER, tolerance=0.25)['verdict'] == 'within noise'


# --- schedule, summary, table, options ---

def test_schedule_alternates_a_and_b_within_each_round():
    plan = ab.schedule(3, ab.BENCHES)
    assert len(plan) == 12
    assert [side for _, _, side in plan] == ['A', 'B'] * 6
    assert plan[:4] == [(1, 'hook_latency', 'A'), (1, 'hook_latency', 'B'),
                        (1, 'outbox_drain', 'A'), (1, 'outbox_drain', 'B')]
    assert [number for number, _, _ in plan] == [1] * 4 + [2] * 4 + [3] * 4


def test_schedule_abba_puts_b_first_in_even_rounds():
    plan = ab.schedule(4, ('outbox_drain',), 'abba')
    assert [side for _, _, side in plan] == ['A', 'B', 'B', 'A', 'A', 'B', 'B', 'A']
    assert [number for number, _, _ in plan] == [1, 1, 2, 2, 3, 3, 4, 4]


def _drain_run(number, side, drain_s, load1=1.0):
    figures = {'drain_s': drain_s, 'events_per_s': 100000 / drain_s, 'ratio': 20.0, 'startup_s': 1.2,
               'baseline_steady_rate': 500.0}
    return {'round': number, 'bench': 'outbox_drain', 'side': side, 'load1': load1, 'figures': figures}


def test_summary_and_table():
    runs = [_drain_run(1, 'A', 9.0), _drain_run(1, 'B', 12.0), _drain_run(2, 'A', 10.0), _drain_run(2, 'B', 12.4),
            _drain_run(3, 'A', 9.5, load1=3.25), _drain_run(3, 'B', 12.2)]
    summary = ab.summarise('outbox_drain', runs)
    assert summary['drain_s']['median_a'] == 9.5 and summary['drain_s']['median_b'] == 12.2
    assert summary['drain_s']['verdict'] == 'REGRESSION?'
    assert summary['events_per_s']['verdict'] == 'REGRESSION?'
    assert summary['ratio']['verdict'] == 'within noise'
    rendered = ab.table('outbox_drain', runs, summary).splitlines()
    assert rendered[0].startswith('| run | load | drain s ↓ | events/s ↑ |')
    assert rendered[2].startswith('| 1 A | 1.0 | 9.00 | 11,111 |')
    assert rendered[6].startswith('| 3 A | 3.2 | 9.50 |')
    assert rendered[8].startswith('| median A | | 9.50 | 10,526 |')
    assert rendered[9].startswith('| median B | | 12.20 |')
    assert rendered[10].startswith('| A min–max | | 9.00 – 10.00 |')
    assert rendered[11].startswith('| B/A | | 1.284 |')
    assert rendered[12].startswith('| B better in | | 0 of 3 | 0 of 3 | 0 of 3 |')   # a tie is not better
    assert rendered[13].startswith('| verdict | | **REGRESSION?** | **REGRESSION?** | **within noise** |')


def test_summary_pairs_each_round_with_itself():
    runs = [_drain_run(1, 'A', 9.0), _drain_run(1, 'B', 8.0), _drain_run(2, 'B', 12.0), _drain_run(2, 'A', 11.0),
            _drain_run(3, 'A', 10.0)]                     # round 3 has no B (an interrupted run): not a pair
    summary = ab.summarise('outbox_drain', runs)
    assert (summary['drain_s']['b_better'], summary['drain_s']['pairs']) == (1, 2)
    assert (summary['events_per_s']['b_better'], summary['events_per_s']['pairs']) == (1, 2)


def test_summary_refuses_a_run_without_a_compared_figure():
    runs = [_drain_run(1, 'A', 9.0), _drain_run(1, 'B', 9.1)]
    del runs[1]['figures']['startup_s']
    with pytest.raises(KeyError):
        ab.summarise('outbox_drain', runs)   # a run without a compared figure is not silently skipped


def test_pass_through_options_go_to_their_own_benchmark():
    args = ab.parse_args(['--base', 'e2cc291', '--hook-rounds', '2', '--runs', '50', '--events', '5000'])
    assert ab.bench_options(args, 'hook_latency') == ['--runs', '50', '--rounds', '2']
    assert ab.bench_options(args, 'outbox_drain') == ['--events', '5000']
    assert args.rounds == 4 and args.head is None and args.bench == 'all' and args.order == 'ab'


def test_base_is_required():
    with pytest.raises(SystemExit):
        ab.parse_args(['--rounds', '3'])
