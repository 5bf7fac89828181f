"""Scorers on known right, wrong and near answers."""

from __future__ import annotations

import pytest

from rlm_desktop.evaluation.scorers import parse_number, parse_pairs, score


@pytest.mark.parametrize("answer", ["5285113", " 5285113. ", "**5285113**", "Answer: 5285113",
                                    "`5285113`", "5,285,113", '"5285113"'])
def test_exact_right(answer: str) -> None:
    assert score("exact", answer, "5285113") == 1.0


@pytest.mark.parametrize("answer", ["5285114", "The number is 5285113", "", None, "52851130"])
def test_exact_wrong(answer: str | None) -> None:
    assert score("exact", answer, "5285113") == 0.0


def test_exact_text_ignores_case_and_spaces() -> None:
    assert score("exact", "  krakow\n", "Krakow") == 1.0
    assert score("exact", "Oslo", "Krakow") == 0.0


def test_numeric_partial_credit_is_075_to_the_distance() -> None:
    assert score("numeric", "42", "42") == 1.0
    assert score("numeric", "41", "42") == pytest.approx(0.75)
    assert score("numeric", "There are 45 records.", "42") == pytest.approx(0.75 ** 3)
    assert score("numeric", "Between 2023-01-05 and 2023-03-01 there were 40", 42) == pytest.approx(0.5625)
    assert score("numeric", "1,042", "1042") == 1.0
    assert score("numeric", "none of them", "3") == 0.0
    assert score("numeric", None, "3") == 0.0
    assert score("numeric", "0", "100") < 1e-12


def test_parse_number_skips_dates() -> None:
    assert parse_number("From 2023-01-01 to 2023-02-01: 17 records") == 17.0
    assert parse_number("no digits") is None


def test_label() -> None:
    assert score("label", "'Bug-Report'", "bug-report") == 1.0
    assert score("label", "bug report", "bug-report") == 1.0
    assert score("label", "billing", "bug-report") == 0.0
    assert score("label", "billing or refund", "billing") == 0.0


def test_contains() -> None:
    assert score("contains", "The launch is on March 3, per the report.", "march 3") == 1.0
    assert score("contains", "The launch is in April.", "March 3") == 0.0
    assert score("contains", None, "x") == 0.0


EXPECTED = [["P-111111", "P-222222"], ["P-333333", "P-444444"], ["P-333333", "P-555555"],
            ["P-444444", "P-555555"]]


@pytest.mark.parametrize("answer", [
    "(P-111111, P-222222)\n(P-333333, P-444444)\n(P-333333, P-555555)\n(P-444444, P-555555)",
    "Pairs: [P-222222, P-111111], [P-444444, P-333333], [P-555555, P-333333], [P-555555, P-444444].",
    "- P-111111 and P-222222\n- P-333333 and P-444444\n- P-333333 & P-555555\n- P-444444 / P-555555",
    "p-111111,p-222222\np-333333,p-444444\np-333333,p-555555\np-444444,p-555555",
])
def test_set_f1_right_in_any_reasonable_format(answer: str) -> None:
    assert score("set_f1", answer, EXPECTED) == 1.0


def test_set_f1_near_and_wrong() -> None:
    half = "(P-111111, P-222222)\n(P-333333, P-444444)"                 # P = 1, R = 1/2
    assert score("set_f1", half, EXPECTED) == pytest.approx(2 / 3)
    extra = half + "\n(P-333333, P-555555)\n(P-444444, P-555555)\n(P-111111, P-999999)"   # P=4/5, R=1
    assert score("set_f1", extra, EXPECTED) == pytest.approx(2 * 0.8 / 1.8)
    assert score("set_f1", "(P-123456, P-654321)", EXPECTED) == 0.0
    assert score("set_f1", "I found no pairs.", EXPECTED) == 0.0
    assert score("set_f1", None, EXPECTED) == 0.0
    assert score("set_f1", "none", []) == 1.0


def test_parse_pairs_ignores_other_numbers() -> None:
    got = parse_pairs("Found 2 pairs in 2023: (P-111111, P-222222)", ["P-000000"])
    assert got == {frozenset({"P-111111", "P-222222"})}


def test_unknown_scorer() -> None:
    with pytest.raises(KeyError, match="choose from"):
        score("fuzzy", "a", "a")
