"""A small reader of Nuke scripts (.nk) for the tests: nodes in order, each a dict of knob -> value,
values parsed into numbers, strings, lists and animation curves ({frame: value})."""

from __future__ import annotations

import re

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([{}])|([^\s{}"]+)')


def _tokens(text: str):
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            yield ("str", m.group(1))
        elif m.group(2):
            yield ("brace", m.group(2))
        else:
            yield ("word", m.group(3))


def _number(word: str):
    try:
        return float(word)
    except ValueError:
        return word


def _parse(tokens: list, i: int):
    """One value starting at tokens[i] -> (value, next index)."""
    kind, text = tokens[i]
    if kind == "brace" and text == "{":
        items, i = [], i + 1
        while tokens[i] != ("brace", "}"):
            item, i = _parse(tokens, i)
            items.append(item)
        if items and items[0] == "curve":
            return _curve(items[1:]), i + 1
        return items, i + 1
    return (text if kind == "str" else _number(text)), i + 1


def _curve(items: list) -> dict:
    keys, frame = {}, None
    for item in items:
        if isinstance(item, str) and item.startswith("x"):
            frame = float(item[1:])
        else:
            keys[frame] = float(item)
            frame += 1
    return keys


def read_nk(text: str) -> list[tuple[str, dict]]:
    """``[(class, {knob: value})]`` in file order; ``set``/``push``/``version`` lines are left out."""
    nodes, current = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if current is None:
            m = re.match(r"^(\w+) \{$", stripped)
            if m:
                current = (m.group(1), {})
            continue
        if stripped == "}":
            nodes.append(current)
            current = None
            continue
        knob, _, rest = stripped.partition(" ")
        tokens = list(_tokens(rest))
        value, end = _parse(tokens, 0)
        assert end == len(tokens), f"unparsed text in {line!r}"
        current[1][knob] = value
    assert current is None, "a node is not closed"
    return nodes


def value_at(knob, frame: float) -> float:
    """A knob component at a frame: a constant, or a curve's key."""
    return knob[float(frame)] if isinstance(knob, dict) else float(knob)
