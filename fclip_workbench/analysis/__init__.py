"""Analysis of embeddings: zero-shot, linear probes, audits, projections (the map), evaluation and metrics."""
