"""Scorers: an answer (free text, or None when the run gave none) against the expected value → 0..1."""

# exact    normalised text equality (case, surrounding quotes/markup, a trailing full stop, an
#          "Answer:" prefix and thousands separators do not matter)
# numeric  the number in the answer; partial credit 0.75 ** |answer - expected| (OOLONG's rule)
# label    exact on the normalised label (hyphens, underscores and spaces are the same)
# set_f1   F1 between the pairs found in the answer and the expected pairs (order inside a pair and
#          between pairs does not matter)
# contains the normalised expected text occurs in the normalised answer

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

_PREFIX = re.compile(r"^(?:final\s+answer|answer|the\s+answer\s+is)\s*[:=\-]?\s*", re.IGNORECASE)
_WRAP = "\"'`*_“”‘’«» \t\n"


def normalise(text: Any) -> str:
    """Lower-case, collapsed whitespace, without markup, quotes, a leading "Answer:" or a final '.'."""
    s = str(text if text is not None else "").strip()
    s = _PREFIX.sub("", s.strip(_WRAP))
    s = s.strip(_WRAP).rstrip(".!").strip(_WRAP)
    s = re.sub(r"\s+", " ", s).lower()
    if re.fullmatch(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):    # 1,234 → 1234
        s = s.replace(",", "")
    return s


def exact(answer: str | None, expected: Any) -> float:
    if answer is None:
        return 0.0
    return 1.0 if normalise(answer) == normalise(expected) else 0.0


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"(?<![\w.])[+-]?\d+(?:,\d{3})*(?:\.\d+)?(?![\w])")


def parse_number(text: str) -> float | None:
    """The answer's number: the whole answer when it is one, else the last number that is not part
    of a date (models tend to restate the question's dates before the result)."""
    s = normalise(text)
    try:
        return float(s)
    except ValueError:
        pass
    found = _NUMBER.findall(_DATE.sub(" ", s))
    if not found:
        return None
    return float(found[-1].replace(",", ""))


def numeric(answer: str | None, expected: Any) -> float:
    if answer is None:
        return 0.0
    got = parse_number(answer)
    want = float(str(expected).replace(",", ""))
    if got is None:
        return 0.0
    return 0.75 ** abs(got - want)


def _label_norm(text: Any) -> str:
    return re.sub(r"[\s_-]+", "-", normalise(text))


def label(answer: str | None, expected: Any) -> float:
    if answer is None:
        return 0.0
    return 1.0 if _label_norm(answer) == _label_norm(expected) else 0.0


def contains(answer: str | None, expected: Any) -> float:
    if answer is None:
        return 0.0
    want = normalise(expected)
    return 1.0 if want and want in re.sub(r"\s+", " ", str(answer)).lower() else 0.0


def _shape(token: str) -> str:
    """A regex matching tokens shaped like ``token``: 'P-123456' → '[A-Za-z]-\\d{6}'."""
    out = []
    for run in re.finditer(r"[A-Za-z]+|\d+|.", token):
        t = run.group()
        if t.isalpha():
            out.append(f"[A-Za-z]{{{len(t)}}}")
        elif t.isdigit():
            out.append(f"\\d{{{len(t)}}}")
        else:
            out.append(re.escape(t))
    return "".join(out)


def parse_pairs(text: str, like: Iterable[str]) -> set[frozenset[str]]:
    """Pairs of ids in free text. Ids are recognised by the shape of the expected ones; a pair is
    two ids inside one bracket group, else two ids on one line (a line with more ids is read
    as consecutive pairs)."""
    shapes = sorted({_shape(t) for t in like}, key=len, reverse=True)
    if not shapes:
        shapes = [r"[A-Za-z]+-\d+"]
    token = re.compile(r"(?<![\w-])(?:" + "|".join(shapes) + r")(?![\w-])")
    found: set[frozenset[str]] = set()
    groups = re.findall(r"[(\[{]([^()\[\]{}]*)[)\]}]", text)
    lines = groups if any(len(token.findall(g)) == 2 for g in groups) else text.splitlines()
    for line in lines:
        ids = [t.upper() for t in token.findall(line)]
        for i in range(0, len(ids) - 1, 2):
            if ids[i] != ids[i + 1]:
                found.add(frozenset((ids[i], ids[i + 1])))
    return found


def set_f1(answer: str | None, expected: Any) -> float:
    want = {frozenset(str(t).upper() for t in p) for p in expected}
    if answer is None:
        return 0.0
    got = parse_pairs(answer, [str(t) for p in expected for t in p])
    if not want and not got:
        return 1.0
    hit = len(want & got)
    if hit == 0:
        return 0.0
    precision, recall = hit / len(got), hit / len(want)
    return 2 * precision * recall / (precision + recall)


SCORERS: dict[str, Callable[[str | None, Any], float]] = {
    "exact": exact, "numeric": numeric, "label": label, "set_f1": set_f1, "contains": contains}


def score(name: str, answer: str | None, expected: Any) -> float:
    """Score with the scorer called ``name`` (KeyError names the known ones)."""
    try:
        fn = SCORERS[name]
    except KeyError:
        raise KeyError(f"unknown scorer {name!r}: choose from {', '.join(SCORERS)}") from None
    return float(fn(answer, expected))
