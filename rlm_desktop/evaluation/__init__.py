"""Evaluation harness (Qt-free): seeded long-context tasks, scorers, a runner comparing RLM with a
direct call, and the report (table, JSON, HTML with an inline SVG chart). Used by `rlm-desktop eval`."""
