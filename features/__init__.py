"""The text encoder (features.encoder), pair feature construction (features.pairs) and the
encode-and-write loop of stage 0 (features.embedding)."""
