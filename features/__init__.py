"""The text encoder (features.encoder), pair feature construction (features.pairs), the views
that cut long texts into cached pieces (features.views) and the encode-and-write loop of stage 0
(features.embedding)."""
