"""Policy: which actions are allowed (rules), how they are ranked, and exploration."""
