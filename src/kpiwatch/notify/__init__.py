"""Who hears about what, and getting it to them: routing, outbox, channels."""
