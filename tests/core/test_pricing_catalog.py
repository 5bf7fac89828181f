"""List prices from genai-prices' bundled data (issue 8 item 20): a known model's price, the
provider chosen by URL, and no network at any point."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from rlm_desktop.core.config import ModelPrice
from rlm_desktop.core.pricing import PriceTable, catalog_price, cost_usd, lookup


def test_known_model_price_from_the_package() -> None:
    assert catalog_price("gpt-4o", "https://api.openai.com/v1") == ModelPrice(2.5, 10.0, 1.25)
    assert catalog_price("no-such-model-xyz") is None and catalog_price("") is None
    # vendor/model on a gateway the catalog does not know: the vendor's list price
    assert catalog_price("openai/gpt-4o", "https://gateway.example.com/v1") == ModelPrice(2.5, 10.0, 1.25)


def test_price_table_own_prices_win_over_the_catalog() -> None:
    own = ModelPrice(1.0, 2.0)
    table = PriceTable({"gpt-4o": own}, "https://api.openai.com/v1")
    assert table["gpt-4o"] == own and lookup(table, "gpt-4o-mini") == catalog_price("gpt-4o-mini")
    assert cost_usd(lookup(table, "gpt-4o"), 1_000_000, 0) == 1.0
    off = PriceTable({}, "http://localhost:11434/v1", use_catalog=False)
    assert lookup(off, "gpt-4o") is None and "gpt-4o" not in off


def test_looking_up_prices_never_touches_the_network() -> None:
    # A fresh interpreter in which any socket connection fails loudly; the updater stays unstarted.
    code = textwrap.dedent("""
        import socket, sys
        def refuse(*a, **k):
            print("NETWORK ATTEMPT", a, file=sys.stderr); sys.stderr.flush(); raise OSError("no network")
        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        from rlm_desktop.core.pricing import catalog_price, catalog_label
        from rlm_desktop.core.profiles import profile_from_preset
        p = profile_from_preset("openrouter", "or")
        assert catalog_price("gpt-4o", "https://api.openai.com/v1") is not None
        assert p.prices.get(p.root_model) is not None
        print(catalog_label())
        import threading, genai_prices.data_snapshot as ds
        assert ds._custom_snapshot is None, "genai-prices' updater replaced the bundled data"
        assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "NETWORK ATTEMPT" not in r.stderr and r.stdout.startswith("genai-prices ")
