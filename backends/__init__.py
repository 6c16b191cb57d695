"""Vector stores, one module each with the same methods (see vecguard.protocols.VectorStore)."""
