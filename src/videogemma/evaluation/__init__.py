"""Metrics over prediction records and the reports built from them."""
