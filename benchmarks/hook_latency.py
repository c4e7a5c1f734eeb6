"""Hookscript latency vs a bare interpreter start, sequential and 64 at once.

Runs the hookscript as Proxmox does, by executing the file so that its #!
flags (``-IS``: isolated, no site) apply, with a valid config (AccountDB
unreachable: the hookscript never contacts it anyway), alternating with two
baselines of the same interpreter: ``python -I -c pass`` (the issue's
baseline, target <= 1.3x) and ``python -I -S -c pass`` (no site at all: the
floor). Prints the medians and both ratios; then starts 64 of each at once,
several rounds alternating, and compares their p99 wall times (target
<= 1.5x). Then splits a cold run into importing pve_hooks.hook.main and
hook.main() (config, event, durable write with its two fsyncs), and says
whether ``os`` was imported (the hot path keeps it out: ~1.2 ms).

Interpreter and package, by default: a scratch prefix laid out like Debian's
/usr (a copy of /usr/bin/python3, its standard library linked) with this
tree's pve_hooks copied into <prefix>/lib/python3/dist-packages, where the
.deb installs it; the hookscript copy's #! names that interpreter. Nothing
in /usr is touched. Also measures this machine's own ``/usr/bin/python3 -I -c
pass`` for reference (its site-packages .pth files included).
``--python PATH`` measures that interpreter with whatever pve_hooks the
hookscript's import chain finds for it (e.g. /usr/bin/python3 with the .deb
installed, or a venv's python: then the chain falls back to site and pays
its cost; the output says which, and whether the package is this tree's).

    .venv/bin/python benchmarks/hook_latency.py [--runs 200] [--rounds 5] [--spool-dir /dev/shm] [--python PATH]

``--json`` prints one JSON object with the key figures (ratios, medians and
p95 in ms) instead of the report; benchmarks/ab/ab.py reads it.
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.hook import EXEC_HOOKSCRIPT, HOOKSCRIPT, SYSTEM_PYTHON, copy_package, debian_prefix  # noqa: E402

PHASES = ('pre-start', 'post-start', 'pre-stop', 'post-stop')


def debian_like_python(scratch):
    """Return the python3 of a Debian-like scratch prefix holding a compiled copy of this tree's pve_hooks."""
    python = debian_prefix(os.path.join(scratch, 'usr'), SYSTEM_PYTHON)
    packages = os.path.join(scratch, 'usr', 'lib', 'python3', 'dist-packages')
    copy_package(packages)
    subprocess.run([python, '-I', '-S', '-m', 'compileall', '-q', os.path.join(packages, 'pve_hooks')], check=True)
    return python


def hookscript_for(python, scratch):
    """Copy the hookscript into ``scratch`` with ``python`` in place of its #! interpreter; return (path, flags).

    Only the interpreter's path changes: executing the copy applies the
    hookscript's own #! flags (returned as the one argument the kernel passes).
    """
    with open(HOOKSCRIPT) as stream:
        first, rest = stream.readline(), stream.read()
    interpreter, _, flags = first[2:].strip().partition(' ')
    path = os.path.join(scratch, 'snippets', 'accountdb-hook')
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as stream:
        stream.write('#!{0} {1}\n'.format(python, flags) + rest)
    os.chmod(path, 0o755)
    return path, [flags] if flags else []


