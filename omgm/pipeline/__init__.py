"""The pipeline as library objects with plain data contracts (see each module)."""
