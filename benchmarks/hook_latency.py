"""Hookscript latency vs a bare interpreter start, sequential and 64 at once.

Runs ``python -I hookscripts/accountdb-hook <vmid> <phase>`` (valid config,
AccountDB unreachable: the hookscript never contacts it anyway) and
``python -I -c pass`` alternately with the same interpreter, and prints the
medians and their ratio (target <= 1.3x). Then starts 64 of each at once,
several rounds alternating, and compares their p99 wall times (target <= 1.5x).
Also prints the in-process cost of one durable spool write (fsyncs included).

Interpreter: ``--python PATH``. By default the working tree's package is
copied into a scratch venv of /usr/bin/python3 (else of this interpreter): a
plain copy, as the .deb installs it, without editable-install hooks in site
and not whatever older pve_hooks may be installed system-wide. ``--as-is``
runs the interpreter with the pve_hooks it imports itself (default then:
/usr/bin/python3 when it can import pve_hooks in isolated mode, else this
interpreter).

    .venv/bin/python benchmarks/hook_latency.py [--runs 200] [--rounds 5] [--as-is]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOOKSCRIPT = os.path.join(REPO, 'hookscripts', 'accountdb-hook')
PHASES = ('pre-start', 'post-start', 'pre-stop', 'post-stop')


def default_python():
    """Return /usr/bin/python3 if it imports pve_hooks in isolated mode, else sys.executable."""
    candidate = '/usr/bin/python3'
    if os.path.exists(candidate) and subprocess.run([candidate, '-I', '-c', 'import pve_hooks'], cwd='/',
                                                    capture_output=True).returncode == 0:
        return candidate
    return sys.executable


def deb_like_python(python, scratch):
    """Return a venv interpreter (of ``python``) with a plain copy of pve_hooks in its site-packages."""
    venv = os.path.join(scratch, 'venv')
    subprocess.run([python, '-m', 'venv', '--without-pip', venv], check=True)
    site = subprocess.run([os.path.join(venv, 'bin', 'python'), '-I', '-c',
                           'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          check=True, capture_output=True, text=True).stdout.strip()
    shutil.copytree(os.path.join(REPO, 'pve_hooks'), os.path.join(site, 'pve_hooks'),
                    ignore=shutil.ignore_patterns('__pycache__'))
    interpreter = os.path.join(venv, 'bin', 'python')
    subprocess.run([interpreter, '-I', '-c', 'import compileall, pve_hooks, os; '
                    'compileall.compile_dir(os.path.dirname(pve_hooks.__file__), quiet=1)'], check=True)
    return interpreter


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


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered) + 0.5) - 1)]


SPLIT = """
import time; t0 = time.perf_counter()
import os
from pve_hooks import hook; t1 = time.perf_counter()
null = os.open(os.devnull, os.O_WRONLY)
hook.main(['hook', '100', 'post-stop'], os.environ, stderr_fd=null); t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


def split_costs(python, env, runs):
    """Return medians (seconds) of importing pve_hooks.hook and of hook.main(), each in a fresh process.

    Separates the hookscript's imports from its own work (config, event,
    durable write with two fsyncs) as they happen in a real, cold run.
    """
    imports, mains = [], []
    for _ in range(runs):
        out = subprocess.run([python, '-I', '-c', SPLIT], env=env, capture_output=True, text=True, check=True)
        first, second = out.stdout.split()
        imports.append(float(first))
        mains.append(float(second))
    return statistics.median(imports), statistics.median(mains)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--python', default=None, help='interpreter to measure (default: see module doc)')
    parser.add_argument('--runs', type=int, default=200, help='sequential runs of each (default 200)')
    parser.add_argument('--burst', type=int, default=64, help='processes started at once (default 64)')
    parser.add_argument('--rounds', type=int, default=5, help='bursts of each kind, alternating (default 5)')
    parser.add_argument('--spool-dir', default=None,
                        help='put the spool here, e.g. on /dev/shm to see the cost without disk fsync latency')
    parser.add_argument('--as-is', action='store_true',
                        help='use the interpreter\'s own pve_hooks instead of a scratch copy of this tree')
    args = parser.parse_args()

    scratch = tempfile.mkdtemp(prefix='pve-hooks-bench-')
    spool_dir = None
    try:
        if args.python:
            python = args.python
        elif args.as_is:
            python = default_python()
        else:
            python = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable
        label = python
        if not args.as_is:
            python = deb_like_python(python, scratch)
            label += " (scratch venv holding a plain copy of this tree's pve_hooks)"
        spool_dir = tempfile.mkdtemp(prefix='pve-hooks-bench-spool-', dir=args.spool_dir) if args.spool_dir else None
        env = make_site(scratch, spool_dir)
        hook = [python, '-I', HOOKSCRIPT, '100']
        bare = [python, '-I', '-c', 'pass']
        for phase in PHASES:  # warm-up: page cache, .pyc files
            time_one(hook + [phase], env)
            time_one(bare, env)
        hook_times, bare_times = [], []
        for index in range(args.runs):
            hook_times.append(time_one(hook + [PHASES[index % 4]], env))
            bare_times.append(time_one(bare, env))
        hook_median, bare_median = statistics.median(hook_times), statistics.median(bare_times)

        hook_burst, bare_burst = [], []
        for _ in range(args.rounds):
            hook_burst += time_burst([hook + [PHASES[i % 4]] for i in range(args.burst)], env)
            bare_burst += time_burst([bare] * args.burst, env)
        import_cost, main_cost = split_costs(python, env, min(args.runs, 100))

        print('interpreter: {0}'.format(label))
        print('spool: {0}'.format(spool_dir or os.path.join(scratch, 'spool')))
        print('sequential, {0} runs each, alternating:'.format(args.runs))
        print('  bare `python -I -c pass`  median {0:7.2f} ms'.format(bare_median * 1000))
        print('  hookscript                median {0:7.2f} ms'.format(hook_median * 1000))
        print('  ratio {0:.2f}x (target <= 1.3x)'.format(hook_median / bare_median))
        print('{0} started at once, {1} rounds each, alternating:'.format(args.burst, args.rounds))
        print('  bare        p99 {0:7.2f} ms  median {1:7.2f} ms'.format(p99(bare_burst) * 1000,
                                                                      statistics.median(bare_burst) * 1000))
        print('  hookscript  p99 {0:7.2f} ms  median {1:7.2f} ms'.format(p99(hook_burst) * 1000,
                                                                      statistics.median(hook_burst) * 1000))
        print('  p99 ratio {0:.2f}x (target <= 1.5x)'.format(p99(hook_burst) / p99(bare_burst)))
        print('split, fresh processes: importing pve_hooks.hook {0:.2f} ms, hook.main() {1:.2f} ms (config, '
              'event, durable write: fsync file, rename, fsync dir)'.format(import_cost * 1000, main_cost * 1000))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if spool_dir:
            shutil.rmtree(spool_dir, ignore_errors=True)


if __name__ == '__main__':
    main()