def how_found(python, flags, env):
    """Run the hookscript's code with ``flags``; return (file pve_hooks.hook.main came from, whether site ran)."""
    code = EXEC_HOOKSCRIPT.format(path=HOOKSCRIPT, vmid='100', phase='post-stop')
    out = subprocess.run([python] + flags + ['-c', code], env=env, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    if report['exit'] != 0 or not report['hook_file']:
        raise SystemExit('the hookscript did not load pve_hooks with {0} {1}: {2}'.format(python, flags, out.stderr))
    return report['hook_file'], 'site' in report['modules']


def is_this_tree(package_dir):
    """Return True if ``package_dir`` holds the same .py files, byte for byte, as this tree's pve_hooks."""
    def digests(top):
        found = {}
        for folder, dirs, files in os.walk(top):
            dirs[:] = [name for name in dirs if name != '__pycache__']
            for name in files:
                if name.endswith('.py'):
                    path = os.path.join(folder, name)
                    with open(path, 'rb') as stream:
                        found[os.path.relpath(path, top)] = hashlib.sha256(stream.read()).hexdigest()
        return found
    return digests(package_dir) == digests(os.path.join(REPO, 'pve_hooks'))


def make_site(scratch, spool_dir=None):
    """Write a valid config under ``scratch`` (spool in ``spool_dir`` if given); return the environment."""
    pve_root = os.path.join(scratch, 'pve')
    os.makedirs(os.path.join(pve_root, 'nodes', 'pve1', 'qemu-server'))
    with open(os.path.join(pve_root, 'nodes', 'pve1', 'qemu-server', '100.conf'), 'w') as stream:
        stream.write('memory: 512\n')
    config = os.path.join(scratch, 'config.yaml')
    with open(config, 'w') as stream:
        stream.write('# benchmark configuration\nnode: pve1\naccountdb:\n  url: http://127.0.0.1:9  # unreachable\n'
                     'paths:\n  spool_dir: {2}\n  state_dir: {0}/state\nproxmox:\n  pve_root: {1}\n'
                     'hook:\n  chain_dir: {0}/hooks.d\n'.format(scratch, pve_root,
                                                                 spool_dir or os.path.join(scratch, 'spool')))
    return {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LC_ALL': 'C', 'PVE_HOOKS_CONFIG': config}


def time_one(argv, env):
    """Return the wall time in seconds of running ``argv`` to completion; raise if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    if process.wait() != 0:
        raise SystemExit('{0} exited with {1}'.format(argv, process.returncode))
    return time.perf_counter() - start


def time_burst(argvs, env):
    """Start every argv at once; return each one's wall time (spawn to reaped exit)."""
    starts = {}
    for argv in argvs:
        start = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        starts[process.pid] = (start, process)
    times = []
    while starts:
        pid, status = os.wait()
        end = time.perf_counter()
        start, process = starts.pop(pid)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit('{0} exited with {1}'.format(process.args, process.returncode))
        times.append(end - start)
    return times


def percentile(values, fraction):
    """Return the nearest-rank percentile (``fraction`` 0.99 for p99) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.5) - 1))]


def p99(values):
    return percentile(values, 0.99)


SPLIT = """
import time; t0 = time.perf_counter()
import posix, sys
sys.path.extend({0!r})
from pve_hooks.hook import main as hook; t1 = time.perf_counter()
null = posix.open('/dev/null', posix.O_WRONLY)
environ = {{key.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()):
           value.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())
           for key, value in posix.environ.items()}}  # as the hookscript's environment() does
