"""The embedding cache: Parquet shards of (key, vector), one namespace per encoder fingerprint,
read only through DuckDB.

    CACHE/<namespace>/manifest.json          the encoder fingerprint, dimension, dtype and shard list
    CACHE/<namespace>/manifests/<writer>.json the shards one writer process added (a fragment)
    CACHE/<namespace>/shards/<id>.parquet    key (string), vector (fixed-size list of float32/float16)

A key is a hash of (role, text), so a text is encoded once however many pairs and modules share it.
The manifests are the truth: readers see only the shards that manifest.json or a fragment lists
(merged, each shard once). Every file is written to a temporary file, fsynced, renamed and its
folder fsynced, so a run killed at any moment (or a machine losing power) leaves a readable cache.

Many machines fill one cache without a lock that spans them (flock is not honoured across NFS or
Lustre clients): each writer process (`Namespace.writer`, one per embed run or torchrun rank) lists
its shards in a fragment of its own, rewritten after each shard is durable, so no two processes
ever write the same file. manifest.json is rewritten only by maintenance (`gc`, `repair`), which
first folds every fragment into it and then removes them; a crash in between leaves shards listed
twice, which the merge reads once. Maintenance must therefore not run while an embed is running.

A shard file nobody lists is what a killed writer left between rename and listing. Another
machine's live writer is in that state for a moment too, so embed runs remove only unlisted
shards older than `UNLISTED_GRACE` (by file time; clocks must agree within minutes), and `gc`
and `repair`, which run alone, remove them all. Vectors of two fingerprints never mix: each
fingerprint hashes to its own folder.

A listed shard that is missing, unreadable or of another shape is a `DamagedCache` naming the
namespace and the shard, from every reader; `Namespace.repair` (`pipeline cache repair`) unlists
such shards so that the next embed encodes exactly the texts they held.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.errors import UserError
from data.files import atomic_path, fsync_path, json_text, write_text_atomic

MANIFEST = "manifest.json"
FRAGMENTS = "manifests"
UNLISTED_GRACE = 3600.0  # seconds an unlisted shard is left alone by embed runs: another machine may be about to list it
FORMAT_VERSION = 1
DTYPES = {"float32": (np.float32, pa.float32()), "float16": (np.float16, pa.float16())}
# How new namespaces write their shards, chosen by bench/shard_encoding.py (docs/results/speed.md): float
# vectors barely compress, so codecs cost decode time for a few percent of disk.
# Hashed keys and float vectors never repeat, so dictionary encoding only wastes write time.
SHARD_ENCODING = {"compression": "none", "byte_stream_split": False, "dictionary": False}
OLD_SHARD_ENCODING = {"compression": "zstd", "byte_stream_split": False, "dictionary": True}  # manifests from before the field
# Vectors per streamed batch of a read: bounded memory whatever N is. 64 MiB batches peaked ~0.1
# GiB higher than 8 MiB ones in train-heads at 100k pairs (bench/scale.py's data) and read slower.
READ_BATCH_BYTES = 8 * 2**20


class CacheError(UserError):
    """The cache folder cannot give what was asked: no such namespace, missing vectors, a busy writer."""


class NoNamespace(CacheError):
    """The cache holds no vectors of the fingerprint asked for."""


class DamagedCache(CacheError):
    """A shard the manifest lists is missing, unreadable or not of the namespace's shape."""


class MissingVectors(CacheError):
    def __init__(self, missing: Sequence[str], total: int):
        self.missing = list(missing)
        self.total = total
        super().__init__(f"{len(self.missing)} of {total} texts have no vector in this cache namespace")


