"""Exact, faster forms of regular-expression tests, for CPython's engine (`re`).

A long case-insensitive alternation of words is slow to search for: at every position of the text the
engine tries each alternative in full (it turns a plain-letter alternative away after testing one
character, but not a case-insensitive one). Two rewrites of a compiled pattern give the same answers
with less work:

- `guarded(pattern)`: the pattern with, before each alternation, a look-ahead of the characters its
  alternatives can start with, so that a position where none can start costs one character test;
- `ends_with(pattern)`: for a pattern anchored at the end (`$`), its reversed form matched once at the
  start of the reversed text, instead of a search that tries every position.

Both rewrite the pattern as `re`'s own parser reads it (flags, case folding and all), and fall back to
the plain pattern when this Python's internals differ. tests/scrapers/test_product_fast_paths.py checks
them against the patterns they stand for.
"""

from __future__ import annotations

import re
from typing import Any, Callable

try:  # CPython's regular-expression parser and compiler
    from re import _compiler as _sre_compile, _constants as _sre_c, _parser as _sre_parse
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_compile as _sre_compile  # type: ignore[no-redef]
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

__all__ = ["guarded", "ends_with"]

_REPEATS = (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT)


def _first_chars(data) -> tuple[list | None, bool]:
    """(character-set items that a match of the parsed sequence `data` can start with, or None when that
    is not a plain set; whether `data` can match the empty string)."""
    out: list = []
    for op, av in data:
        if op is _sre_c.LITERAL:
            out.append((op, av))
            return out, False
        if op is _sre_c.IN:
            if any(o is _sre_c.NEGATE for o, _ in av):
                return None, False
            out.extend(av)
            return out, False
        if op is _sre_c.BRANCH:
            subs = [_first_chars(alt.data) for alt in av[1]]
        elif op is _sre_c.SUBPATTERN:
            if av[1] or av[2]:
                return None, False  # (?i:...) / (?-i:...): its letters do not compare as the look-ahead's
            subs = [_first_chars(av[3].data)]
        elif op in _REPEATS:
            first, empty = _first_chars(av[2].data)
            subs = [(first, empty or av[0] == 0)]
        elif op is _sre_c.AT or op is _sre_c.ASSERT or op is _sre_c.ASSERT_NOT:
            continue  # matches no character: the next item's first one is the match's (a look-around
            # only narrows what matches, so leaving it out keeps every possible first character)
        else:
            return None, False  # any character, a negated one, a back-reference...
        if any(first is None for first, _ in subs):
            return None, False
        for first, _ in subs:
            out.extend(first)
        if not any(empty for _, empty in subs):
            return out, False
    return out, True


def _guard(sub) -> Any:
    """The parsed pattern `sub` with, before each alternation that cannot match the empty string, a
    look-ahead of the characters its alternatives can start with. The look-ahead fails only where the
    alternation would, and matches nothing itself: same matches, same groups. Compiled with the pattern's
    flags, it compares letters exactly as the alternatives do (case folding included)."""
    out = []
    for op, av in sub.data:
        if op is _sre_c.BRANCH:
            av = (av[0], [_guard(alt) for alt in av[1]])
            first, empty = _first_chars([(op, av)])
            if first is not None and not empty:
                out.append((_sre_c.ASSERT, (1, _sre_parse.SubPattern(sub.state, [(_sre_c.IN, first)]))))
        elif op is _sre_c.SUBPATTERN:
            av = (av[0], av[1], av[2], _guard(av[3]))
        elif op in _REPEATS:
            av = (av[0], av[1], _guard(av[2]))
        elif op is _sre_c.ASSERT or op is _sre_c.ASSERT_NOT:
            av = (av[0], _guard(av[1]))
        out.append((op, av))
    return _sre_parse.SubPattern(sub.state, out)


def guarded(pattern: re.Pattern) -> re.Pattern:
    """`pattern` with a look-ahead before each alternation (`_guard`): the same matches and groups from
    `search`, `match`, `finditer`... (The compiled object has no `.pattern` text.)"""
    try:
        return _sre_compile.compile(_guard(_sre_parse.parse(pattern.pattern, pattern.flags)), pattern.flags)
    except Exception:  # pragma: no cover - another Python's internals
        return pattern


def _reversed_pattern(state, data) -> Any:
    """The parsed pattern `data` read right to left (look-behinds become look-aheads and back)."""
    out = []
    for op, av in reversed(data):
        if op is _sre_c.BRANCH:
            av = (av[0], [_reversed_pattern(state, alt.data) for alt in av[1]])
        elif op is _sre_c.SUBPATTERN:
            av = (av[0], av[1], av[2], _reversed_pattern(state, av[3].data))
        elif op is _sre_c.MAX_REPEAT or op is _sre_c.MIN_REPEAT:
            av = (av[0], av[1], _reversed_pattern(state, av[2].data))
        elif op is _sre_c.ASSERT or op is _sre_c.ASSERT_NOT:
            av = (-av[0], _reversed_pattern(state, av[1].data))
        elif op is _sre_c.AT:
            if av is not _sre_c.AT_BOUNDARY and av is not _sre_c.AT_NON_BOUNDARY:
                raise ValueError("anchor inside the pattern")
        elif op not in (_sre_c.LITERAL, _sre_c.NOT_LITERAL, _sre_c.IN, _sre_c.ANY):
            raise ValueError(f"cannot reverse {op}")
        out.append((op, av))
    return _sre_parse.SubPattern(state, out)


def ends_with(pattern: re.Pattern) -> Callable[[str], bool]:
    """`lambda s: pattern.search(s) is not None` for a pattern that ends in `$` (not MULTILINE), matched
    backwards; the plain search when the pattern has something this cannot reverse."""
    search = pattern.search
    try:
        if pattern.flags & re.MULTILINE:
            raise ValueError("multi-line")
        parsed = _sre_parse.parse(pattern.pattern, pattern.flags)
        if not parsed.data or parsed.data[-1] != (_sre_c.AT, _sre_c.AT_END):
            raise ValueError("not anchored at the end")
        rev = _reversed_pattern(parsed.state, parsed.data[:-1])
        # `$` also matches right before a newline that ends the text
        newline = _sre_parse.SubPattern(parsed.state, [(_sre_c.LITERAL, 10)])
        rev.data.insert(0, (_sre_c.MAX_REPEAT, (0, 1, newline)))
        match = _sre_compile.compile(_guard(rev), pattern.flags).match
    except Exception:  # pragma: no cover - another Python's internals
        return lambda s: search(s) is not None
    return lambda s: match(s[::-1]) is not None
