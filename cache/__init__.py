"""The embedding cache: Parquet shards per encoder fingerprint, queried through DuckDB.

    from cache import EmbeddingCache
    namespace = EmbeddingCache("embeddings/").namespace(encoder.fingerprint())
    vectors = namespace.fetch(keys)          # float32 (len(keys), dimension), in key order
"""

from cache.store import CacheError, DamagedCache, EmbeddingCache, MissingVectors, Namespace, NoNamespace, namespace_id

__all__ = ["CacheError", "DamagedCache", "EmbeddingCache", "MissingVectors", "Namespace", "NoNamespace", "namespace_id"]
