"""The embedding cache: Parquet shards per encoder fingerprint, queried through DuckDB.

    from cache import EmbeddingCache
    namespace = EmbeddingCache("embeddings/").namespace(encoder.fingerprint())
    vectors = namespace.fetch(keys)          # float32 (len(keys), dimension), in key order: one pass over the shards
    found, vectors = namespace.index().get(keys)   # every vector read once, then looked up in memory (servers)
"""

from cache.store import CacheError, DamagedCache, EmbeddingCache, MissingVectors, Namespace, NoNamespace, VectorIndex, memory_map_above, namespace_id

__all__ = ["CacheError", "DamagedCache", "EmbeddingCache", "MissingVectors", "Namespace", "NoNamespace", "VectorIndex", "memory_map_above", "namespace_id"]
