"""Single and batch inference."""