hook.main(['hook', '100', 'post-stop'], environ, stderr_fd=null); t2 = time.perf_counter()
print(t1 - t0, t2 - t1, int('os' in sys.modules))
"""


def split_costs(python, flags, extra_path, env, runs):
    """Return (medians in seconds of importing pve_hooks.hook.main and of hook.main(), whether os was imported).

    Separates the hookscript's imports from its own work (config, event,
    durable write with two fsyncs) as they happen in a real, cold run;
    ``flags`` and ``extra_path`` (appended to sys.path) reproduce how the
    hookscript found the package. The last value says whether ``os`` was in
    sys.modules afterwards in any run (site imports it; the hot path must not).
    """
    parts = ([], [])
    os_seen = False
    for _ in range(runs):
        out = subprocess.run([python] + flags + ['-c', SPLIT.format(extra_path)], env=env, capture_output=True,
                             text=True, check=True)
        import_time, main_time, os_loaded = out.stdout.split()
        parts[0].append(float(import_time))
        parts[1].append(float(main_time))
        os_seen = os_seen or os_loaded == '1'
    return statistics.median(parts[0]), statistics.median(parts[1]), os_seen


def ms(seconds):
    return '{0:7.2f} ms'.format(seconds * 1000)


def key_figures(kinds, median, tail, import_cost, main_cost, os_seen, this_tree, site_ran, args):
    """Return the figures ``--json`` prints (times in ms): ``kinds`` the sequential times, ``median`` their
    medians, ``tail`` the bursts' p99s, the rest as main() prints them."""
    def in_ms(seconds):
        return round(seconds * 1000, 4)
    figures = {'benchmark': 'hook_latency', 'runs': args.runs, 'burst': args.burst, 'rounds': args.rounds,
               'spool_dir': args.spool_dir, 'python': args.python,
               'ratio_vs_bare': median['hook'] / median['bare'], 'ratio_vs_floor': median['hook'] / median['floor'],
               'burst_p99_ratio_vs_bare': tail['hook'] / tail['bare'],
               'burst_p99_ratio_vs_floor': tail['hook'] / tail['floor'],
               'import_ms': in_ms(import_cost), 'main_ms': in_ms(main_cost), 'os_imported': os_seen,
               'this_tree': this_tree, 'site_ran': site_ran}
    for kind in median:
        figures[kind + '_median_ms'] = in_ms(median[kind])
        figures[kind + '_p95_ms'] = in_ms(percentile(kinds[kind], 0.95))
    for kind in tail:
        figures['burst_' + kind + '_p99_ms'] = in_ms(tail[kind])
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--python', default=None,
                        help='interpreter to measure with the pve_hooks it finds (default: see module doc)')
    parser.add_argument('--runs', type=int, default=200, help='sequential runs of each (default 200)')
    parser.add_argument('--burst', type=int, default=64, help='processes started at once (default 64)')
    parser.add_argument('--rounds', type=int, default=5, help='bursts of each kind, alternating (default 5)')
    parser.add_argument('--spool-dir', default=None,
                        help='put the spool here, e.g. on /dev/shm to see the cost without disk fsync latency')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object with the key figures instead of the report (benchmarks/ab)')
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix='pve-hooks-bench-')
    spool_dir = None
    try:
        if args.python:
            python = label = os.path.abspath(args.python)  # the #! needs an absolute path
        elif os.path.exists(SYSTEM_PYTHON):
            python = debian_like_python(scratch)
            label = '{0} (a copy of {1} in a scratch prefix laid out like /usr, this tree\'s pve_hooks in its ' \
                    'lib/python3/dist-packages)'.format(python, SYSTEM_PYTHON)
        else:
            raise SystemExit('no {0} to copy: pass --python PATH'.format(SYSTEM_PYTHON))
        spool_dir = tempfile.mkdtemp(prefix='pve-hooks-bench-spool-', dir=args.spool_dir) if args.spool_dir else None
        env = make_site(scratch, spool_dir)
        script, flags = hookscript_for(python, scratch)
        hook_file, site_ran = how_found(python, flags, env)
        package_dir = os.path.dirname(os.path.dirname(hook_file))  # .../pve_hooks/hook/main.py -> .../pve_hooks
        hook = [script, '100']
        bare = [python, '-I', '-c', 'pass']
        floor = [python, '-I', '-S', '-c', 'pass']
        kinds = {'hook': [], 'bare': [], 'floor': [], 'system': []}
        system = [SYSTEM_PYTHON, '-I', '-c', 'pass'] if not args.python and os.path.exists(SYSTEM_PYTHON) else None
        for phase in PHASES:  # warm-up: page cache, .pyc files
            for argv in (hook + [phase], bare, floor) + ((system,) if system else ()):
                time_one(argv, env)
        for index in range(args.runs):
            kinds['hook'].append(time_one(hook + [PHASES[index % 4]], env))
            kinds['bare'].append(time_one(bare, env))
            kinds['floor'].append(time_one(floor, env))
            if system:
                kinds['system'].append(time_one(system, env))
        median = {kind: statistics.median(times) for kind, times in kinds.items() if times}

        bursts = {'hook': [], 'bare': [], 'floor': []}
        for _ in range(args.rounds):
            bursts['hook'] += time_burst([hook + [PHASES[i % 4]] for i in range(args.burst)], env)
            bursts['bare'] += time_burst([bare] * args.burst, env)
            bursts['floor'] += time_burst([floor] * args.burst, env)
        tail = {kind: p99(times) for kind, times in bursts.items()}
        ready = os.path.join(spool_dir or os.path.join(scratch, 'spool'), 'outbox', 'ready')
        spooled, expected = len(os.listdir(ready)), 1 + len(PHASES) + args.runs + args.rounds * args.burst
        if spooled != expected:  # exit 0 alone does not prove it: the hookscript exits 0 whatever happens
            raise SystemExit('the hookscript spooled {0} events in {1}, expected {2}'.format(spooled, ready, expected))
        extra_path = [] if site_ran else [os.path.dirname(package_dir)]
        import_cost, main_cost, os_seen = split_costs(python, ['-I'] if site_ran else ['-I', '-S'], extra_path, env,
                                                      min(args.runs, 100))
        this_tree = is_this_tree(package_dir)
        if args.json:
            figures = key_figures(kinds, median, tail, import_cost, main_cost, os_seen, this_tree, site_ran, args)
            print(json.dumps(figures, sort_keys=True))
            return

        print('interpreter: {0}'.format(label))
        print('hookscript: {0} (executed: its #! flags {1} apply)'.format(script, ' '.join(flags) or 'none'))
        print('pve_hooks found in {0}: {1}; {2}'.format(
            package_dir, 'without site processing' if not site_ran else
            'by the fallback to site processing (its cost is paid on every run)',
            'this tree\'s code' if this_tree else 'NOT this tree\'s code (an older install?)'))
        print('spool: {0}'.format(spool_dir or os.path.join(scratch, 'spool')))
        print('sequential, {0} runs each, alternating:'.format(args.runs))
        print('  bare `python -I -c pass`     median {0}'.format(ms(median['bare'])))
        print('  bare `python -I -S -c pass`  median {0}'.format(ms(median['floor'])))
        print('  hookscript                   median {0}'.format(ms(median['hook'])))
        if system:
            print('  (this machine\'s `{0} -I -c pass`, its own site-packages: median {1})'.format(
                SYSTEM_PYTHON, ms(median['system']).strip()))
        print('  ratio vs -I: {0:.2f}x (target <= 1.3x); vs -I -S (no site, the floor): {1:.2f}x'.format(
            median['hook'] / median['bare'], median['hook'] / median['floor']))
        print('{0} started at once, {1} rounds each, alternating:'.format(args.burst, args.rounds))
        for kind, name in (('bare', 'bare -I   '), ('floor', 'bare -I -S'), ('hook', 'hookscript')):
            print('  {0}  p99 {1}  median {2}'.format(name, ms(tail[kind]), ms(statistics.median(bursts[kind]))))
        print('  p99 ratio vs -I: {0:.2f}x (target <= 1.5x); vs -I -S: {1:.2f}x'.format(
            tail['hook'] / tail['bare'], tail['hook'] / tail['floor']))
        print('split, fresh processes: importing pve_hooks.hook.main {0}, hook.main() {1} (config, event, durable write: '
              'fsync file, rename, fsync dir); os imported: {2}'.format(
                  ms(import_cost).strip(), ms(main_cost).strip(),
                  ('yes (by site)' if site_ran else 'YES (the hot path imports it)') if os_seen else 'no'))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if spool_dir:
            shutil.rmtree(spool_dir, ignore_errors=True)


if __name__ == '__main__':
    main()
