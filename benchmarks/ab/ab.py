#!/usr/bin/env python3
"""A/B: run benchmarks against two revisions of this repository, alternating, and compare the figures.

Why: a restructuring (the move into subpackages, 2eca6ed; the commit before it
is e2cc291) has to show "no regression beyond noise". On a shared VM the
absolute times move by tens of percent between runs minutes apart, so the two
sides run alternately in one session (round 1: A then B, round 2: A then B,
...): whatever load there is falls on both alike.

How: each revision is checked out with ``git worktree add --detach`` in a
scratch directory under ``.scratch/ab/`` (removed at the end, whatever
happens), its pve_hooks and tests compiled once (so the first round does not
pay for the .pyc files), and THAT revision's own copy of the benchmark script
runs with ``PYTHONPATH=<its tree>`` and its tree as the working directory
(``python -m pve_hooks``, which the drain benchmark starts, puts the working
directory first on sys.path), with the same interpreter. Each side measures its
own code with its own harness: the scripts import tests/support and pve_hooks
modules whose paths changed in the move, so one copy cannot serve both sides.
Before the first round each side is checked to import pve_hooks from its tree.

Figures: a script that has ``--json`` (added after the move) is asked for
JSON; an older one's text report is parsed (parse_hook_latency_text,
parse_outbox_drain_text). For each benchmark a table shows each round's A and
B figures, the 1-minute load average when the run started, the medians, B/A
and a verdict (see verdict()).

    .venv/bin/python benchmarks/ab/ab.py --base e2cc291 [--head REV] [--rounds 4] [--bench all] [--order ab]
                                         [--json]

Without --head, B is the working tree as it is (uncommitted changes
included). Sizes are the benchmarks' own defaults unless passed through
(--runs, --burst, --hook-rounds, --spool-dir for hook_latency; --events,
--sample, --batch-size for outbox_drain). At the defaults one round of both
takes about 1.5 min on a quiet 2-core VM (hook_latency ~25 s, outbox_drain
~20 s, per side), so --rounds 4 takes about 6 min, twice that under load.

This file lives in a folder of its own so that ``make bench``
(benchmarks/*.py, no arguments) does not run it: it needs --base.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHES = ('hook_latency', 'outbox_drain')
SIDES = ('A', 'B')
LOWER, HIGHER = 'lower', 'higher'   # which way a figure is better
TOLERANCE = 0.10

# The figures compared, per benchmark: (key, label, format, which way is better). Only figures both the
# JSON and the text report have (the base revision's scripts print text only).
FIGURES = {
    'hook_latency': (
        ('ratio_vs_bare', 'hook / bare -I', '{0:.3f}x', LOWER),
        ('ratio_vs_floor', 'hook / bare -I -S', '{0:.3f}x', LOWER),
        ('hook_median_ms', 'hook median ms', '{0:.2f}', LOWER),
        ('bare_median_ms', 'bare -I median ms', '{0:.2f}', LOWER),
        ('import_ms', 'import ms', '{0:.2f}', LOWER),
        ('main_ms', 'hook.main() ms', '{0:.2f}', LOWER),
    ),
    'outbox_drain': (
        ('drain_s', 'drain s', '{0:.2f}', LOWER),
        ('events_per_s', 'events/s', '{0:,.0f}', HIGHER),
        ('ratio', 'x one-by-one', '{0:.1f}x', HIGHER),
        ('startup_s', 'start-up s', '{0:.2f}', LOWER),
        ('baseline_steady_rate', 'one-by-one/s', '{0:,.0f}', HIGHER),
    ),
}

# Options passed through to one benchmark: (this script's option, benchmark, the benchmark's option, type, help).
PASS_THROUGH = (
    ('--runs', 'hook_latency', '--runs', int, 'sequential runs of each kind (its default 200)'),
    ('--burst', 'hook_latency', '--burst', int, 'processes started at once (its default 64)'),
    ('--hook-rounds', 'hook_latency', '--rounds', int, 'bursts of each kind (its default 5)'),
    ('--spool-dir', 'hook_latency', '--spool-dir', str, 'spool on this file system, e.g. /dev/shm'),
    ('--events', 'outbox_drain', '--events', int, 'events drained in batches (its default 100000)'),
    ('--sample', 'outbox_drain', '--sample', int, 'events drained one by one (its default 2000)'),
    ('--batch-size', 'outbox_drain', '--batch-size', int, 'delivery.batch_size (its default 500)'),
)

NUMBER = r'([0-9][0-9,]*(?:\.[0-9]+)?)'

# Text reports: (key, pattern with {n} where the number stands), searched line by line.
HOOK_LATENCY_TEXT = (
    ('bare_median_ms', r'^\s*bare `python -I -c pass`\s+median\s+{n} ms'),
    ('floor_median_ms', r'^\s*bare `python -I -S -c pass`\s+median\s+{n} ms'),
    ('hook_median_ms', r'^\s*hookscript\s+median\s+{n} ms'),
    ('burst_hook_p99_ms', r'^\s*hookscript\s+p99\s+{n} ms'),
    ('burst_p99_ratio_vs_bare', r'^\s*p99 ratio vs -I: {n}x'),
    ('burst_p99_ratio_vs_floor', r'^\s*p99 ratio vs -I: .*; vs -I -S: {n}x'),
    ('import_ms', r'importing pve_hooks\S* {n} ms, hook\.main\(\)'),
    ('main_ms', r'importing pve_hooks\S* .*, hook\.main\(\) {n} ms'),
)
OUTBOX_DRAIN_TEXT = (
    ('batch_size', r'^\s*batched \(batch_size {n}\)'),
    ('events', r'^\s*batched \(batch_size \d+\): {n} events in'),
    ('events_per_s', r'^\s*batched \(batch_size \d+\): .* s = {n} events/s'),
    ('startup_s', r'^\s*batched \(batch_size \d+\): .*\(start-up {n} s'),
    ('steady_rate', r'^\s*batched \(batch_size \d+\): .*\(start-up \S+ s, then {n} events/s\)'),
    ('sample', r'^\s*baseline, one request per event: {n} events in'),
    ('baseline_startup_s', r'^\s*baseline, one request per event: .*\(start-up {n} s'),
    ('baseline_steady_rate', r'^\s*baseline, one request per event: .*\(start-up \S+ s, then {n} events/s\)'),
    ('baseline_extrapolated_s', r'^\s*baseline, one request per event: .* events would take {n} s'),
    ('daemon_cpu_s', r'^\s*CPU seconds during the batched drain: daemon {n},'),
    ('server_cpu_s', r'^\s*CPU seconds during the batched drain: daemon \S+, AccountDB {n};'),
    ('steady_ratio', r'^\s*steady rates, batched / one-by-one: {n}x'),
    ('ratio', r'^\s*ratio, one-by-one time / batched time for \d+ events: {n}x'),
)


def _numbers(text, patterns, benchmark):
    """Return {key: number} for every (key, pattern) in ``patterns``; ValueError naming the first one missing."""
    found = {}
    for key, pattern in patterns:
        match = re.search(pattern.format(n=NUMBER), text, re.MULTILINE)
        if not match:
            raise ValueError('{0}: no {1} in the report (looked for {2!r})'.format(benchmark, key, pattern))
        found[key] = float(match.group(1).replace(',', ''))
    return found


def parse_hook_latency_text(text):
    """Return the key figures of hook_latency.py's text report (the one it prints without --json).

    The ratios are recomputed from the medians, which the report prints to
    0.01 ms (its ratios are rounded to 0.01x), so they match --json's closely.
    """
    figures = _numbers(text, HOOK_LATENCY_TEXT, 'hook_latency')
    figures['ratio_vs_bare'] = figures['hook_median_ms'] / figures['bare_median_ms']
    figures['ratio_vs_floor'] = figures['hook_median_ms'] / figures['floor_median_ms']
    origin = re.search(r"^pve_hooks found in .*; (NOT )?this tree's code", text, re.MULTILINE)
    os_imported = re.search(r'os imported: (\S+)', text)
    if not origin or not os_imported:
        raise ValueError('hook_latency: no line saying where pve_hooks was found, or whether os was imported')
    figures['this_tree'] = origin.group(1) is None
    figures['os_imported'] = os_imported.group(1) != 'no'
    return figures


def parse_outbox_drain_text(text):
    """Return the key figures of outbox_drain.py's text report (the one it prints without --json).

    The drain time is recomputed as events / (events/s): the report prints
    the time to 0.1 s but the rate to 1 event/s.
    """
    figures = _numbers(text, OUTBOX_DRAIN_TEXT, 'outbox_drain')
    for key in ('events', 'sample', 'batch_size'):
        figures[key] = int(figures[key])
    figures['drain_s'] = figures['events'] / figures['events_per_s']
    return figures


TEXT_PARSERS = {'hook_latency': parse_hook_latency_text, 'outbox_drain': parse_outbox_drain_text}


def parse_output(benchmark, stdout):
    """Return (figures, 'json' or 'text') from a benchmark's standard output, JSON or text report alike."""
    text = stdout.strip()
    if text.startswith('{'):
        figures = json.loads(text)
        if figures.get('benchmark') != benchmark:
            raise ValueError('{0}: JSON output is from {1!r}'.format(benchmark, figures.get('benchmark')))
        return figures, 'json'
    return TEXT_PARSERS[benchmark](stdout), 'text'


