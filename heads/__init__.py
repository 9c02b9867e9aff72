"""Reward heads, the multi-module model and losses (lands with issue #5)."""
