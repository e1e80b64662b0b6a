"""pytest fixtures: redis (being written)."""