def verdict(a_values, b_values, better, tolerance=TOLERANCE):
    """Compare B's figures with A's; return a dict: medians, B/A, A's spread, and the verdict.

    "within noise" when B's median lies inside the spread (min..max) of A's
    own runs, or B/A is within ±``tolerance``; otherwise "REGRESSION?" when
    B is worse in the figure's direction (``better``: LOWER or HIGHER),
    "faster" when it is better.
    """
    median_a, median_b = statistics.median(a_values), statistics.median(b_values)
    ratio = median_b / median_a
    inside_spread = min(a_values) <= median_b <= max(a_values)
    near = median_a * (1 - tolerance) <= median_b <= median_a * (1 + tolerance)   # abs(11 / 10 - 1) > 0.1 in floats
    if inside_spread or near:
        word = 'within noise'
    elif (ratio > 1) == (better == LOWER):
        word = 'REGRESSION?'
    else:
        word = 'faster'
    return {'median_a': median_a, 'median_b': median_b, 'ratio': ratio, 'min_a': min(a_values),
            'max_a': max(a_values), 'better': better, 'verdict': word}


ORDERS = ('ab', 'abba')


def schedule(rounds, benches, order='ab'):
    """Return the runs in order: (round, benchmark, side), A and B for each benchmark in each round.

    ``order`` 'ab': A first in every round (A, B, A, B, ...); 'abba': B first in
    the even rounds (A, B, B, A, ...), so that a drift during the session or the
    run just before (its clean-up, the page cache) does not always favour one side.
    """
    def sides(number):
        return SIDES if order == 'ab' or number % 2 else SIDES[::-1]
    return [(number, bench, side) for number in range(1, rounds + 1) for bench in benches for side in sides(number)]


