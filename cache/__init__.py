"""The embedding cache: Parquet shards per encoder fingerprint, queried through DuckDB.

    from cache import EmbeddingCache
    namespace = EmbeddingCache("embeddings/").namespace(encoder.fingerprint())
    vectors = namespace.fetch(keys)          # float32 (len(keys), dimension), in key order
"""

from cache.store import CacheError, EmbeddingCache, MissingVectors, Namespace, namespace_id

__all__ = ["CacheError", "EmbeddingCache", "MissingVectors", "Namespace", "namespace_id"]
