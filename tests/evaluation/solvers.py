"""Independent answers to the generated tasks, computed from the text alone (regexes over the
context), never from the generator's bookkeeping. Stdlib only and self-contained: the scripted
model also ships this source into the sandbox as its REPL code."""

from __future__ import annotations


def solve(question, context):  # noqa: ANN001, ANN201 - kept plain: it also runs as REPL code
    import re

    if isinstance(context, dict):
        context = "\n".join(context.values())
    m = re.search(r"magic number for ([\w-]+)\?", question)
    if m:
        hits = re.findall(r"The magic number for " + re.escape(m.group(1)) + r" is (\d+)\.", context)
        return hits[0] if len(hits) == 1 else f"ambiguous: {hits}"
    m = re.search(r"Which user has the most records with the label '([\w-]+)'", question)
    if m:
        per_user = {}
        for user in re.findall(r"^\d{4}-\d{2}-\d{2} \| record \d+ \| user (\d+) \| label: "
                               + re.escape(m.group(1)) + r" \|", context, re.M):
            per_user[user] = per_user.get(user, 0) + 1
        return max(per_user, key=per_user.get)
    m = re.search(r"dated from (\d{4}-\d{2}-\d{2}) to (\d{4}-\d{2}-\d{2})", question)
    if m:
        d1, d2 = m.groups()
        counts = {}
        for d, lab in re.findall(r"^(\d{4}-\d{2}-\d{2}) \| record \d+ \| user \d+ \| label: ([\w-]+) \|",
                                 context, re.M):
            if d1 <= d <= d2:
                counts[lab] = counts.get(lab, 0) + 1
        c = re.search(r"label '([\w-]+)' are dated", question)
        if c:
            return str(counts.get(c.group(1), 0))
        c = re.search(r"more often: '([\w-]+)' or '([\w-]+)'", question)
        if c:
            a, b = c.groups()
            return a if counts.get(a, 0) > counts.get(b, 0) else b
        return max(counts, key=counts.get)
    if "locker code" in question:
        by_code = {}
        for pid, code in re.findall(r"^(P-\d+) \|.*\| locker (\w+)$", context, re.M):
            by_code.setdefault(code, []).append(pid)
        pairs = []
        for ids in by_code.values():
            ids = sorted(ids)
            pairs += [f"({a}, {b})" for i, a in enumerate(ids) for b in ids[i + 1:]]
        return "\n".join(sorted(pairs))
    m = re.search(r"the team of (\w+ \w+) based", question)
    if m:
        teams = re.findall(re.escape(m.group(1)) + r" has moved to the (\w+) team\.", context)
        if len(teams) != 1:
            return f"ambiguous: {teams}"
        cities = re.findall(r"The " + teams[0] + r" team is based in (\w+)\.", context)
        return cities[0] if len(cities) == 1 else f"ambiguous: {cities}"
    return "unknown question"