def summarise(benchmark, runs, tolerance=TOLERANCE):
    """Return {figure key: verdict()} for ``benchmark`` from ``runs`` (dicts with round, bench, side, figures).

    Each verdict also counts the rounds in which B did better than A of the
    same round (``b_better`` of ``pairs``): about half of them when the two
    sides are the same, whatever the medians say.
    """
    mine = [run for run in runs if run['bench'] == benchmark]
    summary = {}
    for key, _, _, better in FIGURES[benchmark]:
        values = {side: [run['figures'][key] for run in mine if run['side'] == side] for side in SIDES}
        if values['A'] and values['B']:
            summary[key] = verdict(values['A'], values['B'], better, tolerance)
            by_round = {side: {run['round']: run['figures'][key] for run in mine if run['side'] == side}
                        for side in SIDES}
            pairs = [(by_round['A'][number], by_round['B'][number]) for number in by_round['A']
                     if number in by_round['B']]
            summary[key]['pairs'] = len(pairs)
            summary[key]['b_better'] = sum(1 for a, b in pairs if (b < a if better == LOWER else b > a))
    return summary


def table(benchmark, runs, summary):
    """Return a Markdown table: a row per run (round, side, load, figures), then medians, A's spread, B/A, verdict."""
    figures = [figure for figure in FIGURES[benchmark] if figure[0] in summary]
    arrows = {LOWER: '↓', HIGHER: '↑'}
    lines = ['| run | load | ' + ' | '.join(label + ' ' + arrows[better] for _, label, _, better in figures) + ' |',
             '|---|---|' + '---|' * len(figures)]
    for run in runs:
        if run['bench'] == benchmark:
            lines.append('| {0} {1} | {2:.1f} | {3} |'.format(run['round'], run['side'], run['load1'], ' | '.join(
                form.format(run['figures'][key]) for key, _, form, _ in figures)))

    def row(name, cell):
        lines.append('| {0} | | {1} |'.format(name, ' | '.join(cell(key, form) for key, _, form, _ in figures)))
    row('median A', lambda key, form: form.format(summary[key]['median_a']))
    row('median B', lambda key, form: form.format(summary[key]['median_b']))
    row('A min–max', lambda key, form: '{0} – {1}'.format(form.format(summary[key]['min_a']),
                                                          form.format(summary[key]['max_a'])))
    row('B/A', lambda key, form: '{0:.3f}'.format(summary[key]['ratio']))
    row('B better in', lambda key, form: '{0} of {1}'.format(summary[key]['b_better'], summary[key]['pairs']))
    row('verdict', lambda key, form: '**{0}**'.format(summary[key]['verdict']))
    lines.append('\n↓ lower is better, ↑ higher is better; load: 1-minute load average when the run started; '
                 '"B better in": rounds in which B beat A of the same round.')
    return '\n'.join(lines)