def namespace_id(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


class EmbeddingCache:
    """A cache folder holding one `Namespace` per encoder fingerprint."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def namespaces(self) -> list["Namespace"]:
        if not self.root.is_dir():
            return []
        return [Namespace(p) for p in sorted(self.root.iterdir()) if (p / MANIFEST).is_file()]

    def select(self, encoder: str | None = None, namespace_id: str | None = None) -> "Namespace":
        """The namespace to read vectors from: `namespace_id` when given; else the only namespace of
        `encoder` (the name it was embedded with); else, with no encoder named, the only namespace
        the cache holds. Anything else is a `CacheError` that lists what the cache holds and the
        flag that picks one."""
        namespaces = self.namespaces()
        if namespace_id is not None:
            chosen = [ns for ns in namespaces if ns.id == namespace_id]
        elif encoder is not None:
            chosen = [ns for ns in namespaces if ns.fingerprint.get("encoder") == encoder]
        else:
            chosen = namespaces
        if len(chosen) == 1:
            return chosen[0]
        if not namespaces:
            raise CacheError(f"{self.root} holds no vectors yet: embed the pairs first with `pipeline embed FILE... --cache {self.root} --encoder NAME`")
        if namespace_id is not None:
            problem = f"{self.root} has no namespace {namespace_id}"
        elif encoder is not None and not chosen:
            problem = f"{self.root} has no vectors of encoder {encoder!r}"
        else:
            problem = f"{self.root} holds vectors of several encoders or settings" + (f" for {encoder!r}" if encoder else "")
        raise CacheError(f"{problem}; it holds:\n{self.describe()}\nPick one with --encoder NAME, or --namespace ID when one encoder has several.")

    def old_scratch(self, older_than: float = 0.0) -> list[Path]:
        """The `.pair-features-*` folders that train-heads of earlier versions made inside the cache
        it read (now made beside its --out) and that a killed run left there, last written more
        than `older_than` seconds ago; `cache info` lists them, `cache gc` removes them."""
        if not self.root.is_dir():
            return []
        now = time.time()
        return [p for p in sorted(self.root.glob(".pair-features-*")) if p.is_dir() and now - p.stat().st_mtime >= older_than]

    def remove_old_scratch(self) -> list[Path]:
        """Remove the `old_scratch` folders of runs that cannot still be reading them (older than
        `UNLISTED_GRACE`); returns what was removed."""
        found = self.old_scratch(older_than=UNLISTED_GRACE)
        for folder in found:
            shutil.rmtree(folder, ignore_errors=True)
        return found

    def describe(self) -> str:
        """One line per namespace: id, encoder, dimension, token limits, number of vectors."""
        return "\n".join(f"  {ns.id}  {ns.describe()}" for ns in self.namespaces()) or "  nothing"

    def namespace(self, fingerprint: dict, dtype: str = "float32", create: bool = False) -> "Namespace":
        """The namespace of `fingerprint` (and storage dtype); created when `create` is set."""
        if dtype not in DTYPES:
            raise CacheError(f"unknown cache dtype {dtype!r} (expected one of: {', '.join(DTYPES)})")
        identity = {**fingerprint, "dtype": dtype}
        root = self.root / namespace_id(identity)
        if not (root / MANIFEST).is_file():
            if not create:
                raise NoNamespace(f"{self.root} has no vectors for this encoder (namespace {root.name}); run `pipeline embed` first")
            root.mkdir(parents=True, exist_ok=True)
            with _locked(root / ".manifest.lock"):
                if not (root / MANIFEST).is_file():
                    manifest = {
                        "format": FORMAT_VERSION,
                        "namespace": root.name,
                        "fingerprint": fingerprint,
                        "dtype": dtype,
                        "dimension": fingerprint["dimension"],
                        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "shard_encoding": SHARD_ENCODING,
                        "shards": [],
                    }
                    write_text_atomic(root / MANIFEST, json_text(manifest, indent=2), durable=True)
                    fsync_path(root.parent)  # the namespace folder's own entry
        return Namespace(root)


@dataclass(frozen=True)
class ShardInfo:
    file: str
    rows: int


class Namespace:
    """The vectors of one encoder fingerprint."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.manifest = _read_manifest(self.root)
        self._fragment: dict | None = None  # this process's fragment while it holds `writer`
        self.reads = 0  # DuckDB queries over the shards so far: tests check that a run reads once

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def fingerprint(self) -> dict:
        return self.manifest["fingerprint"]

    @property
    def dimension(self) -> int:
        return self.manifest["dimension"]

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def shard_encoding(self) -> dict:
        """How this namespace writes shards: its manifest's choice, zstd for manifests without one."""
        return self.manifest.get("shard_encoding", OLD_SHARD_ENCODING)

    @property
    def shards(self) -> list[ShardInfo]:
        return [ShardInfo(**s) for s in self.manifest["shards"]]

    def shard_paths(self) -> list[str]:
        return [str(self.root / s.file) for s in self.shards]

    def __len__(self) -> int:
        return sum(s.rows for s in self.shards)

    def describe(self) -> str:
        fp = self.fingerprint
        return (
            f"encoder {fp.get('encoder')!r}, {self.dimension}-d {self.dtype}, context {fp.get('max_context_tokens')} / "
            f"module {fp.get('max_module_tokens')} tokens, {len(self)} vectors"
        )

    def reload(self) -> "Namespace":
        self.manifest = _read_manifest(self.root)
        return self

    # --- reading, always through DuckDB ---------------------------------------------------------

    def missing(self, keys: Sequence[str]) -> list[str]:
        """The keys among `keys` that have no vector yet, in their given order (reads only the key
        column of the shards)."""
        if not self.shards:
            return list(keys)
        with _duckdb() as con:
            con.register("wanted", pa.table({"key": pa.array(keys, pa.string()), "ord": np.arange(len(keys))}))
            found = self._query(con, "SELECT w.key FROM wanted w ANTI JOIN read_parquet($files) s USING (key) ORDER BY w.ord").column("key")
        return [str(k) for k in found.to_pylist()]

    def fetch(self, keys: Sequence[str] | pa.Array, out: np.ndarray | None = None) -> np.ndarray:
        """Vectors for `keys` as float32 (len(keys), dimension), row i for keys[i], written into
        `out` when given (a np.memmap for data larger than RAM). One DuckDB query joins the keys
        against every listed shard, its result streamed into the matrix batch by batch, so N keys
        cost one pass over the shards and one batch of memory beyond the matrix. `keys` may be an
        Arrow string array, which spares a million keys a Python object each.
        Raises `MissingVectors` naming the keys that have none."""
        keys = keys if isinstance(keys, pa.Array) else pa.array(keys, pa.string())
        n = len(keys)
        if out is None:
            out = np.empty((n, self.dimension), np.float32)
        elif out.shape != (n, self.dimension):
            raise ValueError(f"out has shape {out.shape}, expected ({n}, {self.dimension})")
        if n == 0:
            return out
        if not self.shards:
            raise MissingVectors(keys.to_pylist(), n)
        found, rows = np.zeros(n, bool), 0
        with _duckdb() as con:
            con.register("wanted", pa.table({"key": keys, "ord": np.arange(n)}))
            for batch in self._stream(con, f"SELECT w.ord, {self._vector_column('s.vector')} FROM wanted w JOIN read_parquet($files) s USING (key)"):
                order = batch.column(0).to_numpy()
                out[order] = self._vectors(batch.column(1))
                found[order] = True
                rows += len(order)
        if rows != n or not found.all():
            if rows > found.sum():
                raise self._duplicates()
            raise MissingVectors(keys.take(np.flatnonzero(~found)).to_pylist(), n)
        return out

    def index(self, memory_map: Path | None = None) -> "VectorIndex":
        """Every vector of the namespace, read in one pass, behind a key -> row lookup in memory
        (the matrix in RAM, or in `memory_map`, a .npy file, memory-mapped): what a server answers
        from without touching the shards per request."""
        n, keys = len(self), []
        if memory_map is None:
            vectors = np.empty((n, self.dimension), np.float32)
        else:
            vectors = np.lib.format.open_memmap(memory_map, mode="w+", dtype=np.float32, shape=(n, self.dimension))
        if n:
            with _duckdb() as con:
                for batch in self._stream(con, f"SELECT key, {self._vector_column('vector')} FROM read_parquet($files)"):
                    if len(keys) + batch.num_rows > n:
                        raise self.damaged(f"the shards hold more than the {n} vectors the manifest lists")
                    vectors[len(keys) : len(keys) + batch.num_rows] = self._vectors(batch.column(1))
                    keys += batch.column(0).to_pylist()
        if len(keys) != n:
            raise self.damaged(f"the shards hold {len(keys)} vectors, the manifest lists {n}")
        if memory_map is not None:
            vectors.flush()
            del vectors
            vectors = np.load(memory_map, mmap_mode="r")
        index = VectorIndex(keys, vectors)
        if len(index) != n:
            raise self._duplicates()
        return index

    def _vector_column(self, column: str) -> str:
        """`column` as a fixed-size FLOAT array in SQL: DuckDB hands those to Arrow cheaper
        than variable lists (docs/results/speed.md), and a shard of another dimension fails the cast."""
        return f"{column}::FLOAT[{int(self.dimension)}] AS vector"

    def _vectors(self, column: pa.Array) -> np.ndarray:
        """A batch's vector column as an (rows, dimension) matrix; a shard of another dimension among
        the right ones is a `DamagedCache`."""
        values = column.flatten().to_numpy(zero_copy_only=False)
        if values.size != len(column) * self.dimension:
            raise self.damaged(f"vectors not of dimension {self.dimension}")
        return values.reshape(-1, self.dimension)

    def _duplicates(self) -> CacheError:
        return CacheError(
            f"cache namespace {self.id} holds some keys more than once; run `pipeline cache repair {self.root.parent}`, "
            "which keeps one vector of each"
        )

    def _query(self, con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
        """`sql` over the listed shards (`$files`); a shard DuckDB cannot read is a `DamagedCache`
        naming it, never DuckDB's own error."""
        self.reads += 1
        try:
            return con.sql(sql, params={"files": self.shard_paths()}).to_arrow_table()
        except duckdb.Error as e:
            raise self.damaged(str(e).splitlines()[0]) from None

    def _stream(self, con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[pa.RecordBatch]:
        """`sql` over the listed shards (`$files`), batch by batch of about `READ_BATCH_BYTES`;
        errors as `_query`. DuckDB's error reaches Python as its own exception, or, once a batch is
        out, as a bare OSError from Arrow's stream (a shard of another dimension did both)."""
        self.reads += 1
        rows = max(2048, READ_BATCH_BYTES // (4 * self.dimension))
        try:
            yield from con.sql(sql, params={"files": self.shard_paths()}).to_arrow_reader(rows)
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            raise self.damaged(str(e).splitlines()[0]) from None

    def damaged(self, symptom: str) -> CacheError:
        """The error for a read that failed with `symptom`: the shards at fault, found by
        `shard_problems`, and the way out (`pipeline cache repair`)."""
        found = self.shard_problems() or self.shard_problems(deep=True)
        if not found:
            return CacheError(f"cache namespace {self.id} in {self.root.parent} could not be read ({symptom}); run `pipeline cache verify {self.root.parent}`")
        (shard, problem), more = found[0], len(found) - 1
        others = f" (and {more} more shard(s))" if more else ""
        return DamagedCache(
            f"cache namespace {self.id} is damaged: shard {shard.file} {problem}{others}. "
            f"Run `pipeline cache repair {self.root.parent}` to unlist it, then `pipeline embed` to encode its texts again"
        )

    def check_shards(self) -> None:
        """Raise `DamagedCache` unless every listed shard is there with the namespace's shape
        (footers only: milliseconds per shard), for readers that would rather fail at start."""
        if self.shard_problems():
            raise self.damaged("a shard check failed")

    def shard_problems(self, deep: bool = False) -> list[tuple[ShardInfo, str]]:
        """(shard, what is wrong) for every listed shard that is missing, unreadable, not of
        (key string, vector of `dimension` floats) or of another row count than the manifest's;
        `deep` also reads every vector (a damaged page, NaN)."""
        problems = []
        for shard in self.shards:
            path = self.root / shard.file
            if not path.is_file():
                problems.append((shard, "is missing"))
                continue
            try:
                parquet = pq.ParquetFile(path)
                schema, rows = parquet.schema_arrow, parquet.metadata.num_rows
                table = parquet.read() if deep else None
            except (OSError, pa.ArrowException) as e:
                problems.append((shard, f"is unreadable ({str(e).splitlines()[0]})"))
                continue
            vector = schema.field("vector").type if "vector" in schema.names else None
            if "key" not in schema.names or not pa.types.is_string(schema.field("key").type) or vector is None:
                problems.append((shard, f"has columns {', '.join(schema.names)}, not key (string) and vector"))
            elif not (pa.types.is_fixed_size_list(vector) and vector.list_size == self.dimension):
                problems.append((shard, f"holds vectors of type {vector}, not {self.dimension}-d"))
            elif rows != shard.rows:
                problems.append((shard, f"holds {rows} rows, the manifest says {shard.rows}"))
            elif deep and rows and np.isnan(_matrix(table.column("vector"), self.dimension)).any():
                problems.append((shard, "holds vectors with NaN"))
        return problems

    # --- writing ----------------------------------------------------------------------------

    @contextmanager
    def writer(self, shard: tuple[int, int] = (0, 1)) -> Iterator["Namespace"]:
        """Open this process's fragment for an embed run: `write_shard` lists its shards there.
        The flocks stop two unsharded runs (or two runs of one rank) on one machine from encoding
        the same texts twice; a run on many machines is correct without them, since each process
        writes only its own files."""
        index, count = shard
        with _locked(self.root / ".run.lock", shared=count > 1, blocking=False, busy=self._busy):
            with _locked(self.root / f".run-{index}-of-{count}.lock", blocking=False, busy=self._busy):
                self._remove_unlisted_shards(older_than=UNLISTED_GRACE)
                host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64]
                self._fragment = {"format": FORMAT_VERSION, "namespace": self.id, "writer": f"rank{index}of{count}-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}", "shards": []}
                try:
                    yield self
                finally:
                    self._fragment = None

    @contextmanager
    def _maintenance(self) -> Iterator["Namespace"]:
        """The exclusive lock for `gc` and `repair`, which rewrite manifest.json and remove files
        and so must run when no embed is (on any machine)."""
        with _locked(self.root / ".run.lock", blocking=False, busy=self._busy):
            self.reload()
            yield self

    def _busy(self, lock: Path) -> CacheError:
        return CacheError(
            f"another `pipeline embed` is writing to {self.root} (lock {lock.name} is held); "
            "wait for it to finish, or give this run another --cache folder"
        )

    def write_shard(self, keys: Sequence[str], vectors: np.ndarray) -> ShardInfo:
        """Write one shard durably, then list it in this writer's fragment (rewritten durably), so
        a fragment never lists a shard a crash could still take back."""
        if self._fragment is None:
            raise CacheError(f"write_shard on {self.root} outside `with namespace.writer():`")
        info = self._write_shard_file(keys, vectors)
        entry = {"file": info.file, "rows": info.rows}
        self._fragment["shards"].append(entry)
        write_text_atomic(self.root / FRAGMENTS / f"{self._fragment['writer']}.json", json_text(self._fragment, indent=1), durable=True)
        self.manifest["shards"].append(entry)
        return info

    def _write_shard_file(self, keys: Sequence[str], vectors: np.ndarray) -> ShardInfo:
        numpy_dtype, arrow_dtype = DTYPES[self.dtype]
        vectors = np.ascontiguousarray(vectors, dtype=numpy_dtype)
        if vectors.shape != (len(keys), self.dimension):
            raise CacheError(f"shard of {len(keys)} keys got vectors of shape {vectors.shape}, expected ({len(keys)}, {self.dimension})")
        table = pa.table(
            {
                "key": pa.array(keys, pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), arrow_dtype), self.dimension),
            }
        )
        name = f"shards/{uuid.uuid4().hex}.parquet"
        encoding = self.shard_encoding
        with atomic_path(self.root / name, durable=True) as tmp:
            write_shard_table(table, tmp, **encoding)
        return ShardInfo(name, len(keys))

    def _update_manifest(self, add: Sequence[ShardInfo] = (), remove: Sequence[str] = ()) -> None:
        """Rewrite manifest.json (durably) with every fragment folded in, then remove the folded
        fragments: a crash in between lists their shards twice, which readers merge. Maintenance
        only, so that no fragment changes between being read and removed."""
        with _locked(self.root / ".manifest.lock"):
            manifest, fragments = _read_manifest(self.root, with_fragments=True)
            manifest["shards"] = [s for s in manifest["shards"] if s["file"] not in set(remove)]
            manifest["shards"] += [{"file": s.file, "rows": s.rows} for s in add]
            write_text_atomic(self.root / MANIFEST, json_text(manifest, indent=2), durable=True)
            for fragment in fragments:
                fragment.unlink()
            if fragments:
                fsync_path(fragments[0].parent)
            self.manifest = manifest

    def _remove_unlisted_shards(self, older_than: float) -> None:
        """Remove shard files (and temporary files) that no manifest lists and that were last
        written more than `older_than` seconds ago: what killed writers left behind."""
        listed = {s.file for s in self.reload().shards}
        shards, fragments, now = self.root / "shards", self.root / FRAGMENTS, time.time()
        for path in [*shards.glob("*.parquet"), *shards.glob(".*.tmp"), *fragments.glob(".*.tmp")]:
            if f"{path.parent.name}/{path.name}" not in listed and now - path.stat().st_mtime >= older_than:
                path.unlink(missing_ok=True)

    def _consolidate(self) -> None:
        """Fold every fragment into manifest.json and remove every unlisted file. Maintenance
        starts here, so that its later updates, which unlist shards, never leave a fragment
        behind that would list them again."""
        self._update_manifest()
        self._remove_unlisted_shards(older_than=0)

    # --- maintenance ------------------------------------------------------------------------

    def info(self) -> dict:
        files = [self.root / s.file for s in self.shards]
        return {
            "namespace": self.id,
            "encoder": self.fingerprint.get("encoder"),
            "dimension": self.dimension,
            "dtype": self.dtype,
            "vectors": len(self),
            "shards": len(files),
            "bytes": sum(f.stat().st_size for f in files if f.exists()),
        }

    def verify(self) -> list[str]:
        """Read every shard; return one line per problem (missing or unreadable shard, wrong
        dimension, row count unlike the manifest's, NaN, duplicate keys), each naming the shard."""
        found = self.shard_problems(deep=True)
        problems = [f"{self.root / shard.file}: shard {problem}" for shard, problem in found]
        unreadable = {shard for shard, _ in self.shard_problems()}  # NaN vectors still have their keys
        duplicates = self._duplicate_keys([shard for shard in self.shards if shard not in unreadable])
        if duplicates:
            problems.append(f"{self.root}: {len(duplicates)} keys stored more than once")
        return problems

    def repair(self, say: Callable[[str], object] = print) -> tuple[int, int]:
        """Unlist every shard `verify` finds at fault (missing, unreadable, wrong shape, NaN), so
        that the next `pipeline embed` encodes exactly the texts they held, and keep one vector of
        a key stored more than once. Says what it does before each manifest update (atomic, under
        the writer lock). Returns (shards unlisted, duplicate vectors dropped)."""
        with self._maintenance():
            self._consolidate()
            found = self.shard_problems(deep=True)
            for shard, problem in found:
                say(f"{self.id}: unlisting shard {shard.file}, which {problem}; the next `pipeline embed` encodes its {shard.rows} texts again")
            if found:
                self._update_manifest(remove=[shard.file for shard, _ in found])
                for shard, _ in found:
                    (self.root / shard.file).unlink(missing_ok=True)
            duplicates = self._duplicate_keys(self.shards)
            dropped = 0
            if duplicates:
                say(f"{self.id}: {len(duplicates)} keys are stored more than once; keeping the first vector of each")
                seen: set[str] = set()
                for shard in self.shards:
                    table = pq.read_table(self.root / shard.file)
                    keys = table.column("key").to_pylist()
                    keep = [key not in duplicates or not (key in seen or seen.add(key)) for key in keys]
                    if all(keep):
                        continue
                    kept = table.filter(pa.array(keep))
                    dropped += table.num_rows - kept.num_rows
                    replacement = [self._write_shard_file(kept.column("key").to_pylist(), _matrix(kept.column("vector"), self.dimension))] if kept.num_rows else []
                    self._update_manifest(add=replacement, remove=[shard.file])
                    (self.root / shard.file).unlink()
        return len(found), dropped

    def _duplicate_keys(self, shards: Sequence[ShardInfo]) -> set[str]:
        if not shards:
            return set()
        with _duckdb() as con:
            table = con.sql(
                "SELECT key FROM read_parquet($files) GROUP BY key HAVING count(*) > 1", params={"files": [str(self.root / s.file) for s in shards]}
            ).to_arrow_table()
        return set(table.column("key").to_pylist())

    def gc(self, keep: Sequence[str]) -> int:
        """Drop vectors whose key is not in `keep`; shards are rewritten (atomically) or removed.
        Returns the number of vectors dropped. A damaged namespace is refused before anything is
        removed (`DamagedCache`, pointing to `pipeline cache repair`)."""
        dropped = 0
        with self._maintenance():
            self.check_shards()
            self._consolidate()
            with _duckdb() as con:
                con.register("keep", pa.table({"key": pa.array(list(keep), pa.string())}))
                for shard in self.shards:
                    path = self.root / shard.file
                    try:
                        kept = con.sql(
                            "SELECT s.key, s.vector FROM read_parquet($file) s SEMI JOIN keep USING (key)", params={"file": str(path)}
                        ).to_arrow_table()
                    except duckdb.Error as e:
                        raise self.damaged(str(e).splitlines()[0]) from None
                    if kept.num_rows == shard.rows:
                        continue
                    dropped += shard.rows - kept.num_rows
                    # The smaller shard replaces the old one in a single manifest update, so a
                    # crash in between leaves either the old shard or the new one listed, never both.
                    replacement = []
                    if kept.num_rows:
                        vectors = _matrix(kept.column("vector"), self.dimension)
                        replacement = [self._write_shard_file(kept.column("key").to_pylist(), vectors)]
                    self._update_manifest(add=replacement, remove=[shard.file])
                    path.unlink()
        return dropped


def memory_map_above(setting: int | str) -> int:
    """Bytes above which a matrix of vectors goes to a memory-mapped file rather than RAM:
    `setting` MiB, or for "auto" half the memory available now (Linux's MemAvailable, else half
    the physical memory): in RAM while it fits with room to spare, since a memory map on local disk
    is bound by the disk's write speed when filled and by its latency when cold."""
    if setting != "auto":
        return int(setting) * 2**20
    try:
        with open("/proc/meminfo") as meminfo:
            available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available // 2


def write_shard_table(table: pa.Table, path: Path, compression: str, byte_stream_split: bool, dictionary: bool) -> None:
    """A (key, vector) table as a Parquet shard in the given encoding (`SHARD_ENCODING`'s fields);
    BYTE_STREAM_SPLIT applies to the vector values and needs dictionary encoding off."""
    split = ["vector.list.element"] if byte_stream_split else False
    pq.write_table(table, path, compression=compression, use_dictionary=dictionary, use_byte_stream_split=split)


class VectorIndex:
    """A namespace's vectors by key, all in memory (or one memory map): `Namespace.index`."""

    def __init__(self, keys: Sequence[str], vectors: np.ndarray):
        self.row = {key: i for i, key in enumerate(keys)}
        self.vectors = vectors

    def __len__(self) -> int:
        return len(self.row)

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found, vectors): found[i] says whether keys[i] has a vector; `vectors` holds those
        that do, in order, as float32 (found.sum(), dimension)."""
        rows = np.fromiter((self.row.get(key, -1) for key in keys), np.int64, len(keys))
        found = rows >= 0
        return found, np.asarray(self.vectors[rows[found]], np.float32)


def _read_manifest(root: Path, with_fragments: bool = False) -> dict | tuple[dict, list[Path]]:
    """The namespace's manifest with the shards of every fragment merged in (each shard file
    once, the first entry kept), and with `with_fragments` the fragment files read. Every shard
    is checked to lie inside the `shards/` folder (symlinks resolved): readers query and `gc`
    deletes exactly these paths, so an entry such as `../../x.parquet` must never reach them."""
    # Fragments before manifest.json: one that `gc` folds in and removes meanwhile is then either
    # read here or already in the manifest read next, never missed.
    fragment_way_out = "nothing was read or removed. Delete that file (its shards are then unlisted, and `pipeline cache gc` removes them) and embed again"
    fragments, fragment_shards = [], []
    for fragment in sorted((root / FRAGMENTS).glob("*.json")):
        try:
            fragment_shards += _read_json(root, f"{FRAGMENTS}/{fragment.name}", _shards_problem, fragment_way_out)["shards"]
            fragments.append(fragment)
        except FileNotFoundError:
            continue
    way_out = f"nothing was read or removed. Delete the folder {root} and embed again with `pipeline embed`"
    manifest = _read_json(root, MANIFEST, _manifest_problem, way_out)
    listed = {shard["file"] for shard in manifest["shards"]}
    for shard in fragment_shards:
        if shard["file"] not in listed:
            listed.add(shard["file"])
            manifest["shards"].append(shard)
    return (manifest, fragments) if with_fragments else manifest


def _read_json(root: Path, name: str, problem_of: Callable[[object], str], way_out: str) -> dict:
    """The manifest or fragment `name` of namespace `root`, parsed and of the right shape; else a
    `CacheError` naming the namespace and the file."""
    try:
        value = json.loads((root / name).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"cache namespace {root.name} is damaged: its {name} is not valid JSON ({e}); {way_out}") from None
    problem = problem_of(value)
    if problem:
        raise CacheError(f"cache namespace {root.name} is damaged: its {name} {problem}; {way_out}")
    shards = (root / "shards").resolve()
    for shard in value["shards"]:
        if Path(shard["file"]).is_absolute() or not (root / shard["file"]).resolve().is_relative_to(shards):
            raise CacheError(f"cache namespace {root.name} is damaged: its {name} lists shard {shard['file']!r}, which is not inside {root / 'shards'}; {way_out}")
    return value


def _manifest_problem(manifest: object) -> str:
    """What is wrong with a parsed manifest's shape ('' when nothing is)."""
    if not isinstance(manifest, dict):
        return f"holds a JSON {type(manifest).__name__}, not an object"
    for key, kind in (("fingerprint", dict), ("dimension", int), ("dtype", str)):
        if not isinstance(manifest.get(key), kind):
            return f"has no {key!r} of type {kind.__name__}"
    if manifest["dtype"] not in DTYPES:
        return f"names an unknown dtype {manifest['dtype']!r}"
    return _shards_problem(manifest)


