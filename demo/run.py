"""``make demo``: the whole job on a simulated Proxmox node, narrated, in well under two minutes.

    .venv/bin/python demo/run.py [--scratch DIR] [--quiet]

What runs, all on this machine and all real processes except the Proxmox API:

- a simulated node ``pve1``: fakepve (an independent fake of the Proxmox VE
  API, from PyPI) behind the same test ``pvesh`` shim the test suite uses, and
  an ``/etc/pve`` stand-in (guest configs + ``.vmlist``);
- the reference AccountDB (``pve-hooks dev-accountdb``) on 127.0.0.1;
- the REAL hookscript, run as Proxmox runs it (``<vmid> <phase>``, PVE's
  PATH, LC_ALL=C, PVE_MIGRATED_FROM on a migration target);
- the REAL daemon, ``pve-hooks reconcile``, and the real CLI commands.

Everything is written under the scratch directory (default
``.scratch/demo/`` in the repository; wiped at the start). Every process the
demo starts is stopped when it ends, also on Ctrl-C or an error.
"""

import argparse
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.dont_write_bytecode = True

from tests.end_to_end.harness import Node, stored_events, stored_inventories, wait_for  # noqa: E402
from tests.support.accountdb import DevAccountDB  # noqa: E402
from tests.support.fakepve import FakeNode, FakePveHandle, FakePveServer, PveTree  # noqa: E402
from tests.support.systemctl import make_systemctl  # noqa: E402

# Short intervals so the story fits in a minute; everything else is the schema's default.
DEMO_SETTINGS = {
    'reconcile.interval': 1,
    'reconcile.heartbeat_interval': 2,
    'whitelist.refresh_interval': 1,
    'health.pvesh_interval': 5,
    'logging.level': 'info',
}


class Story:
    """Prints the narrative: numbered steps, commands as they are run, results."""

    def __init__(self, quiet=False, out=sys.stdout):
        self.quiet = quiet
        self.out = out
        self.started = time.monotonic()

    def step(self, number, title):
        heading = '== {0}. {1}'.format(number, title) if number else '== ' + title
        self.say('\n\033[1m' + heading + '\033[0m' if self.out.isatty() else '\n' + heading)

    def say(self, text=''):
        if not self.quiet:
            self.out.write(text + '\n')
            self.out.flush()

    def command(self, argv, result=None):
        shown = ' '.join(argv)
        self.say('  $ ' + shown)
        if result is not None:
            for line in (result.stdout + result.stderr).rstrip().splitlines():
                self.say('    ' + line)

    def elapsed(self):
        return time.monotonic() - self.started


def _ms(seconds):
    return '{0:.0f} ms'.format(seconds * 1000)


def _hook(story, node, vmid, phase, migrated_from=None):
    """Run the real hookscript like Proxmox; print the call and its wall time; return the time."""
    env = 'PVE_MIGRATED_FROM={0} '.format(migrated_from) if migrated_from else ''
    started = time.monotonic()
    result = node.hook(vmid, phase, migrated_from=migrated_from)
    took = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError('hookscript exited {0}: {1}'.format(result.returncode, result.stderr.strip()))
    story.say('  proxmox runs: {0}accountdb-hook {1} {2:<10}  -> exit 0 in {3}'.format(
        env, vmid, phase, _ms(took)))
    return took


def _cli(story, node, *argv, show=True, input=None):
    result = node.cli(*argv, input=input)
    if show:
        story.command(['pve-hooks'] + list(argv), result)
    return result


def _picture(db, node='pve1'):
    entry = stored_inventories(db).get(node)
    if entry is None:
        return None
    return sorted(guest['vmid'] for guest in entry['inventory']['guests'])


