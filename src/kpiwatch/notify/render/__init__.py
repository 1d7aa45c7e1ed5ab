"""Rendering of notifications: emails, their templates and charts."""
