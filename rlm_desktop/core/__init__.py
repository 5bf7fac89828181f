"""Qt-free domain: trace, run config and limits, documents, pricing, exporters."""
