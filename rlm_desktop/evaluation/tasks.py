"""Evaluation tasks: seeded generators of long contexts with exact answers, and the user's own folder.

Every generated item is a pure function of (seed, task, size, index): the same flags give the same
contexts, questions and answers on any machine. Sizes are in characters. Each question says how
to format the answer, so the scorer can be strict without being unfair.
"""

# needle     S-NIAH style: one "magic number" fact in generated prose, plus distractor facts with
#            other keys; exact match.
# aggregate  OOLONG-synth style: dated, labelled records; count (numeric, 0.75^|Δ|), compare and
#            rank (label exact) over a date range, and the top user of a label (exact).
# pairs      OOLONG-Pairs style: people with locker codes; the pairs sharing a code; set F1.
# multidoc   memos in a folder; who works where needs the person's team (one memo) and the team's
#            city (another memo).
# docs       a user folder + a JSONL file of {"question", "answer", "scorer"?}.

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

GENERATED_TASKS = ("needle", "aggregate", "pairs", "multidoc")
TASKS = (*GENERATED_TASKS, "docs")
MIN_SIZE = 1_000
MAX_SIZE = 100_000_000


class TaskError(ValueError):
    """A task cannot be built from what was given; the message says what to change."""


@dataclass(frozen=True)
class Item:
    """One question over one context. ``size`` is the requested size (the row it belongs to);
    ``chars`` what the context really holds."""

    task: str
    size: int
    index: int
    context: str | dict[str, str] = field(repr=False)
    question: str
    expected: Any                       # str, or a list of [a, b] pairs for set_f1
    scorer: str

    @property
    def chars(self) -> int:
        if isinstance(self.context, str):
            return len(self.context)
        return sum(len(v) for v in self.context.values())


def parse_size(text: str) -> int:
    """'8k' → 8,000; '1m' / '1M' → 1,000,000; '65536' → 65,536 (characters)."""
    s = text.strip().lower().replace("_", "").replace(",", "")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)", s)
    if not m:
        raise TaskError(f"size {text!r} is not a size: write e.g. 8k, 64k, 1m or a number of characters")
    n = int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2)])
    if not MIN_SIZE <= n <= MAX_SIZE:
        raise TaskError(f"size {text!r} is out of range: use {MIN_SIZE:,} to {MAX_SIZE:,} characters")
    return n


def format_size(n: int) -> str:
    """8000 → '8k', 1000000 → '1M', 65536 → '65.5k'."""
    if n >= 1_000_000:
        v, unit = n / 1_000_000, "M"
    elif n >= 1_000:
        v, unit = n / 1_000, "k"
    else:
        return str(n)
    return f"{v:.1f}".rstrip("0").rstrip(".") + unit


def _rng(seed: int, task: str, size: int, index: int) -> random.Random:
    # A string seed is hashed with SHA-512 by random.seed: stable across runs and platforms.
    return random.Random(f"rlm-eval:{seed}:{task}:{size}:{index}")


# -- prose ----------------------------------------------------------------------------------------

_SUBJECTS = ("The committee", "A visiting engineer", "The old harbour", "Our quarterly review",
             "The northern warehouse", "A junior analyst", "The river barge", "The night shift",
             "The regional office", "A careful auditor", "The weather station", "The library board",
             "The design team", "A delivery driver", "The village council", "The orchard manager")
_VERBS = ("noted", "reported", "observed", "suggested", "confirmed", "questioned", "described",
          "recorded", "discussed", "mentioned", "reviewed", "summarised")
_OBJECTS = ("a slow rise in costs", "the late arrival of spare parts", "an unusual amount of rain",
            "the new seating plan", "several gaps in the inventory", "a quiet week on the docks",
            "the cost of heating the hall", "a change in the ferry timetable", "the broken gate latch",
            "a fresh coat of paint on the tower", "the draft budget for spring", "two missing invoices",
            "the lighting in the east wing", "a modest gain in visitors", "the state of the roads")
_TAILS = ("before the meeting ended", "after a long discussion", "without much surprise",
          "in the monthly letter", "during the morning walk-through", "as expected", "once again",
          "for the second time this year", "with some concern", "in plain terms", "at the last minute",
          "to nobody's great interest")


def _sentence_pool(rng: random.Random, n: int = 600) -> list[str]:
    return [f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TAILS)}."
            for _ in range(n)]


