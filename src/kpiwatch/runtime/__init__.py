"""The running daemon: scheduling, the evaluation cycle, lifecycle, composition root."""
