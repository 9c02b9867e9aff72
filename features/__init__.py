"""The text encoder and pair feature construction (lands with issue #4)."""
