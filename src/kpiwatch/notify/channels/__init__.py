"""Delivery channels, one per file; the protocol is in base.py."""
