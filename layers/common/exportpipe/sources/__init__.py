"""Upstream clients: one module per source, each with the SourceClient interface (sources/base.py)."""
