"""Stage 0 embedding cache, measured side by side in one run (compare ratios, not seconds):

1. `pipeline embed` throughput / raw `SentenceTransformer.encode` throughput on the same unique
   texts with the same token limits (target >= 0.95);
2. texts encoded / texts referenced, on synthetic pairs whose contexts repeat across modules;
3. DuckDB fetch of 100k x 384 cached vectors / `np.load` of the same matrix, as speeds
   (target >= 0.5);
4. a rerun after adding 1% new pairs encodes only the new pairs' texts;
5. writing the cache's shards durably (fsync of each shard, the writer's fragment and their
   folders) / writing the same shards with `pq.write_table` alone, as times.

    .venv/bin/python bench/embed.py [--pairs 400] [--vectors 100000]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the pipeline command sets it; see docs/gpu.md "CPU threads"

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from cache import EmbeddingCache  # noqa: E402
from features.pairs import text_key  # noqa: E402
from data import load_pairs, pairs_from_records, write_pairs  # noqa: E402
from data.synth import generate_pairs  # noqa: E402
from features.pairs import unique_texts  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.embed import embed_pairs, load_encoder  # noqa: E402


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--max-tokens", type=int, default=128, help="token limit for both roles")
    args = parser.parse_args()
    config = load_config(
        overrides={"model.encoder": "minilm", "model.max_context_tokens": args.max_tokens, "model.max_module_tokens": args.max_tokens}
    )
    encoder = load_encoder(config)
    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    records = generate_pairs(args.pairs + max(1, args.pairs // 100), seed=0)
    base, grown = work / "pairs.jsonl", work / "pairs_plus_1pct.jsonl"
    write_pairs(pairs_from_records(records[: args.pairs]), base)
    write_pairs(pairs_from_records(records), grown)
    texts = unique_texts(load_pairs(base))
    print(f"{args.pairs} pairs, {texts.height} unique texts, MiniLM, {args.max_tokens} tokens, {os.cpu_count()} CPUs")

    # 1. Throughput: the embed recipe (validation, dedup, truncation, shards, manifest) vs bare encode.
    def raw_encode():
        encoder.model.max_seq_length = args.max_tokens
        for role in ("context", "module"):
            encoder.model.encode(texts.filter(texts["role"] == role)["text"].to_list(), batch_size=config.model.batch_size)

    raw_times, embed_times = [], []
    for attempt in range(2):  # interleaved, best of two each: the machine is noisy
        raw_times.append(timed(raw_encode)[0])
        embed_times.append(timed(lambda: embed_pairs([base], work / f"cache-{attempt}", config, encoder=encoder, progress=False))[0])
    raw, ours = min(raw_times), min(embed_times)
    print(f"raw SentenceTransformer.encode: {texts.height / raw:7.1f} texts/s")
    print(f"pipeline embed (cold cache):    {texts.height / ours:7.1f} texts/s")
    print(f"1. embed / raw throughput:      {raw / ours:7.3f}   (target >= 0.95)")

    # 2. Dedup.
    report = embed_pairs([base], work / "cache-dedup", config, encoder=encoder, progress=False)
    print(f"2. texts encoded / referenced:  {report.new} / {report.referenced} = {report.new / report.referenced:.3f}")

    # 3. Reads: DuckDB over Parquet shards vs np.load of the same float32 matrix.
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.vectors, 384)).astype(np.float32)
    keys = [text_key("module", str(i)) for i in range(args.vectors)]
    namespace = EmbeddingCache(work / "cache-read").namespace({"encoder": "bench", "dimension": 384}, create=True)
    def write_durably():
        with namespace.writer():
            for start in range(0, args.vectors, 4096):
                namespace.write_shard(keys[start : start + 4096], vectors[start : start + 4096])

    def write_plainly():
        for start in range(0, args.vectors, 4096):
            table = pa.table({"key": keys[start : start + 4096], "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[start : start + 4096].ravel()), 384)})
            pq.write_table(table, work / f"plain-{start}.parquet", compression="zstd")

    before = timed(write_plainly)[0]
    durable = timed(write_durably)[0]
    plain = min(before, timed(write_plainly)[0])  # the plain writes' best of two, around ours
    np.save(work / "vectors.npy", vectors)
    wanted = [keys[i] for i in rng.permutation(args.vectors)]
    fetch = min(timed(lambda: namespace.fetch(wanted))[0] for _ in range(3))
    load = min(timed(lambda: np.load(work / "vectors.npy"))[0] for _ in range(3))
    print(f"DuckDB fetch {args.vectors} x 384 (shuffled keys): {fetch:6.3f} s;  np.load: {load:6.3f} s")
    print(f"3. DuckDB speed / np.load speed: {load / fetch:6.3f}   (target >= 0.5)")

    # 4. Online growth: 1% more pairs, only their new texts are encoded.
    added_texts = unique_texts(load_pairs(grown)).height - texts.height
    rerun = embed_pairs([grown], work / "cache-dedup", config, encoder=encoder, progress=False)
    verdict = "only those" if rerun.new == added_texts else "MISMATCH"
    print(f"4. rerun with 1% more pairs: {rerun.new} encoded, {added_texts} new texts ({verdict}), {rerun.reused} reused")
    shards = -(-args.vectors // 4096)
    print(f"{shards} shards of 4096 x 384: durable write_shard {durable:6.3f} s;  pq.write_table alone: {plain:6.3f} s")
    print(f"5. durable / plain write time:  {durable / plain:6.3f}")


if __name__ == "__main__":
    main()