# --- running: everything below touches git, the file system and processes ---

def git(*args):
    return subprocess.run(['git', '-C', REPO] + list(args), check=True, capture_output=True, text=True).stdout.strip()


def load_average():
    return '{0:.2f} {1:.2f} {2:.2f}'.format(*os.getloadavg())


def child_env(tree):
    env = dict(os.environ)
    env['PYTHONPATH'] = tree   # replaces the caller's: the other side's tree must not leak in
    return env


def check_tree(python, tree):
    """Compile the tree's pve_hooks and tests once; exit unless pve_hooks and tests import from ``tree``."""
    subprocess.run([python, '-m', 'compileall', '-q', 'pve_hooks', 'tests'], cwd=tree, env=child_env(tree),
                   check=True, stdout=subprocess.DEVNULL)
    code = 'import pve_hooks, tests.support; print(pve_hooks.__file__); print(tests.support.__file__)'
    out = subprocess.run([python, '-c', code], cwd=tree, env=child_env(tree), check=True, capture_output=True,
                         text=True).stdout.split()
    outside = [path for path in out if not os.path.realpath(path).startswith(os.path.realpath(tree) + os.sep)]
    if outside:
        raise SystemExit('{0} with PYTHONPATH={1} imports {2}, outside that tree'.format(python, tree, outside))


def supports_json(python, tree, benchmark):
    out = subprocess.run([python, os.path.join('benchmarks', benchmark + '.py'), '--help'], cwd=tree,
                         env=child_env(tree), check=True, capture_output=True, text=True).stdout
    return '--json' in out


