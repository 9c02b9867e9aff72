"""The text encoder (features.encoder) and pair feature construction (features.pairs)."""

import os

# OpenMP threads that spin while waiting made CPU inference 10x slower on 2-vCPU cloud machines
# (MiniLM, 130 texts: 11-16 s with the default, 1.2 s with PASSIVE; measured on the CI machine kind).
# Must be set before torch loads its OpenMP runtime; an explicit setting of the user's wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
