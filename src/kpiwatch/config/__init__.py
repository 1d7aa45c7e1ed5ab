"""Typed configuration: settings (environment, TOML, .env) and rule files."""
