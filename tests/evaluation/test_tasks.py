"""Generated tasks: deterministic for a seed, the right size, and their expected answers right —
checked by re-reading the generated text (tests/evaluation/solvers.py), not the generator's records."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlm_desktop.evaluation.scorers import SCORERS, score
from rlm_desktop.evaluation.tasks import (
    GENERATED_TASKS,
    TaskError,
    format_size,
    generate,
    load_questions,
    parse_size,
)
from tests.evaluation.solvers import solve


@pytest.mark.parametrize("task", GENERATED_TASKS)
def test_same_seed_same_items_other_seed_other_items(task: str) -> None:
    a = generate(task, 8_000, 0, seed=7)
    b = generate(task, 8_000, 0, seed=7)
    c = generate(task, 8_000, 0, seed=8)
    assert (a.context, a.question, a.expected) == (b.context, b.question, b.expected)
    assert a.context != c.context
    assert generate(task, 8_000, 1, seed=7).context != a.context      # items differ from each other


@pytest.mark.parametrize("task", GENERATED_TASKS)
@pytest.mark.parametrize("size", [8_000, 64_000, 300_000])
def test_expected_answer_is_what_the_text_says(task: str, size: int) -> None:
    for index in range(4):                # aggregate rotates count / compare / rank / top user
        item = generate(task, size, index, seed=3)
        assert 0.85 * size <= item.chars <= 1.15 * size, (item.chars, size)
        answer = solve(item.question, item.context)
        assert score(item.scorer, answer, item.expected) == 1.0, (item.question, answer, item.expected)
        assert re.search(r"Answer with (the|one)", item.question), "the question says how to answer"


def test_aggregate_covers_count_compare_and_rank_with_real_counts() -> None:
    items = [generate("aggregate", 64_000, i, seed=1) for i in range(4)]
    assert [it.scorer for it in items] == ["numeric", "label", "label", "exact"]
    assert "Which user has the most records" in items[3].question
    lines = re.findall(r"^\d{4}-\d{2}-\d{2} \| record \d+ \| user \d+ \| label: ([\w-]+) \|",
                       items[0].context, re.M)
    assert len(lines) > 500                             # hundreds of records at 64k, thousands beyond
    assert len(set(lines)) == 8                         # a fixed vocabulary of labels
    assert int(items[0].expected) == int(solve(items[0].question, items[0].context))


def test_needle_has_distractors_and_one_planted_fact() -> None:
    item = generate("needle", 64_000, 0, seed=5)
    facts = re.findall(r"The magic number for ([\w-]+) is (\d+)\.", item.context)
    assert len(facts) == 5 and len({k for k, _ in facts}) == 5
    key = re.search(r"for ([\w-]+)\?", item.question).group(1)
    assert [v for k, v in facts if k == key] == [item.expected]


def test_multidoc_needs_two_different_files() -> None:
    item = generate("multidoc", 64_000, 2, seed=4)
    assert isinstance(item.context, dict) and len(item.context) >= 4
    person = re.search(r"team of (\w+ \w+) based", item.question).group(1)
    person_files = [p for p, t in item.context.items() if f"{person} has moved to" in t]
    team = re.search(re.escape(person) + r" has moved to the (\w+) team", item.context[person_files[0]]).group(1)
    team_files = [p for p, t in item.context.items() if f"The {team} team is based in" in t]
    assert len(person_files) == 1 and len(team_files) == 1 and person_files != team_files


def test_pairs_answer_is_a_set_of_pairs() -> None:
    item = generate("pairs", 64_000, 0, seed=2)
    assert item.scorer == "set_f1" and 2 <= len(item.expected) <= 9
    assert all(a < b for a, b in item.expected)


def test_sizes_parse_and_print() -> None:
    assert [parse_size(s) for s in ("8k", "64K", "1m", "10M", "12345", "1.5m")] == [
        8_000, 64_000, 1_000_000, 10_000_000, 12_345, 1_500_000]
    assert [format_size(n) for n in (8_000, 1_000_000, 65_536)] == ["8k", "1M", "65.5k"]
    for bad in ("8q", "", "0", "-5k", "1000m"):
        with pytest.raises(TaskError):
            parse_size(bad)


def test_unknown_task_is_a_clear_error() -> None:
    with pytest.raises(TaskError, match="choose from"):
        generate("haystack", 8_000, 0, 0)


def test_questions_file_lines_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "Who?", "answer": "Ada"}\n\n# comment\n'
                 '{"question": "How many?", "answer": 3, "scorer": "numeric"}\n')
    qs = load_questions(f, SCORERS)
    assert [(q.question, q.answer, q.scorer) for q in qs] == [("Who?", "Ada", "contains"),
                                                              ("How many?", "3", "numeric")]
    f.write_text('{"question": "Who?", "answer": "Ada"}\nnot json\n')
    with pytest.raises(TaskError, match=r"q.jsonl:2: not JSON"):
        load_questions(f, SCORERS)
    f.write_text(json.dumps({"question": "Who?", "answer": "x", "scorer": "fuzzy"}) + "\n")
    with pytest.raises(TaskError, match="unknown scorer 'fuzzy'"):
        load_questions(f, SCORERS)
    f.write_text(json.dumps({"answer": "x"}) + "\n")
    with pytest.raises(TaskError, match='needs "question"'):
        load_questions(f, SCORERS)
