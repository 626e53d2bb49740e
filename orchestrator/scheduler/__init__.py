"""The only place that reads the clock on its own and fires work."""
