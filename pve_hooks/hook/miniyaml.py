"""A small, strict YAML-subset reader for the hookscript's hot path (no ``re``, no PyYAML).

The subset is what pve-hooks' config.yaml needs:

- nested block mappings by indentation (spaces only), plain keys;
- comments (whole-line, or after a value following a space);
- scalars: plain, 'single-quoted', "double-quoted" (common escapes);
- integers (``42``, ``-3``), decimal floats (``1.5``, ``2.0e+3``),
  true/false/yes/no/on/off, null/~ and an empty value;
- flow lists of scalars: ``[a, 'b', 3]``;
- ``{}`` as the whole document (an empty mapping).

Anything else (block sequences ``- x``, anchors and aliases, tags, block
scalars, flow mappings, octal/hex/sexagesimal numbers, dates, duplicate
keys, tabs in the indentation, nesting deeper than :data:`MAX_DEPTH`) raises :class:`MiniYamlError` naming ``file:line`` and saying to quote the
value or simplify the file; a file larger than :data:`MAX_BYTES`, a FIFO, a
socket or a directory is refused with an OSError before it is parsed. Where the subset accepts a document
it reads it exactly as PyYAML's ``safe_load`` would (``pve-hooks config
check`` verifies that for a given file).
"""

import posix  # not os: see pve_hooks.hook

# Bounds on what a configuration file may be (pve_hooks.config.loader applies the same to PyYAML): the schema
# is two levels deep and the sample ~10 KiB, so anything far beyond is a mistake or an attack (a config bomb).
MAX_DEPTH = 20
MAX_BYTES = 1024 * 1024

_NULLS = ('null', 'Null', 'NULL', '~')
_TRUE = ('true', 'True', 'TRUE', 'yes', 'Yes', 'YES', 'on', 'On', 'ON')
_FALSE = ('false', 'False', 'FALSE', 'no', 'No', 'NO', 'off', 'Off', 'OFF')
_KEY_CHARS = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.')
_ESCAPES = {'"': '"', '\\': '\\', '/': '/', 'n': '\n', 't': '\t', 'r': '\r', '0': '\0', 'a': '\a',
            'b': '\b', 'e': '\x1b', 'f': '\f', 'v': '\v', ' ': ' '}
_HEX_ESCAPES = {'x': 2, 'u': 4, 'U': 8}


class MiniYamlError(ValueError):
    """The text is not in the supported subset; ``str()`` is ``file:line: problem; fix``."""

    def __init__(self, source, line, problem):
        self.source, self.line, self.problem = source, line, problem
        super().__init__('{0}:{1}: {2}'.format(source, line, problem))


def loads(text, source='<string>'):
    """Given YAML text, return its mapping as a dict ({} for an empty document).

    ``source`` names the file in error messages. Raise MiniYamlError for
    anything outside the subset.
    """
    if text.startswith('\ufeff'):
        text = text[1:]
    text = text.replace('\r\n', '\n')
    _check_characters(text, source)
    lines = []  # (line number, indent, key, value text or None)
    for number, raw in enumerate(text.split('\n'), 1):
        stripped = raw.lstrip(' ')
        if not stripped or stripped.startswith('#'):
            continue
        if stripped.startswith('\t') or (raw[:len(raw) - len(stripped)].count('\t')):
            raise MiniYamlError(source, number, 'tab in the indentation; indent with spaces')
        if number == 1 and stripped.rstrip() == '---' and raw.startswith('---'):
            continue
        if not lines and raw.startswith('{}') and _is_empty_mapping(raw[2:]) and not _rest_has_content(text, number):
            return {}  # an empty flow mapping as the whole document ({} is what `pve-hooks config sample` users write)
        key, value = _split_key(stripped, source, number)
        lines.append((number, len(raw) - len(stripped), key, value))
    if not lines:
        return {}
    if lines[0][1] != 0:
        raise MiniYamlError(source, lines[0][0], 'the first key must not be indented')
    mapping, index = _block(lines, 0, 0, source, 1)
    if index != len(lines):
        raise MiniYamlError(source, lines[index][0], 'bad indentation; align keys of one section')
    return mapping


