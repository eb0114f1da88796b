"""Placeholder replaced by the NPO adapter (issue 3)."""
