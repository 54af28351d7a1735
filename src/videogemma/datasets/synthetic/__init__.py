"""The synthetic exercise dataset (DATA.md): exercises, rendering, generation."""