def _prose_sentences(rng: random.Random, chars: int) -> list[str]:
    """Sentences of generated prose adding up to about ``chars`` characters (with separators)."""
    pool = _sentence_pool(rng)
    mean = sum(len(s) + 1 for s in pool) / len(pool)
    out = rng.choices(pool, k=max(1, int(chars / mean)))
    total = sum(len(s) + 1 for s in out)
    while total < chars:          # top up the last few characters
        s = rng.choice(pool)
        out.append(s)
        total += len(s) + 1
    return out


def _join_prose(sentences: list[str], rng: random.Random) -> str:
    """Sentences into paragraphs of 4–9 sentences."""
    parts: list[str] = []
    i = 0
    while i < len(sentences):
        n = rng.randint(4, 9)
        parts.append(" ".join(sentences[i:i + n]))
        i += n
    return "\n\n".join(parts)


_ADJ = ("amber", "brisk", "cobalt", "dusty", "eager", "frosty", "gentle", "hollow", "ivory", "jolly",
        "keen", "lunar", "misty", "noble", "olive", "proud", "quiet", "rusty", "silver", "tidy",
        "upper", "velvet", "windy", "young", "zesty")
_NOUN = ("anchor", "badger", "canyon", "dahlia", "ember", "falcon", "garnet", "harbor", "island",
         "juniper", "kestrel", "lantern", "meadow", "nutmeg", "orchid", "pepper", "quarry", "raven",
         "saddle", "thistle", "umber", "valley", "willow", "yarrow", "zephyr")


# -- needle ---------------------------------------------------------------------------------------

NEEDLE_DISTRACTORS = 4


def needle(size: int, index: int, seed: int) -> Item:
    rng = _rng(seed, "needle", size, index)
    keys = rng.sample([f"{a}-{n}" for a in _ADJ for n in _NOUN], NEEDLE_DISTRACTORS + 1)
    numbers = rng.sample(range(1_000_000, 10_000_000), len(keys))
    facts = [f"The magic number for {k} is {v}." for k, v in zip(keys, numbers, strict=True)]
    sentences = _prose_sentences(rng, size - sum(len(f) + 1 for f in facts))
    for fact in facts:
        sentences.insert(rng.randint(0, len(sentences)), fact)
    context = _join_prose(sentences, rng)
    return Item("needle", size, index, context,
                f"What is the magic number for {keys[0]}? Answer with the number only.",
                str(numbers[0]), "exact")


# -- aggregate ------------------------------------------------------------------------------------

LABELS = ("billing", "delivery", "refund", "praise", "bug-report", "account", "feature-request",
          "security")
_LABEL_WEIGHTS = (14, 11, 9, 8, 7, 5, 4, 2)
FIRST_DAY = date(2023, 1, 1)
DAYS = 730
_NOTES = ("customer wrote in", "follow-up needed", "resolved by phone", "escalated once",
          "closed without reply", "waiting on the warehouse", "second message", "sent a photo",
          "asked for a call back", "left a short note")
AGGREGATE_HEADER = "Support log. One record per line: date | record id | user | label | note\n"