def stop_group(process):
    """Interrupt a benchmark's process group (its finally blocks stop daemons, remove temp dirs); kill if stuck."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_benchmark(argv, tree, timeout):
    """Run ``argv`` in ``tree`` in a session of its own; return its stdout; RuntimeError if it fails."""
    process = subprocess.Popen(argv, cwd=tree, env=child_env(tree), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except BaseException:
        stop_group(process)
        raise
    if process.returncode != 0:
        raise RuntimeError('{0} in {1} exited with {2}:\n{3}{4}'.format(' '.join(argv), tree, process.returncode,
                                                                       out, err))
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True, help='revision A, e.g. e2cc291 (the commit before the move)')
    parser.add_argument('--head', default=None, help='revision B (default: the working tree as it is)')
    parser.add_argument('--rounds', type=int, default=4, help='A/B pairs per benchmark (default 4)')
    parser.add_argument('--bench', choices=BENCHES + ('all',), default='all')
    parser.add_argument('--order', choices=ORDERS, default='ab',
                        help='ab: A first in every round; abba: B first in even rounds (default ab)')
    parser.add_argument('--python', default=sys.executable, help='interpreter for both sides (default: this one)')
    parser.add_argument('--tolerance', type=float, default=TOLERANCE,
                        help='B/A within 1 ± this is "within noise" (default 0.10)')
    parser.add_argument('--timeout', type=float, default=1800, help='seconds one benchmark run may take')
    parser.add_argument('--json', action='store_true', help='print the whole result as one JSON object')
    for option, benchmark, _, kind, text in PASS_THROUGH:
        parser.add_argument(option, type=kind, default=None, help='{0}: {1}'.format(benchmark, text))
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error('--rounds must be at least 1')
    return args


def bench_options(args, benchmark):
    """Return the pass-through options given for ``benchmark``, as its own command line options."""
    options = []
    for option, owner, theirs, _, _ in PASS_THROUGH:
        value = getattr(args, option[2:].replace('-', '_'))
        if owner == benchmark and value is not None:
            options += [theirs, str(value)]
    return options


def measure(args, sides, benches):
    """Run the schedule; return the list of runs (round, bench, side, load1, seconds, source, figures)."""
    runs = []
    plan = schedule(args.rounds, benches, args.order)
    for index, (number, benchmark, side) in enumerate(plan, 1):
        tree = sides[side]['tree']
        argv = [args.python, os.path.join('benchmarks', benchmark + '.py')] + bench_options(args, benchmark)
        if sides[side]['json'][benchmark]:
            argv.append('--json')
        load1 = os.getloadavg()[0]
        started = time.monotonic()
        figures, source = parse_output(benchmark, run_benchmark(argv, tree, args.timeout))
        if figures.get('this_tree') is False:
            raise SystemExit('{0} side {1}: the hookscript did not run that tree\'s pve_hooks'.format(benchmark, side))
        run = {'round': number, 'bench': benchmark, 'side': side, 'load1': load1,
               'seconds': time.monotonic() - started, 'source': source, 'figures': figures}
        runs.append(run)
        first = FIGURES[benchmark][0]
        print('[{0}/{1}] round {2} {3} {4}: {5} {6}, load {7:.1f}, {8:.0f} s'.format(
            index, len(plan), number, benchmark, side, first[1], first[2].format(figures[first[0]]), load1,
            run['seconds']), file=sys.stderr, flush=True)
    return runs


def main(argv=None):
    args = parse_args(argv)
    benches = BENCHES if args.bench == 'all' else (args.bench,)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so the finally below removes the worktrees
    scratch_root = os.path.join(REPO, '.scratch', 'ab')
    os.makedirs(scratch_root, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix='run-', dir=scratch_root)
    worktrees = []
    result = {'started': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
              'load_start': load_average(), 'rounds': args.rounds, 'order': args.order,
              'python': args.python, 'cpus': os.cpu_count(), 'tolerance': args.tolerance,
              'options': {benchmark: bench_options(args, benchmark) for benchmark in benches}}
    sides = {}
    try:
        for side, rev in (('A', args.base), ('B', args.head)):
            if rev is None:
                sides[side] = {'rev': 'working tree', 'commit': git('rev-parse', 'HEAD'), 'tree': REPO,
                               'dirty': bool(git('status', '--porcelain', '--untracked-files=no'))}
            else:
                commit = git('rev-parse', '--verify', rev + '^{commit}')
                tree = os.path.join(scratch, side)
                git('worktree', 'add', '--detach', tree, commit)
                worktrees.append(tree)
                sides[side] = {'rev': rev, 'commit': commit, 'tree': tree, 'dirty': False}
            check_tree(args.python, sides[side]['tree'])
            sides[side]['json'] = {benchmark: supports_json(args.python, sides[side]['tree'], benchmark)
                                   for benchmark in benches}
            print('{0}: {1} ({2}{3}) in {4}'.format(side, sides[side]['rev'], sides[side]['commit'],
                                                   ' + uncommitted changes' if sides[side]['dirty'] else '',
                                                   sides[side]['tree']), file=sys.stderr)
        runs = measure(args, sides, benches)
    finally:
        for tree in worktrees:
            subprocess.run(['git', '-C', REPO, 'worktree', 'remove', '--force', tree], check=False)
        subprocess.run(['git', '-C', REPO, 'worktree', 'prune'], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    result.update({'finished': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                   'load_end': load_average(),
                   'base': {key: sides['A'][key] for key in ('rev', 'commit', 'dirty')},
                   'head': {key: sides['B'][key] for key in ('rev', 'commit', 'dirty')},
                   'runs': runs,
                   'summary': {benchmark: summarise(benchmark, runs, args.tolerance) for benchmark in benches}})
    if args.json:
        print(json.dumps(result, indent=1, sort_keys=True))
        return 0
    print('A = {0} ({1}), B = {2} ({3}{4}); {5} rounds, order {6}; {7} to {8}; load average {9} at the start, '
          '{10} at the end'.format(result['base']['rev'], result['base']['commit'][:12], result['head']['rev'],
                                   result['head']['commit'][:12],
                                   ' + uncommitted changes' if result['head']['dirty'] else '', args.rounds,
                                   args.order.upper(), result['started'], result['finished'], result['load_start'],
                                   result['load_end']))
    for benchmark in benches:
        print('\n{0} {1}\n'.format(benchmark, ' '.join(result['options'][benchmark]) or '(its default size)'))
        print(table(benchmark, runs, result['summary'][benchmark]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
