"""pytest fixtures: slack_standin (being written)."""