def _records(rng: random.Random, size: int) -> list[tuple[date, int, int, str, str]]:
    est = max(20, (size - len(AGGREGATE_HEADER)) // 77)
    ids = rng.sample(range(100_000, 1_000_000), est)
    users = rng.sample(range(1000, 10000), min(9000, max(20, est // 15)))   # ~15 records per user
    days = sorted(rng.randrange(DAYS) for _ in range(est))
    return [(FIRST_DAY + timedelta(days=d), ids[i], rng.choice(users),
             rng.choices(LABELS, _LABEL_WEIGHTS)[0], rng.choice(_NOTES)) for i, d in enumerate(days)]


def _record_line(r: tuple[date, int, int, str, str]) -> str:
    return f"{r[0].isoformat()} | record {r[1]} | user {r[2]} | label: {r[3]} | {r[4]}"


def aggregate(size: int, index: int, seed: int) -> Item:
    rng = _rng(seed, "aggregate", size, index)
    records = _records(rng, size)
    context = AGGREGATE_HEADER + "\n".join(_record_line(r) for r in records) + "\n"
    kind = ("count", "compare", "rank", "user")[index % 4]
    if kind == "user":        # rank over a label: the user with the most records of it
        for label in rng.sample(LABELS, len(LABELS)):
            per_user: dict[int, int] = {}
            for r in records:
                if r[3] == label:
                    per_user[r[2]] = per_user.get(r[2], 0) + 1
            ranked_users = sorted(per_user.items(), key=lambda kv: -kv[1])
            if len(ranked_users) > 1 and ranked_users[0][1] > ranked_users[1][1]:
                return Item("aggregate", size, index, context,
                            f"Which user has the most records with the label '{label}' (any date)? "
                            "Answer with the user number only.", str(ranked_users[0][0]), "exact")
        kind = "count"        # every label tied at the top: ask a count instead
    for _ in range(200):      # pick a range (and labels) whose answer is well defined
        start = rng.randrange(DAYS - 30)
        end = min(DAYS - 1, start + rng.randint(30, 365))
        d1, d2 = FIRST_DAY + timedelta(days=start), FIRST_DAY + timedelta(days=end)
        counts = {lab: 0 for lab in LABELS}
        for r in records:
            if d1 <= r[0] <= d2:
                counts[r[3]] += 1
        span = f"dated from {d1.isoformat()} to {d2.isoformat()} (both days included)"
        if kind == "count":
            label = rng.choice(LABELS)
            return Item("aggregate", size, index, context,
                        f"How many records with the label '{label}' are {span}? "
                        "Answer with the number only.", str(counts[label]), "numeric")
        if kind == "compare":
            a, b = rng.sample(LABELS, 2)
            if counts[a] != counts[b]:
                return Item("aggregate", size, index, context,
                            f"Among the records {span}, which label occurs more often: '{a}' or "
                            f"'{b}'? Answer with the label only.",
                            a if counts[a] > counts[b] else b, "label")
        else:
            ranked = sorted(counts.items(), key=lambda kv: -kv[1])
            if ranked[0][1] > ranked[1][1]:
                return Item("aggregate", size, index, context,
                            f"Which label is the most common among the records {span}? "
                            "Answer with the label only.", ranked[0][0], "label")
    raise TaskError(f"aggregate: no unambiguous question at size {size:,} (try a larger size)")


# -- pairs ----------------------------------------------------------------------------------------

_FIRST = ("Ada", "Bruno", "Chen", "Dana", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira",
          "Liam", "Maya", "Nils", "Olga", "Pavel", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen")
_LAST = ("Abbott", "Berg", "Castro", "Dietz", "Evans", "Fischer", "Gomez", "Holm", "Ito", "Jensen",
         "Kovac", "Lund", "Moreau", "Novak", "Okafor", "Petit", "Quinn", "Rossi", "Silva", "Tanaka")
_CITIES = ("Lisbon", "Oslo", "Krakow", "Porto", "Ghent", "Turin", "Bergen", "Leeds", "Lyon", "Graz",
           "Aarhus", "Malmo")
PAIRS_HEADER = "Member register. One person per line: id | name | city | locker code\n"


def _locker(rng: random.Random) -> str:
    return "".join(rng.choices("ABCDEFGHJKLMNPQRSTUVWXYZ", k=2)) + f"{rng.randrange(10_000):04d}"


def pairs(size: int, index: int, seed: int) -> Item:
    rng = _rng(seed, "pairs", size, index)
    n = max(12, (size - len(PAIRS_HEADER)) // 46)
    ids = rng.sample(range(100_000, 1_000_000), n)
    lockers: list[str] = []
    seen: set[str] = set()
    while len(lockers) < n:          # every locker code unique …
        code = _locker(rng)
        if code not in seen:
            seen.add(code)
            lockers.append(code)
    # … except in a few planted groups of 2 or 3 people sharing one.
    groups = [rng.choice((2, 2, 3)) for _ in range(rng.randint(2, 3))]
    members = rng.sample(range(n), sum(groups))
    expected: list[list[str]] = []
    at = 0
    for g in groups:
        group = members[at:at + g]
        at += g
        for i in group[1:]:
            lockers[i] = lockers[group[0]]
        names = sorted(f"P-{ids[i]}" for i in group)
        expected += [[a, b] for j, a in enumerate(names) for b in names[j + 1:]]
    lines = [f"P-{ids[i]} | {rng.choice(_FIRST)} {rng.choice(_LAST)} | {rng.choice(_CITIES)} | "
             f"locker {lockers[i]}" for i in range(n)]
    context = PAIRS_HEADER + "\n".join(lines) + "\n"
    return Item("pairs", size, index, context,
                "Some people in the register share a locker code. List every pair of people who "
                "have the same locker code. Answer with one pair per line, written as "
                "(P-123456, P-234567) with the smaller id first, and nothing else.",
                sorted(expected), "set_f1")


# -- multi-doc ------------------------------------------------------------------------------------

_TEAMS = ("Orion", "Lyra", "Vega", "Draco", "Cygnus", "Perseus", "Aquila", "Hydra", "Phoenix", "Carina")
MULTIDOC_FILE_CHARS = 4_000


def multidoc(size: int, index: int, seed: int) -> Item:
    rng = _rng(seed, "multidoc", size, index)
    n_files = max(4, min(2_000, size // MULTIDOC_FILE_CHARS))
    teams = rng.sample(_TEAMS, rng.randint(5, len(_TEAMS)))
    cities = rng.sample(_CITIES, len(teams))
    people = rng.sample([f"{f} {la}" for f in _FIRST for la in _LAST], min(40, 4 * len(teams)))
    facts: list[str] = [f"The {t} team is based in {c}." for t, c in zip(teams, cities, strict=True)]
    team_of = {p: rng.choice(teams) for p in people}
    facts += [f"{p} has moved to the {t} team." for p, t in team_of.items()]
    # Each fact lands in one memo; the asked person's move and their team's city in different ones.
    where = [rng.randrange(n_files) for _ in facts]
    person = people[0]
    pi = len(teams)                                   # index of the asked person's fact
    ti = teams.index(team_of[person])                 # index of their team's city fact
    while where[pi] == where[ti]:
        where[pi] = rng.randrange(n_files)
    per_file = max(200, (size - sum(len(f) + 1 for f in facts)) // n_files)
    context: dict[str, str] = {}
    for k in range(n_files):
        sentences = _prose_sentences(rng, per_file)
        for f, w in zip(facts, where, strict=True):
            if w == k:
                sentences.insert(rng.randint(0, len(sentences)), f)
        context[f"memos/memo-{k + 1:04d}.txt"] = f"Memo {k + 1}\n\n" + _join_prose(sentences, rng) + "\n"
    return Item("multidoc", size, index, context,
                f"In which city is the team of {person} based? Answer with the city name only.",
                cities[ti], "exact")


GENERATORS: dict[str, Callable[[int, int, int], Item]] = {
    "needle": needle, "aggregate": aggregate, "pairs": pairs, "multidoc": multidoc}


def generate(task: str, size: int, index: int, seed: int) -> Item:
    """Item ``index`` of ``task`` at ``size`` characters for ``seed``."""
    try:
        gen = GENERATORS[task]
    except KeyError:
        raise TaskError(f"unknown task {task!r}: choose from {', '.join(TASKS)}") from None
    return gen(size, index, seed)


# -- the user's own documents ---------------------------------------------------------------------

@dataclass(frozen=True)
class Question:
    question: str
    answer: Any
    scorer: str


DEFAULT_DOCS_SCORER = "contains"


def load_questions(path: Path, scorers: Collection[str]) -> list[Question]:
    """Read a JSONL file of {"question", "answer", "scorer"?}; a bad line raises TaskError naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskError(f"cannot read the questions file {path}: {exc.strerror or exc}") from None
    out: list[Question] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskError(f"{path}:{n}: not JSON ({exc.msg}); each line must be an object like "
                            '{"question": "…", "answer": "…"}') from None
        if not isinstance(obj, dict) or not str(obj.get("question") or "").strip() or "answer" not in obj:
            raise TaskError(f'{path}:{n}: each line needs "question" (text) and "answer"')
        scorer = str(obj.get("scorer") or DEFAULT_DOCS_SCORER)
        if scorer not in scorers:
            raise TaskError(f"{path}:{n}: unknown scorer {scorer!r}: choose from {', '.join(scorers)}")
        answer = obj["answer"]
        if scorer != "set_f1":
            answer = str(answer)
        out.append(Question(str(obj["question"]).strip(), answer, scorer))
    if not out:
        raise TaskError(f"{path} holds no questions: one JSON object per line, "
                        '{"question": "…", "answer": "…", "scorer": "exact"}')
    return out


def docs_items(context: str | dict[str, str], questions: list[Question], limit: int | None) -> list[Item]:
    size = len(context) if isinstance(context, str) else sum(len(v) for v in context.values())
    chosen = questions[:limit] if limit else questions
    return [Item("docs", size, i, context, q.question, q.answer, q.scorer) for i, q in enumerate(chosen)]