def read_bounded(path):
    """Return the bytes of file ``path``; raise OSError if it cannot be read, is a FIFO, a socket or a
    directory (never waited on: opened O_NONBLOCK) or is larger than MAX_BYTES (/dev/zero ends there)."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
    try:
        if posix.fstat(fd).st_mode & 0o170000 in (0o010000, 0o040000, 0o140000):  # FIFO, directory, socket
            raise OSError(22, 'not a regular file (a FIFO, a directory or a socket); name a configuration file', path)
        chunks = []
        size = 0
        while True:
            chunk = posix.read(fd, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_BYTES:
                raise OSError(27, 'larger than {0} bytes; a configuration file is a few KiB'.format(MAX_BYTES), path)
            chunks.append(chunk)
    finally:
        posix.close(fd)
    return b''.join(chunks)


# Characters YAML does not allow in a stream (its Reader refuses them), or reads as line breaks inside a line.
_BAD_ASCII = tuple(chr(code) for code in range(32) if chr(code) not in '\t\n') + ('\x7f',)
_BAD_WIDE = ('\x85', '\u2028', '\u2029', '\ufeff')


def _check_characters(text, source):
    """Raise MiniYamlError at the first control character or in-line break (``\r`` alone, U+2028...)."""
    found = [text.find(ch) for ch in _BAD_ASCII if ch in text]  # C-speed substring tests; ASCII text: done
    if not text.isascii():
        found += [index for index, ch in enumerate(text)
                  if ch in _BAD_WIDE or '\x80' <= ch < '\xa0' or '\ud800' <= ch <= '\udfff' or ch in '\ufffe\uffff']
    if found:
        index = min(found)
        raise MiniYamlError(source, text.count('\n', 0, index) + 1, 'control or line-break character {0!r} in '
                                                                     'the text; remove it'.format(text[index]))


def _is_empty_mapping(tail):
    tail = tail.lstrip(' ')
    return not tail or tail.startswith('#')


def _rest_has_content(text, number):
    """Return True if a line after line ``number`` of ``text`` holds more than blanks or a comment."""
    for raw in text.split('\n')[number:]:
        stripped = raw.strip(' \r')
        if stripped and not stripped.startswith('#'):
            return True
    return False


def load_file(path):
    """Return the mapping in the YAML file ``path``; raise OSError or MiniYamlError."""
    data = read_bounded(path)
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b'\n') + 1
        raise MiniYamlError(path, line, 'not UTF-8 text; save the file as UTF-8')
    return loads(text, path)


def _block(lines, index, indent, source, depth):
    if depth > MAX_DEPTH:
        raise MiniYamlError(source, lines[index][0], 'nested deeper than {0} levels; the configuration is '
                                                     'two levels deep (section: key: value)'.format(MAX_DEPTH))
    mapping = {}
    while index < len(lines):
        number, this_indent, key, value = lines[index]
        if this_indent < indent:
            break
        if this_indent > indent:
            raise MiniYamlError(source, number, 'unexpected indentation; align keys of one section')
        if key in mapping:
            raise MiniYamlError(source, number, 'duplicate key {0!r}; keep only one'.format(key))
        index += 1
        if value is None:
            if index < len(lines) and lines[index][1] > indent:
                mapping[key], index = _block(lines, index, lines[index][1], source, depth + 1)
            else:
                mapping[key] = None
        else:
            mapping[key] = value.value
    return mapping, index


def _split_key(text, source, number):
    """Return (key, parsed value or None for 'nested or empty') from one line without indent."""
    if text[0] in '-?' and (len(text) == 1 or text[1] == ' '):
        raise MiniYamlError(source, number, 'block lists ("- item") are not supported; write [a, b]')
    colon = 0
    while True:
        colon = text.find(':', colon)
        if colon < 0:
            raise MiniYamlError(source, number, 'expected "key: value"')
        if colon + 1 == len(text) or text[colon + 1] in ' ':
            break
        colon += 1
    key = text[:colon]
    if not key or any(ch not in _KEY_CHARS for ch in key):
        raise MiniYamlError(source, number, 'key {0!r} must be letters, digits, "_", "-" or "."'.format(key))
    if key in _NULLS or key in _TRUE or key in _FALSE or key[0] in '0123456789-.':
        raise MiniYamlError(source, number, 'key {0!r} is not read as text by YAML; rename it'.format(key))
    rest = text[colon + 1:].strip(' ')
    if not rest or rest.startswith('#'):
        return key, None
    value, tail = _value(rest, source, number)
    _end(tail, source, number)
    return key, _Value(value)


class _Value:
    """Marks a parsed scalar/list so a null value differs from 'nested mapping follows'."""

    __slots__ = ('value',)

    def __init__(self, value):
        self.value = value


def _end(tail, source, number):
    tail = tail.lstrip(' ')
    if tail and not tail.startswith('#'):
        raise MiniYamlError(source, number, 'unexpected text {0!r} after the value'.format(tail))


def _value(text, source, number):
    """Parse a value at the start of ``text``; return (value, rest of the text)."""
    first = text[0]
    if first == '"':
        return _double(text, source, number)
    if first == "'":
        return _single(text, source, number)
    if first == '[':
        return _flow_list(text, source, number)
    end = text.find(' #')
    plain = (text if end < 0 else text[:end]).rstrip(' ')
    return _plain(plain, source, number), ('' if end < 0 else text[end:])


def _single(text, source, number):
    out = []
    index = 1
    while True:
        end = text.find("'", index)
        if end < 0:
            raise MiniYamlError(source, number, "unterminated single-quoted string; close it with '")
        out.append(text[index:end])
        if text[end + 1:end + 2] == "'":
            out.append("'")
            index = end + 2
            continue
        return ''.join(out), text[end + 1:]


def _double(text, source, number):
    out = []
    index = 1
    while index < len(text):
        ch = text[index]
        if ch == '"':
            return ''.join(out), text[index + 1:]
        if ch == '\\':
            code = text[index + 1:index + 2]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                index += 2
                continue
            if code in _HEX_ESCAPES:
                width = _HEX_ESCAPES[code]
                digits = text[index + 2:index + 2 + width]
                if len(digits) == width and all(c in '0123456789abcdefABCDEF' for c in digits):
                    out.append(chr(int(digits, 16)))
                    index += 2 + width
                    continue
            raise MiniYamlError(source, number, 'unsupported escape "\\{0}" in a double-quoted string'.format(code))
        out.append(ch)
        index += 1
    raise MiniYamlError(source, number, 'unterminated double-quoted string; close it with "')


def _flow_list(text, source, number):
    items = []
    index = 1
    while True:
        while index < len(text) and text[index] == ' ':
            index += 1
        if index >= len(text):
            raise MiniYamlError(source, number, 'unterminated list; close it with ] on the same line')
        if text[index] == ']':
            return items, text[index + 1:]
        ch = text[index]
        if ch == '"':
            item, rest = _double(text[index:], source, number)
        elif ch == "'":
            item, rest = _single(text[index:], source, number)
        elif ch in '[{':
            raise MiniYamlError(source, number, 'nested lists or mappings are not supported in a list')
        else:
            end = index
            while end < len(text) and text[end] not in ',]':
                end += 1
            plain = text[index:end].rstrip(' ')
            if not plain or ' #' in plain:
                raise MiniYamlError(source, number, 'empty or commented list item; write [a, b]')
            item, rest = _plain(plain, source, number), text[end:]
        items.append(item)
        rest = rest.lstrip(' ')
        consumed = len(text) - len(rest)
        if rest.startswith(','):
            index = consumed + 1
        elif rest.startswith(']'):
            index = consumed
        elif not rest:
            raise MiniYamlError(source, number, 'unterminated list; close it with ] on the same line')
        else:
            raise MiniYamlError(source, number, 'expected "," or "]" in the list')


def _plain(text, source, number):
    """Resolve a plain scalar the way PyYAML's safe loader would, or raise MiniYamlError."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if '\t' in text:
        raise MiniYamlError(source, number, 'tab in the value {0!r}; use spaces or quote it'.format(text))
    first = text[0]
    if first in '&*':
        raise MiniYamlError(source, number, 'anchors and aliases ({0!r}) are outside the supported subset; write '
                                            'the value out or quote it'.format(text))
    if first in '!|>%@`{}],' or (first in '-?:' and (len(text) == 1 or text[1] == ' ')):
        raise MiniYamlError(source, number, 'value {0!r} uses YAML syntax outside the supported subset; '
                                            'quote it'.format(text))
    if ': ' in text or text.endswith(':'):
        raise MiniYamlError(source, number, 'value {0!r} contains ": "; quote it'.format(text))
    body = text[1:] if first in '+-' else text
    if body[:1].isdigit() or (body[:1] == '.' and body[1:2].isdigit()) or body.lower() in ('.inf', '.nan'):
        number_value = _number(text, body)
        if number_value is None:
            raise MiniYamlError(source, number, 'value {0!r} is an ambiguous number or date in YAML; write a '
                                                'plain decimal number or quote it'.format(text))
        return number_value
    return text


def _number(text, body):
    if body.isdigit() and body.isascii() and (body == '0' or body[0] != '0'):
        return int(text)
    mantissa, e, exponent = body.partition('e') if 'e' in body else body.partition('E')
    whole, dot, fraction = mantissa.partition('.')
    if not dot or (whole and not (whole.isdigit() and whole.isascii())):
        return None
    if fraction and not (fraction.isdigit() and fraction.isascii()):
        return None
    if not whole and (not fraction or text[0] in '+-'):  # YAML 1.1 reads -.5 as a string
        return None
    if e and not (exponent[:1] in '+-' and exponent[1:].isdigit() and exponent[1:].isascii()):
        return None
    return float(text)
