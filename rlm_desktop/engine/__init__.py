"""Qt-free asynchronous RLM loop: prompts, parsing, providers, limits."""
