"""RLM Desktop: run Recursive Language Models over large document sets, live and under control."""

__version__ = "0.1.0"