def run(scratch, story):
    """Run the whole demo with files under ``scratch``; return 0. Raise on a failed step."""
    if os.path.isdir(scratch):
        shutil.rmtree(scratch)
    os.makedirs(scratch)
    os.environ['TMPDIR'] = os.path.join(scratch, 'tmp')
    os.environ['PYTHONDONTWRITEBYTECODE'] = '1'
    os.makedirs(os.environ['TMPDIR'])
    import tempfile
    tempfile.tempdir = os.environ['TMPDIR']

    started = []  # things to stop, last first
    try:
        story.say('Setting up in {0}: a simulated Proxmox node (fakepve behind a pvesh shim, an /etc/pve '
                  'tree) and the reference AccountDB on 127.0.0.1.'.format(scratch))
        from fakepve.certs import make_cert
        pki = os.path.join(scratch, 'pki')
        os.makedirs(pki)
        certfile, keyfile = make_cert(pki, hosts=('127.0.0.1',))[:2]
        server = FakePveServer(certfile, keyfile)
        started.append(server.stop)
        os.makedirs(os.path.join(scratch, 'fakepve'))
        fake = FakePveHandle(server, os.path.join(scratch, 'fakepve'), certfile)
        fake.add_node('pve2')
        cluster = FakeNode(fake, PveTree(os.path.join(scratch, 'etc-pve')))
        accountdb = DevAccountDB(os.path.join(scratch, 'accountdb'))
        started.append(accountdb.stop)
        systemctl = make_systemctl(scratch, {})
        settings = dict(DEMO_SETTINGS)
        settings.update({'proxmox.pvesh': fake.pvesh, 'health.systemctl': systemctl})
        node = Node(os.path.join(scratch, 'pve1'), 'pve1', accountdb=accountdb, settings=settings,
                    pve_root=cluster.pve_root, journal_dir=scratch)
        started.append(node.close)
        for vmid, kind in ((101, 'qemu'), (102, 'qemu'), (201, 'lxc')):
            cluster.create_guest(vmid, kind)
        cluster.create_guest(301, 'qemu', node='pve2', status='running')
        story.say('  node pve1 has guests 101, 102 (VMs) and 201 (container); 301 runs on pve2.')
        story.say('  AccountDB: {0}   config: {1}'.format(accountdb.url, node.config_file))
        node.start_daemon()
        story.say('  $ pve-hooks reconcile        (the daemon; its log: {0})'.format(node.log_file))
        wait_for(lambda: _picture(accountdb.db) == [101, 102, 201], 20, 'the first inventory',
                 seen=node.log_tail)
        story.say('  the daemon sent the first inventory: AccountDB knows guests {0} on pve1'.format(
            _picture(accountdb.db)))

        # 1 ------------------------------------------------------------------------------------
        story.step(1, 'Guests start and stop: the real hookscript records each event, the daemon delivers it')
        fired = 0
        for vmid, phase in ((101, 'pre-start'), (101, 'post-start')):
            _hook(story, node, vmid, phase)
            fired += 1
        t0 = time.monotonic()
        wait_for(lambda: len(stored_events(accountdb.db)) == fired, 10, 'the events in AccountDB',
                 interval=0.01, seen=node.log_tail)
        story.say('  -> both events are in AccountDB {0} after the hookscript returned'.format(
            _ms(time.monotonic() - t0)))
        cluster.set_status(101, 'running')

        # 2 ------------------------------------------------------------------------------------
        story.step(2, 'AccountDB goes down: events pile up in the outbox, guests still start instantly')
        accountdb.stop()
        story.say('  (AccountDB stopped)')
        for vmid, phase in ((102, 'pre-start'), (102, 'post-start'), (101, 'pre-stop'), (101, 'post-stop')):
            _hook(story, node, vmid, phase)
            fired += 1
        wait_for(lambda: node.status()['daemon'].get('connection') not in (None, 'up'), 15,
                 'the daemon to notice', seen=lambda: node.status()['daemon'])
        _cli(story, node, 'status')

        # 3 ------------------------------------------------------------------------------------
        story.step(3, 'AccountDB comes back: the backlog drains by itself')
        accountdb.restart()
        t0 = time.monotonic()
        story.say('  (AccountDB started again; nobody touches pve-hooks)')
        wait_for(lambda: node.pending() == 0 and len(stored_events(accountdb.db)) == fired, 30,
                 'the backlog to drain', interval=0.05, seen=node.log_tail)
        story.say('  -> outbox empty, AccountDB holds all {0} events, {1:.1f} s after it came back'.format(
            fired, time.monotonic() - t0))
        _cli(story, node, 'outbox', 'status')

        # 4 ------------------------------------------------------------------------------------
        story.step(4, 'Changes no hook reports: create, destroy, and a live migration in from pve2')
        cluster.create_guest(103, 'qemu')
        story.say('  qm create 103          (Proxmox runs no hook)')
        cluster.destroy_guest(201)
        story.say('  pct destroy 201        (Proxmox runs no hook)')
        cluster.migrate_guest(301, 'pve1')
        story.say('  qm migrate 301 pve1 --online   (hooks on the target only, with PVE_MIGRATED_FROM)')
        for phase in ('pre-start', 'post-start'):
            _hook(story, node, 301, phase, migrated_from='pve2')
            fired += 1
        wait_for(lambda: _picture(accountdb.db) == [101, 102, 103, 301], 20,
                 'the inventory reconciliation', seen=lambda: (_picture(accountdb.db), node.log_tail(5)))
        story.say('  -> inventory reconciliation: AccountDB now lists guests {0} on pve1'.format(
            _picture(accountdb.db)))

        # 5 ------------------------------------------------------------------------------------
        story.step(5, 'The whitelist is narrowed with one bulk command')
        _cli(story, node, 'whitelist', 'set', '--from-file', '-', input='101\n300-399\n')
        wait_for(lambda: _picture(accountdb.db) == [101, 301], 20, 'the whitelist to apply',
                 seen=lambda: (_picture(accountdb.db), node.log_tail(5)))
        story.say('  -> AccountDB now lists only whitelisted guests on pve1: {0}'.format(_picture(accountdb.db)))
        before = len(stored_events(accountdb.db))
        _hook(story, node, 102, 'pre-stop')
        _hook(story, node, 101, 'pre-start')
        wait_for(lambda: node.pending() == 0 and len(stored_events(accountdb.db)) == before + 1, 10,
                 'the whitelisted event', seen=node.log_tail)
        fired += 1
        story.say('  -> 101\'s event was delivered; 102 is not on the whitelist: its event was filtered, not sent')

        # 6 ------------------------------------------------------------------------------------
        story.step(6, 'Health checks and metrics')
        _cli(story, node, 'health')
        story.say('  $ grep -v "^#" {0}   (node_exporter textfile; excerpt)'.format(node.metrics_file))
        wanted = ('pve_hooks_events_', 'pve_hooks_outbox_depth', 'pve_hooks_breaker_state{state="closed"}',
                  'pve_hooks_inventory_')
        with open(node.metrics_file) as stream:
            for line in stream:
                if line.startswith(wanted):
                    story.say('    ' + line.rstrip())

        # the end ------------------------------------------------------------------------------
        story.step(None, 'What AccountDB holds')
        events = stored_events(accountdb.db)
        for event in events:
            body = event['body']
            story.say('  event  {0} {1:>4} {2:<10} at {3}{4}'.format(
                event['node'], event['vmid'], event['phase'], body.get('occurred_at'),
                '  (migrated from {0})'.format(body['migrated_from']) if body.get('migrated_from') else ''))
        inventory = stored_inventories(accountdb.db)['pve1']['inventory']
        for guest in inventory['guests']:
            story.say('  guest  pve1 {0:>4} {1:<5} {2:<8} {3}'.format(guest['vmid'], guest['type'],
                                                                    guest['status'], guest.get('name')))
        ids = node.fired_ids()
        assert len({e['event_id'] for e in events}) == len(events) == fired, (len(events), fired)
        assert set(e['event_id'] for e in events) <= set(ids)
        assert node.stop_daemon() == 0
        story.say('\n{0} events recorded by the hookscript, {1} delivered exactly once, 1 filtered by the '
                  'whitelist; demo finished in {2:.0f} s.'.format(len(ids), len(events), story.elapsed()))
        return 0
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception as error:  # keep stopping the rest
                sys.stderr.write('demo: stopping {0}: {1}\n'.format(getattr(stop, '__qualname__', stop), error))


def main(argv=None):
    parser = argparse.ArgumentParser(description='pve-hooks demo on a simulated node.')
    parser.add_argument('--scratch', default=os.path.join(REPO, '.scratch', 'demo'),
                        help='directory for every file the demo writes (wiped first)')
    parser.add_argument('--quiet', action='store_true', help='print nothing but errors')
    args = parser.parse_args(argv)
    scratch = os.path.abspath(args.scratch)
    try:
        return run(scratch, Story(quiet=args.quiet))
    except KeyboardInterrupt:
        sys.stderr.write('demo interrupted; everything it started was stopped\n')
        return 130
    except (AssertionError, RuntimeError) as error:
        sys.stderr.write('demo failed: {0}\n'.format(error))
        return 1


if __name__ == '__main__':
    sys.exit(main())
