"""pytest fixtures: demo (being written)."""
