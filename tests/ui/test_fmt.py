"""How steps are named and numbers are shown in the window."""

from __future__ import annotations

import pytest

from rlm_desktop.core.trace import Attr, SpanKind, Trace
from rlm_desktop.ui import fmt


@pytest.mark.parametrize(("code", "hint"), [
    ("# Count late deliveries per supplier\nimport csv\nrows = list(csv.reader(context))", "Count late deliveries per supplier"),
    ("import re\nfrom collections import Counter\n\nhits = re.findall('late', context)", "hits = re.findall('late', context)"),
    ("try:\n    x = json.loads(context)\nexcept ValueError:\n    x = None", "x = json.loads(context)"),
    ("#\n# \nprint(len(context))", "print(len(context))"),
    ("import os", "import os"),
    ("", ""),
])
def test_cell_hint_names_what_the_cell_does(code: str, hint: str) -> None:
    assert fmt.cell_hint(code) == hint


def test_tree_label_of_a_cell_uses_the_hint() -> None:
    t = Trace()
    sid = t.start_span(SpanKind.CODE_CELL, "cell", None, {Attr.CODE: "import re\nfound = re.findall(r'\\d+', context)"})
    assert fmt.span_label(t.spans[sid]) == "cell: found = re.findall(r'\\d+', context)"


def test_estimated_cost_is_marked_and_unknown_is_never_zero() -> None:
    assert fmt.fmt_cost({Attr.COST_USD: 0.0123, Attr.COST_KNOWN: True}) == "$0.0123"
    assert fmt.fmt_cost({Attr.COST_USD: 0.0123, Attr.COST_KNOWN: True, Attr.TOKENS_ESTIMATED: True}) == "~$0.0123"
    assert fmt.fmt_cost({Attr.COST_USD: 0.0, Attr.TOKENS_ESTIMATED: True}) == "$0"
    assert fmt.fmt_cost({Attr.COST_USD: None, Attr.COST_KNOWN: False}) == "unknown"