def _shards_problem(manifest: object) -> str:
    """What is wrong with the shard list of a parsed manifest or fragment ('' when nothing is)."""
    if not isinstance(manifest, dict):
        return f"holds a JSON {type(manifest).__name__}, not an object"
    if not isinstance(manifest.get("shards"), list):
        return "has no 'shards' of type list"
    for i, shard in enumerate(manifest["shards"]):
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and isinstance(shard.get("rows"), int)):
            return f"lists shard {i} as {json.dumps(shard)[:80]}, not {{\"file\": ..., \"rows\": ...}}"
    return ""


def _matrix(column: pa.ChunkedArray, dimension: int) -> np.ndarray:
    """A list<float> column as an (n, dimension) float32 matrix, without a Python loop."""
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return values.reshape(-1, dimension).astype(np.float32, copy=False)


@contextmanager
def _duckdb() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    # Prefetching coalesces reads of remote files; on local shards it only buffers ahead: 0.06 GiB
    # more peak memory on a 100k-pair read, no faster (bench/scale.py)
    con.execute("SET disable_parquet_prefetching = true")
    try:
        yield con
    finally:
        con.close()


@contextmanager
def _locked(path: Path, shared: bool = False, blocking: bool = True, busy=None) -> Iterator[None]:
    """An flock on `path`; released by the OS if the process dies, so a killed run never leaves
    the cache locked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            raise busy(path) from None
        yield
    finally:
        os.close(fd)
