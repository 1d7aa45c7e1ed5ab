"""Where KPI values live: one module per source type, the protocol in base.py."""
