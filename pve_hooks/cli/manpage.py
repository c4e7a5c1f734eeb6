"""Render the ``pve-hooks`` click group as a roff man page (pve-hooks.1).

Run at package build time: ``python3 -m pve_hooks.cli.manpage > pve-hooks.1``.
The page is generated from the same help texts ``--help`` shows, so the two
cannot drift. The date comes from ``SOURCE_DATE_EPOCH`` (set by
dpkg-buildpackage from debian/changelog) so builds are reproducible.
"""

import inspect
import os
import sys
import time

import click

FILES = (
    ('/etc/pve-hooks/config.yaml', 'Configuration (all options: pve-hooks config sample).'),
    ('/etc/pve-hooks/token', 'AccountDB bearer token; owner root, mode 0600.'),
    ('/etc/pve-hooks/hooks.d/', 'Other hookscripts, run after ours in name order with the same arguments.'),
    ('/usr/share/pve-hooks/hookscripts/accountdb-hook',
     'The hookscript; pve-hooks snippets install copies it into the snippets storage.'),
    ('/var/spool/pve-hooks/', 'Outbox of events not yet delivered to AccountDB.'),
    ('/var/lib/pve-hooks/', 'State: circuit breaker, whitelist cache, inventory hash, daemon heartbeat.'),
)
SEE_ALSO = 'qm(1), pct(1), pvesh(1), journalctl(1), systemd.service(5)'


def escape(text):
    """Return ``text`` safe inside a roff line: backslashes, dashes and leading dots escaped."""
    text = text.replace('\\', '\\e').replace('-', '\\-')
    if text.startswith(('.', "'")):
        text = '\\&' + text
    return text


def _paragraphs(text):
    """Split a click help text into paragraphs: (lines, keep_layout) for click's ``\\b`` blocks."""
    blocks = []
    for block in inspect.cleandoc((text or '').split('\f')[0]).split('\n\n'):
        lines = block.split('\n')
        if lines and lines[0].strip() == '\b':
            blocks.append((lines[1:], True))
        elif block.strip():
            blocks.append(([' '.join(line.strip() for line in lines)], False))
    return blocks


def _text(help_text):
    out = []
    for index, (lines, keep) in enumerate(_paragraphs(help_text)):
        if index:
            out.append('.PP')
        if keep:
            out.append('.nf')
            out.extend(escape(line) for line in lines)
            out.append('.fi')
        else:
            out.extend(escape(line) for line in lines)
    return out


def _options(command, ctx, with_help=True):
    """Return roff lines for the options of ``command`` (arguments are in its usage line)."""
    out = []
    for param in command.get_params(ctx):
        is_help = set(getattr(param, 'opts', ())) <= set(ctx.help_option_names)
        if isinstance(param, click.Argument) or (is_help and not with_help):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        out.append('.TP')
        out.append('\\fB' + escape(names) + '\\fR')
        out.extend(_text(help_text) or ['\\&'])
    return out


def _walk(command, ctx, out):
    """Append a section for ``command`` and its subcommands (depth first, in name order)."""
    path = ctx.command_path
    pieces = ' '.join(command.collect_usage_pieces(ctx))
    out.append('.SS "' + escape(path) + '"')
    out.append('\\fB' + escape(path) + '\\fR ' + escape(pieces))
    out.append('.PP')
    out.extend(_text(command.help))
    options = _options(command, ctx, with_help=False)
    if options:
        out.append('.RS')
        out.extend(options)
        out.append('.RE')
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, 'hidden', False):
                continue
            _walk(sub, click.Context(sub, info_name=name, parent=ctx), out)


def render(group, name='pve-hooks', version='', date=None):
    """Return the man page (roff text) of click group ``group``.

    ``date`` is a 'YYYY-MM-DD' string (default: from SOURCE_DATE_EPOCH, else today).
    """
    if date is None:
        epoch = os.environ.get('SOURCE_DATE_EPOCH')
        date = time.strftime('%Y-%m-%d', time.gmtime(int(epoch) if epoch and epoch.isdigit() else None))
    ctx = click.Context(group, info_name=name, **group.context_settings)
    summary = inspect.cleandoc(group.help or '').split('\n')[0].rstrip('.')
    out = ['.\\" Generated from the click help by pve_hooks.cli.manpage; do not edit.',
           '.TH {0} 1 "{1}" "{2} {3}" "User Commands"'.format(escape(name.upper()), date, escape(name),
                                                           escape(version)).replace(' ""', ''),
           '.SH NAME', '{0} \\- {1}'.format(escape(name), escape(summary)),
           '.SH SYNOPSIS',
           '\\fB{0}\\fR [\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...'.format(escape(name)),
           '.SH DESCRIPTION']
    out.extend(_text(group.help))
    out.append('.SH OPTIONS')
    out.extend(_options(group, ctx))
    out.append('.SH COMMANDS')
    for command_name in group.list_commands(ctx):
        sub = group.get_command(ctx, command_name)
        if sub is None or getattr(sub, 'hidden', False):
            continue
        _walk(sub, click.Context(sub, info_name=command_name, parent=ctx), out)
    out.append('.SH ENVIRONMENT')
    out += ['.TP', '\\fBPVE_HOOKS_CONFIG\\fR', 'Configuration file to read instead of /etc/pve\\-hooks/config.yaml.',
            '.TP', '\\fBPVE_HOOKS_\\fISECTION\\fB__\\fIKEY\\fR',
            'Overrides one option, e.g. PVE_HOOKS_ACCOUNTDB__URL; \\-\\-set overrides these.']
    out.append('.SH FILES')
    for path, text in FILES:
        out += ['.TP', '\\fI' + escape(path) + '\\fR', escape(text)]
    out += ['.SH EXIT STATUS', '0 on success, 1 on an error the message explains, 2 on a usage error.']
    out += ['.SH SEE ALSO', escape(SEE_ALSO)]
    return '\n'.join(out) + '\n'


def main():
    """Write the man page of ``pve-hooks`` to stdout."""
    from pve_hooks import __version__
    from pve_hooks.cli import main as group

    sys.stdout.write(render(group, version=__version__))


if __name__ == '__main__':
    main()
