"""The daemon's HTTP side: status board, JSON API, health, and Prometheus metrics."""
