"""The start of an assignment as one round trip: an experiment (docs/decisions/0008)."""
