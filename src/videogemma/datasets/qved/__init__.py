"""QVED dataset tools: reading its files, prepare, validate, clean, augment, stats, and their commands."""
