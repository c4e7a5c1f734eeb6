"""A small, strict YAML-subset reader for the hookscript's hot path (no ``re``, no PyYAML).

The subset is what pve-hooks' config.yaml needs:

- nested block mappings by indentation (spaces only), plain keys;
- comments (whole-line, or after a value following a space);
- scalars: plain, 'single-quoted', "double-quoted" (common escapes);
- integers (``42``, ``-3``), decimal floats (``1.5``, ``2.0e+3``),
  true/false/yes/no/on/off, null/~ and an empty value;
- flow lists of scalars: ``[a, 'b', 3]``.

Anything else (block sequences ``- x``, anchors, tags, block scalars, flow
mappings, octal/hex/sexagesimal numbers, dates, duplicate keys, tabs in the
indentation) raises :class:`MiniYamlError` naming ``file:line`` and saying
to quote the value or simplify the file. Where the subset accepts a document
it reads it exactly as PyYAML's ``safe_load`` would (``pve-hooks config
check`` verifies that for a given file).
"""

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
    lines = []  # (line number, indent, key, value text or None)
    for number, raw in enumerate(text.split('\n'), 1):
        raw = raw.rstrip('\r')
        stripped = raw.lstrip(' ')
        if not stripped or stripped.startswith('#'):
            continue
        if stripped.startswith('\t') or (raw[:len(raw) - len(stripped)].count('\t')):
            raise MiniYamlError(source, number, 'tab in the indentation; indent with spaces')
        if number == 1 and stripped.rstrip() == '---' and raw.startswith('---'):
            continue
        key, value = _split_key(stripped, source, number)
        lines.append((number, len(raw) - len(stripped), key, value))
    if not lines:
        return {}
    if lines[0][1] != 0:
        raise MiniYamlError(source, lines[0][0], 'the first key must not be indented')
    mapping, index = _block(lines, 0, 0, source)
    if index != len(lines):
        raise MiniYamlError(source, lines[index][0], 'bad indentation; align keys of one section')
    return mapping


def load_file(path):
    """Return the mapping in the YAML file ``path``; raise OSError or MiniYamlError."""
    with open(path, 'rb') as stream:
        data = stream.read()
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b'\n') + 1
        raise MiniYamlError(path, line, 'not UTF-8 text; save the file as UTF-8')
    return loads(text, path)


def _block(lines, index, indent, source):
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
                mapping[key], index = _block(lines, index, lines[index][1], source)
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
    first = text[0]
    if first in '&*!|>%@`{}],' or (first in '-?:' and (len(text) == 1 or text[1] == ' ')):
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
    if not whole and not fraction:
        return None
    if e and not (exponent[:1] in '+-' and exponent[1:].isdigit() and exponent[1:].isascii()):
        return None
    return float(text)
