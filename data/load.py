"""Load pair files into one validated polars table, or say exactly what is wrong with them.

Reading is columnar: a file is parsed once (JSON array, JSON Lines or Parquet, told apart by
content), converted to Arrow with the expected types in one call, and every value check runs as a
vectorised expression over the table. JSON Lines go straight through Arrow's JSON reader
(`_read_json_lines`); a file it refuses, or that holds anything it reads differently from Python's
strict reader (NaN, deep nesting, two records on a line, ...), is read again record by record in
Python, so that every problem is named by file, line, pair_id and field exactly as always. Python
also walks the records of a file that fails Arrow's type conversion, to name the fields at fault.

Every problem found in every file is collected before `DataError` is raised, so one run of
`pipeline validate` lists them all.
"""

import gzip
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from data.errors import UserError
from data.files import atomic_path, read_once
from data.schema import (
    CONTEXT_FIELD,
    DEFAULT_MODULES,
    EXPECTED_OUTCOME,
    MODULE_TEXT_FIELD,
    OUTCOME_FIELD,
    PAIR_COLUMNS,
    SIDE_FIELDS,
    SIDES,
    TEXT_KEY_COLUMNS,
    TOP_FIELDS,
    field_path,
    flat_column,
)

# Outcomes convert through float64 so that 1.0 and true read as 1 and 0.5 is caught as a
# contradiction instead of being truncated to 0 by an int64 conversion.
_SIDE_TYPE = pa.struct([(CONTEXT_FIELD, pa.string()), (MODULE_TEXT_FIELD, pa.string()), (OUTCOME_FIELD, pa.float64())])
_RECORD_TYPE = pa.struct([(name, pa.string()) for name in TOP_FIELDS] + [(side, _SIDE_TYPE) for side in SIDES])
_EXPECTED_KIND = {CONTEXT_FIELD: str, MODULE_TEXT_FIELD: str, OUTCOME_FIELD: (int, float)}
# Characters that show nothing and are not Unicode White_Space (what `\s` and str.strip know):
# zero-width space, non-joiner and joiner, word joiner, byte order mark, Mongolian vowel separator.
# A text of only these and whitespace is blank: it reads as empty to a person and to a tokenizer.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u180e"
BLANK_PATTERN = f"^[\\s{INVISIBLE}]*$"


def is_blank(text: str) -> bool:
    """Empty, whitespace-only, or of invisible characters only (`INVISIBLE`)."""
    return _BLANK.fullmatch(text) is not None


_BLANK = re.compile(f"[\\s{INVISIBLE}]*")


_MAX_PROBLEMS_SHOWN = 50
_INTERNAL_COLUMNS = ["_file", "_record", "_line", "_positive_missing", "_negative_missing"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located as precisely as the input allows."""

    file: str
    message: str
    record: int | None = None  # 0-based index of the record in its file
    line: int | None = None  # 1-based line, where the file has one record per line or a parse error
    pair_id: str | None = None
    field: str | None = None
    run_id: str | None = None  # for run files (data.runs), which name runs instead of pairs

    def __str__(self) -> str:
        where = [self.file]
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.pair_id is not None:
            where.append(f"pair_id {self.pair_id!r}")
        if self.run_id is not None:
            where.append(f"run_id {self.run_id!r}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.message}"


class DataError(UserError):
    """Input data failed validation; `problems` lists everything found."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        if len(self.problems) == 1:  # one line, as every other error the CLI prints
            super().__init__(f"1 problem in the input data: {self.problems[0]}")
            return
        shown = [f"  {p}" for p in self.problems[:_MAX_PROBLEMS_SHOWN]]
        if len(self.problems) > _MAX_PROBLEMS_SHOWN:
            shown.append(f"  ... and {len(self.problems) - _MAX_PROBLEMS_SHOWN} more")
        super().__init__(f"{len(self.problems)} problem(s) in the input data:\n" + "\n".join(shown))


def load_pairs(paths: str | Path | Iterable[str | Path], modules: Sequence[str] = DEFAULT_MODULES) -> pl.DataFrame:
    """Read and validate pair files into one table, one row per pair (columns: `PAIR_COLUMNS`
    plus any extra fields). Raises `DataError` listing every problem in every file."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    paths = read_once(paths)  # the same file given twice is read once (the CLI says so)
    if not paths:
        raise ValueError("no pair files given")
    return _validated([_load_file(path, modules) for path in paths])


def pairs_from_records(records: list, modules: Sequence[str] = DEFAULT_MODULES, source: str = "<records>") -> pl.DataFrame:
    """Validate in-memory records in the user's format (as `load_pairs` does files)."""
    flat, problems = _records_to_frame(source, records, None)
    return _validated([(flat, problems + _reserved_columns(source, flat) + _check_values(flat, modules))])


def _validated(loaded: list[tuple[pl.DataFrame | None, list[Problem]]]) -> pl.DataFrame:
    problems = [p for _, file_problems in loaded for p in sorted(file_problems, key=lambda p: (p.record is not None, p.record or 0))]
    frames = [frame for frame, _ in loaded if frame is not None]
    if frames:
        table = pl.concat(frames, how="diagonal_relaxed")
        problems += _duplicate_pair_ids(table)
    if problems:
        raise DataError(problems)
    outcomes = [pl.col(flat_column(side, OUTCOME_FIELD)).cast(pl.Int64) for side in SIDES]
    return table.with_columns(outcomes).drop(_INTERNAL_COLUMNS)


def write_pairs(pairs: pl.DataFrame, path: str | Path) -> Path:
    """Write a pair table back in the user's nested format: `.json` (array), `.parquet`, or JSON
    Lines otherwise. Atomic: the file appears complete or not at all."""
    path = Path(path)
    nested = to_nested(pairs)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            nested.write_parquet(tmp, compression="zstd")
        elif path.suffix == ".json":
            nested.write_json(tmp)
        else:
            nested.write_ndjson(tmp)
    return path


def to_nested(pairs: pl.DataFrame) -> pl.DataFrame:
    """Flat pair table -> records with `positive`/`negative` objects, as users write them (without
    the text key columns, which are ours, not the user's)."""
    pairs = pairs.drop(TEXT_KEY_COLUMNS, strict=False)
    original = {flat_column(side, field): (side, field) for side in SIDES for field in SIDE_FIELDS}
    side_columns: dict[str, list[pl.Expr]] = {side: [] for side in SIDES}
    top: list[str] = []
    for column in pairs.columns:
        side, _, rest = column.partition("_")
        if column in original:
            side, field = original[column]
            side_columns[side].append(pl.col(column).alias(field))
        elif side in SIDES and rest:
            side_columns[side].append(pl.col(column).alias(rest))
        else:
            top.append(column)
    return pairs.select(*top, *(pl.struct(side_columns[side]).alias(side) for side in SIDES))


# --- reading one file -------------------------------------------------------------------------


def read_utf8(path: str | Path) -> str:
    """The text of `path`, or `DataError` naming the file (and the line of the first byte that is
    not UTF-8) when it cannot be read."""
    return decode_utf8(read_bytes(path), str(path))


def read_bytes(path: str | Path) -> bytes:
    """The bytes of `path`, or `DataError` naming the file when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DataError([Problem(str(path), f"cannot read file: {e.strerror or e}")]) from None


def read_text_maybe_gzipped(path: str | Path, expected: str = "") -> str:
    """The UTF-8 text of `path`, gunzipped when its first bytes say gzip (whatever its name), or
    `DataError` naming the file: unreadable, a damaged gzip, a `.gz` name on a file that is not
    gzip, or not UTF-8. `expected` ("; expected ...") ends the gzip problems' messages."""
    path = Path(path)
    file = str(path)
    raw = read_bytes(path)
    if raw.startswith(b"\x1f\x8b"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError([Problem(file, f"not a valid gzip file ({e}){expected}")]) from None
    elif path.name.endswith(".gz"):
        raise DataError([Problem(file, f"named .gz but not gzip-compressed{expected}")])
    return decode_utf8(raw, file)


def decode_utf8(raw: bytes, file: str) -> str:
    """`raw` as UTF-8 text, or `DataError` naming `file` and the line of the first byte that is not."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError([Problem(file, f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); save the file as UTF-8", line=line)]) from None


# --- which kind of file ----------------------------------------------------------------------

# The fields that tell the project's record kinds apart, at the top level of a record: runs
# (data/runs.py), pairs (this module) and the records `pipeline score` reads.
RECORD_KINDS = {
    "runs": ("run_id", "rounds"),
    "pairs": ("pair_id", "target_module", "positive", "negative"),
    "score records": ("context", "modules"),
}


def record_kind(record: object) -> str | None:
    """The kind (`RECORD_KINDS`) whose fields the record has most of; None for a record with none
    of them, or as many of two kinds', or that is not an object."""
    if not isinstance(record, dict):
        return None
    matches = sorted(((sum(name in record for name in names), kind) for kind, names in RECORD_KINDS.items()), reverse=True)
    (best, kind), (second, _) = matches[0], matches[1]
    return kind if best and best > second else None


def file_kind(path: str | Path) -> str | None:
    """What a file holds, told apart by content, not by its name: "runs", "pairs" or "score
    records", from the fields of its first record (a Parquet file: of its columns); None when that
    cannot be told (the file is empty, unreadable, not JSON, or its first record is of no kind),
    so that the reader of the caller's choice then names what is wrong with it. Reads only the
    first line of a JSON Lines file."""
    return record_kind(first_record(path, columns_only=True))


def first_record(path: str | Path, columns_only: bool = False) -> object:
    """The first record of a JSON array, JSON Lines or Parquet file (`columns_only`: of a Parquet
    file, its column names as the keys of a record of Nones); None when there is none or the file
    cannot be read as any of them."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            start = f.read(4)
            if start == b"PAR1":
                import pyarrow.parquet as pq

                if columns_only:
                    return dict.fromkeys(pq.read_schema(path).names)
                batch = next(pq.ParquetFile(path).iter_batches(batch_size=1), None)
                return batch.to_pylist()[0] if batch is not None and batch.num_rows else None
            f.seek(0)
            if f.read(64).lstrip().startswith(b"["):
                records = json.loads(path.read_bytes().decode("utf-8"))
                return records[0] if isinstance(records, list) and records else None
            f.seek(0)
            for raw in f:
                if raw.strip():
                    return json.loads(raw.decode("utf-8"))
    except (OSError, ValueError, RecursionError, pa.ArrowException):
        return None
    return None


# --- strict JSON ----------------------------------------------------------------------------

MAX_DEPTH = 100  # our records nest 3 or 4 levels; Python's parser fails near 1000 with RecursionError
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{},]')


class JSONProblem(Exception):
    """A value strict JSON readers refuse (NaN, Infinity) or nesting Python's parser cannot read;
    `record` and `field` locate it inside the parsed text, `offset` is its character position."""

    def __init__(self, message: str, offset: int | None = None, record: int | None = None, field: str | None = None):
        super().__init__(message)
        self.message, self.offset, self.record, self.field = message, offset, record, field

    def line_in(self, text: str) -> int | None:
        return None if self.offset is None else text.count("\n", 0, self.offset) + 1


class _NonFinite(float):
    """What `parse_json` reads NaN, Infinity and -Infinity as, before it refuses them."""


def parse_json(text: str, array_of_records: bool = False) -> object:
    """`json.loads` for the files users give: `JSONDecodeError` for text that is not JSON, and
    `JSONProblem` (with record and field) for what Python reads but other readers do not: NaN,
    Infinity and -Infinity, which are not JSON and would reach outcomes and outputs as floats; and
    nesting deeper than `MAX_DEPTH`, where Python's parser raises `RecursionError`.
    `array_of_records`: the text is a JSON array whose elements are records (record = index)."""
    constants: list[str] = []  # NaN, Infinity, -Infinity as written; the parser calls this only for them

    def non_finite(name: str) -> float:
        constants.append(name)
        return _NonFinite(name)

    try:
        value = json.loads(text, parse_constant=non_finite)
    except RecursionError:
        raise _too_deep(text, array_of_records) from None
    if constants:
        problem, path = f"{constants[0]} is not a JSON number (NaN and Infinity are not JSON); write a finite number or null", _path_to(value, _is_non_finite)
    elif _SURROGATE_ESCAPE.search(text) and (path := _path_to(value, _is_lone_surrogate)) is not None:
        problem = "a lone surrogate (an escape such as \\ud800 without its pair) is not text; write valid Unicode"
    else:
        return value
    record, field = (path[0], path[1:]) if array_of_records and path else (None, path)
    raise JSONProblem(problem, record=record, field=_field_name(field))


# only escapes can put a surrogate into parsed text (raw UTF-8 cannot hold one), so files without
# them skip the walk over every string
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _is_non_finite(item: object) -> bool:
    return type(item) is _NonFinite


def _is_lone_surrogate(item: object) -> bool:
    if not isinstance(item, str):
        return False
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _path_to(value: object, wanted) -> list | None:
    """The keys and indices leading to the first item inside `value` that is `wanted`, or None
    (iterative, so deep nesting cannot overflow)."""
    stack = [(value, [])]
    while stack:
        item, path = stack.pop()
        if wanted(item):
            return path
        children = item.items() if isinstance(item, dict) else enumerate(item) if isinstance(item, list) else ()
        stack.extend((child, [*path, key]) for key, child in reversed(list(children)))
    return None


def _field_name(path: list) -> str | None:
    name = "".join(f"[{step}]" if isinstance(step, int) else f".{step}" for step in path).lstrip(".")
    return name or None


def _too_deep(text: str, array_of_records: bool) -> JSONProblem:
    """Where `text` first nests deeper than `MAX_DEPTH`: its offset, record and the keys above it."""
    keys: list[str | None] = []  # per open bracket, the key it is the value of
    key, record = None, 0
    for token in _TOKENS.finditer(text):
        value = token.group()
        if value[0] == '"':
            key = json.loads(value.rstrip(": \t\r\n")) if value.endswith(":") else None
        elif value in "[{":
            keys.append(key)
            key = None
            if len(keys) > MAX_DEPTH:
                field = [k for k in keys[2 if array_of_records else 1 :] if k is not None]
                return JSONProblem(
                    f"nested more than {MAX_DEPTH} levels deep; a record is an object of strings, numbers and small objects",
                    token.start(), record if array_of_records else None, ".".join(field) or None,
                )
        elif value in "]}":
            if keys:
                keys.pop()
            key = None
        elif len(keys) == 1:  # a comma between top-level elements
            record += 1
    return JSONProblem("nested too deeply to read (Python's parser gave up)")


def _load_file(path: Path, modules: Sequence[str]) -> tuple[pl.DataFrame | None, list[Problem]]:
    file = str(path)
    try:
        flat, problems = _read_json_lines(path), []
        if flat is None:  # not JSON Lines, or Arrow declined it: the file is read again
            raw = path.read_bytes()
            flat, problems = _read_parquet(path) if raw.startswith(b"PAR1") else _read_json(file, raw)
    except OSError as e:
        return None, [Problem(file, f"cannot read file: {e.strerror or e}")]
    if flat is None:
        return None, problems
    return flat, problems + _reserved_columns(file, flat) + _check_values(flat, modules)


def _reserved_columns(file: str, flat: pl.DataFrame) -> list[Problem]:
    """An extra field whose column would pass for a text key column, which the stages trust as the
    texts' cache keys instead of hashing the texts again."""
    return [
        Problem(file, "this name is reserved for the key of a text in the loaded table; rename the field", field=field_path(column))
        for column in TEXT_KEY_COLUMNS
        if column in flat.columns
    ]


def _read_json(file: str, raw: bytes) -> tuple[pl.DataFrame | None, list[Problem]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        return None, [Problem(file, f"not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 1]!r}); save the file as UTF-8", line=line)]
    stripped = text.lstrip()
    if not stripped:
        return None, [Problem(file, "file is empty; expected a JSON array or JSON Lines of pair records")]

    lines: list[int] | None = None
    if stripped.startswith("["):
        try:
            records = parse_json(text, array_of_records=True)
        except json.JSONDecodeError as e:
            hint = "" if text.rstrip().endswith("]") else " (the file looks truncated: it does not end with ']')"
            return None, [Problem(file, f"not valid JSON{hint}: {e.msg} at column {e.colno}", line=e.lineno)]
        except JSONProblem as e:
            return None, [Problem(file, e.message, record=e.record, line=e.line_in(text), field=e.field)]
    else:  # JSON Lines: one record per non-blank line; lines end at "\n" only, as Arrow's reader
        # reads them (a U+2028 inside a string is text, not a line break)
        records, lines, problems = [], [], []
        for number, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append(parse_json(line))
                lines.append(number)
            except json.JSONDecodeError as e:
                problems.append(Problem(file, f"not valid JSON: {e.msg} at column {e.colno}", line=number))
            except JSONProblem as e:
                problems.append(Problem(file, e.message, line=number, field=e.field))
        if problems:
            return None, problems
    if not isinstance(records, list):
        return None, [Problem(file, f"expected a JSON array of pair records, got a JSON {type(records).__name__}")]
    return _records_to_frame(file, records, lines)


# --- JSON Lines through Arrow ------------------------------------------------------------------

# Arrow's JSON reader recurses and crashes the process somewhere between 10,000 and 20,000 levels
# of nesting, so a line with more opening brackets than this (in strings too: a cheap bound) goes
# to the Python reader.
_ARROW_MAX_BRACKETS = 5_000
# Bytes Arrow parses per block: 4 MiB parsed 700 MB of pairs ~20% faster than 16 MiB on 2 cores
# (bench/scale.py's load file); a block grows to hold the file's longest line, which Arrow needs.
_ARROW_BLOCK = 4 << 20
_JSON_SCHEMA = pa.schema(list(_RECORD_TYPE))
_PLAIN_TYPES = (pa.null(), pa.bool_(), pa.int64(), pa.float64(), pa.string())


def _read_json_lines(path: Path) -> pl.DataFrame | None:
    """The JSON Lines file at `path` parsed by Arrow in one call and flattened as
    `_records_to_frame` does, or None when the Python reader must read the file: when it is not
    JSON Lines, when Arrow refuses it (syntax, wrong types, lone surrogates, duplicate keys,
    non-object lines) and when Arrow might read it differently (NaN and Infinity, which Arrow takes;
    nesting deeper than `MAX_DEPTH`; two records on one line; a byte-order mark; bytes that are not
    UTF-8; extra fields Arrow would read as other than plain JSON values). The file is memory-mapped,
    not copied: its pages come from the page cache as Arrow parses them."""
    with path.open("rb") as f:
        head = f.read(1 << 16)
    first = head.lstrip(b" \t\r\n")[:1]
    if head.startswith((b"PAR1", b"\xef\xbb\xbf")) or first in (b"[", b""):
        return None
    with pa.memory_map(str(path)) as mapped:
        raw = mapped.read_buffer()
    with ThreadPoolExecutor(1) as pool:  # two passes over the bytes at once, neither holds the GIL
        utf8 = pool.submit(_is_utf8, raw)
        starts = _line_starts(raw)
        if not utf8.result():
            return None
    if _too_deep_for_arrow(raw, starts):
        return None
    try:
        table = pa_json.read_json(
            pa.BufferReader(raw),
            read_options=pa_json.ReadOptions(block_size=max(_ARROW_BLOCK, int(np.diff(starts, append=len(raw)).max()) + 1)),
            parse_options=pa_json.ParseOptions(explicit_schema=_JSON_SCHEMA, unexpected_field_behavior="infer"),
            # mimalloc, pyarrow's default pool on Linux, parsed a million pairs 3.4-5.0 s on 2 cores
            # where the system allocator took 2.9-3.3 s (bench/scale.py's load file)
            memory_pool=pa.system_memory_pool(),
        )
    except (pa.ArrowException, UnicodeDecodeError):
        return None
    lines = _record_lines(raw, starts)
    del raw
    if len(lines) != table.num_rows or not all(_plain(column, 1) for column in table.columns):
        return None
    flat = _flatten_with_extras(table)
    if flat is None:
        return None
    return _with_location(flat, str(path), list(range(table.num_rows)), lines)


def _is_utf8(raw: pa.Buffer) -> bool:
    """Arrow's UTF-8 check of all of `raw` (its JSON reader does not check strings)."""
    offsets = pa.array([0, len(raw)], pa.int64()).buffers()[1]
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, raw]).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _line_starts(raw: pa.Buffer, chunk: int = 1 << 24) -> np.ndarray:
    """The offset at which each line of `raw` starts (lines end at "\n"), found a chunk at a time
    so that no array as large as the file is made."""
    data = np.frombuffer(raw, np.uint8)
    newlines = [np.flatnonzero(data[start : start + chunk] == ord("\n")) + start for start in range(0, len(data), chunk)]
    return np.concatenate([np.zeros(1, np.int64), *(n + 1 for n in newlines)])


def _too_deep_for_arrow(raw: pa.Buffer, starts: np.ndarray) -> bool:
    """Whether a line has more than `_ARROW_MAX_BRACKETS` opening brackets; only lines at least
    that long can, so only they are counted."""
    ends = np.append(starts[1:], len(raw))
    long = np.flatnonzero(ends - starts > _ARROW_MAX_BRACKETS)
    data = np.frombuffer(raw, np.uint8)
    lines = (data[a:b] for a, b in zip(starts[long].tolist(), ends[long].tolist()))
    return any(np.count_nonzero(line == ord("[")) + np.count_nonzero(line == ord("{")) > _ARROW_MAX_BRACKETS for line in lines)


def _record_lines(raw: pa.Buffer, starts: np.ndarray) -> list[int]:
    """The 1-based line of each record: the lines holding more than JSON whitespace (only the few
    lines that start with whitespace are looked at one by one)."""
    ends = np.append(starts[1:] - 1, len(raw))
    filled = np.flatnonzero(ends > starts)
    indented = filled[np.frombuffer(raw, np.uint8)[starts[filled]] <= ord(" ")]  # space, tab, CR
    blank = [i for i in indented.tolist() if not raw[starts[i] : ends[i]].to_pybytes().strip(b" \t\r")]
    return (np.setdiff1d(filled, blank, assume_unique=True) + 1).tolist()


def _plain(column: pa.ChunkedArray | pa.Array, depth: int) -> bool:
    """True when `column` holds only what Python's reader reads the same way: strings, booleans,
    int64, finite doubles (Arrow takes NaN and Infinity, strict JSON does not), nulls, and lists and
    objects of them, nested no deeper than `MAX_DEPTH` (not, say, strings Arrow read as timestamps)."""
    kind = column.type
    if depth > MAX_DEPTH:
        return False
    if pa.types.is_struct(kind):
        return all(_plain(pc.struct_field(column, [i]), depth + 1) for i in range(kind.num_fields))
    if pa.types.is_list(kind):
        return _plain(pc.list_flatten(column), depth + 1)
    if kind == pa.float64():
        return pc.all(pc.is_finite(column)).as_py() is not False
    return kind in _PLAIN_TYPES


def _flatten_with_extras(table: pa.Table) -> pl.DataFrame | None:
    """Arrow's records -> the frame `_records_to_frame` makes of the same records: the known
    columns, which sides are missing, then the extra fields (top-level ones, then each side's),
    sorted by name as `_extra_columns` orders them. None when two fields would take one column's
    name (the Python reader lets the later win)."""
    columns = [(name, column, 0) for name, column in zip(table.column_names, table.columns) if name not in SIDES]
    for order, side in enumerate(SIDES, start=1):
        struct = table.column(side)
        columns += [(flat_column(side, field.name), child, order) for field, child in zip(struct.type, struct.flatten())]
    named = {name: column for name, column, _ in columns}
    if len(named) != len(columns):
        return None
    extras = sorted((order, name) for name, _, order in columns if name not in _KNOWN_ORDER)
    flat = pl.from_arrow(pa.table({name: named[name] for name in _KNOWN_ORDER + [name for _, name in extras]}))
    missing = [pl.Series(f"_{side}_missing", table.column(side).is_null()) for side in SIDES]
    return flat.select(*_KNOWN_ORDER, *missing, *(name for _, name in extras))


_KNOWN_ORDER = list(TOP_FIELDS) + [flat_column(side, field) for side in SIDES for field in SIDE_FIELDS]


def _records_to_frame(file: str, records: list, lines: list[int] | None) -> tuple[pl.DataFrame | None, list[Problem]]:
    index = list(range(len(records)))
    try:
        array = pa.array(records, type=_RECORD_TYPE)
        problems: list[Problem] = []
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        # Slow path, only for files with wrongly typed values: find them, and keep checking the rest.
        problems = [p for i, record in enumerate(records) for p in _type_problems(file, i, record, lines)]
        bad = {p.record for p in problems}
        index = [i for i in index if i not in bad]
        records = [records[i] for i in index]
        array = pa.array(records, type=_RECORD_TYPE)
    flat = _flatten(pa.Table.from_struct_array(array)).with_columns(_extra_columns(records))
    return _with_location(flat, file, index, lines), problems


def _type_problems(file: str, i: int, record: object, lines: list[int] | None) -> list[Problem]:
    line = lines[i] if lines else None
    if not isinstance(record, dict):
        return [Problem(file, f"expected a JSON object, got {_kind(record)}", record=i, line=line)]
    pair_id = record.get("pair_id") if isinstance(record.get("pair_id"), str) else None
    problems = []

    def wrong(field: str, value: object, expected: str) -> None:
        problems.append(Problem(file, f"expected {expected}, got {_kind(value)}", i, line, pair_id, field))

    for name in TOP_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            wrong(name, record[name], "a string")
    for side in SIDES:
        value = record.get(side)
        if value is None:
            continue
        if not isinstance(value, dict):
            wrong(side, value, "an object with trajectory_full_context, module_k_all_rounds, outcome")
            continue
        for name, kind in _EXPECTED_KIND.items():
            if value.get(name) is not None and not isinstance(value[name], kind):
                wrong(f"{side}.{name}", value[name], "a string" if kind is str else "a number (1 or 0)")
    return problems


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({json.dumps(value)[:40]})"


def _extra_columns(records: list) -> list[pl.Series]:
    """Fields the format does not name are kept as columns (inside a side: `<side>_<field>`)."""
    top_keys = set().union(*(r.keys() for r in records)) - set(TOP_FIELDS) - set(SIDES) if records else set()
    columns = [_column(key, [r.get(key) for r in records]) for key in sorted(top_keys)]
    for side in SIDES:
        sides = [r.get(side) or {} for r in records]
        keys = set().union(*(s.keys() for s in sides)) - set(SIDE_FIELDS) if sides else set()
        columns += [_column(flat_column(side, key), [s.get(key) for s in sides]) for key in sorted(keys)]
    return columns


def _column(name: str, values: list) -> pl.Series:
    try:
        return pl.Series(name, pa.array(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep each value as its JSON text
        return pl.Series(name, [None if v is None else json.dumps(v) for v in values], dtype=pl.String)


def _read_parquet(path: Path) -> tuple[pl.DataFrame | None, list[Problem]]:
    file = str(path)
    try:
        frame = pl.read_parquet(path)
    except Exception as e:  # polars raises several error types for damaged files
        return None, [Problem(file, f"not a readable Parquet file: {e}")]
    problems = [Problem(file, "column missing", field=name) for name in TOP_FIELDS + SIDES if name not in frame.columns]
    for name in TOP_FIELDS:
        if name in frame.columns and frame.schema[name] != pl.String:
            problems.append(Problem(file, f"column has type {frame.schema[name]}, expected String", field=name))
    for side in SIDES:
        if side not in frame.columns:
            continue
        dtype = frame.schema[side]
        if not isinstance(dtype, pl.Struct):
            problems.append(Problem(file, f"column has type {dtype}, expected a struct of {', '.join(SIDE_FIELDS)}", field=side))
            continue
        children = {f.name: f.dtype for f in dtype.fields}
        for name in SIDE_FIELDS:
            if name not in children:
                problems.append(Problem(file, "column missing", field=f"{side}.{name}"))
            elif name == OUTCOME_FIELD and not (children[name].is_numeric() or children[name] == pl.Boolean):
                problems.append(Problem(file, f"column has type {children[name]}, expected a number", field=f"{side}.{name}"))
            elif name != OUTCOME_FIELD and children[name] != pl.String:
                problems.append(Problem(file, f"column has type {children[name]}, expected String", field=f"{side}.{name}"))
    if problems:
        return None, problems
    sides = [
        pl.col(side).struct.field(f.name).alias(flat_column(side, f.name))
        for side in SIDES
        for f in frame.schema[side].fields
    ]
    flat = frame.select(
        *(pl.col(name) for name in frame.columns if name not in SIDES),
        *sides,
        *(pl.col(side).is_null().alias(f"_{side}_missing") for side in SIDES),
    ).with_columns(pl.col(flat_column(side, OUTCOME_FIELD)).cast(pl.Float64) for side in SIDES)
    return _with_location(flat, file, list(range(frame.height)), None), []


def _flatten(table: pa.Table) -> pl.DataFrame:
    """Arrow records with struct sides -> flat frame with `PAIR_COLUMNS`, and which sides are null."""
    side_missing = [pl.Series(f"_{side}_missing", table.column(side).is_null()) for side in SIDES]
    flat = table.flatten()
    names = [flat_column(*name.split(".", 1)) if "." in name else name for name in flat.column_names]
    return pl.from_arrow(flat.rename_columns(names)).with_columns(side_missing)


def _with_location(flat: pl.DataFrame, file: str, index: list[int], lines: list[int] | None) -> pl.DataFrame:
    return flat.with_columns(
        _file=pl.lit(file),
        _record=pl.Series(index, dtype=pl.Int64),
        _line=pl.Series([lines[i] for i in index] if lines else [None] * len(index), dtype=pl.Int64),
    )


# --- value checks, vectorised ---------------------------------------------------------------


def _check_values(flat: pl.DataFrame, modules: Sequence[str]) -> list[Problem]:
    """Every problem of every record, vectorised. Each check is (condition, field, message); the
    `suspect` conditions, cheap and true wherever a check's condition is, pick the rows that may
    have a problem, and only those rows are checked and turned into messages, so a million clean
    records never strip or format a text."""
    checks: list[tuple[pl.Expr, str, str | pl.Expr]] = [(pl.col(f"_{side}_missing"), side, "missing (or null)") for side in SIDES]
    for column in PAIR_COLUMNS:
        side = column.split("_")[0]
        missing = pl.col(column).is_null()
        if side in SIDES:  # a missing side is one problem, not one per field
            missing = missing & ~pl.col(f"_{side}_missing")
        checks.append((missing, field_path(column), "missing (or null)"))
        if flat.schema[column] == pl.String:
            # `\s` is Unicode White_Space, what `strip_chars` strips; the anchors stop the search
            # at the first other character, where stripping would copy the whole text
            # a context or module text of zero-width characters only is blank too (an id or task is
            # compared, not read: a zero-width space there is a character)
            empty = pl.col(column).str.contains(BLANK_PATTERN if side in SIDES else r"^\s*$")
            checks.append((empty, field_path(column), "empty or whitespace-only text"))
    allowed = ", ".join(modules)
    checks.append(
        (
            ~pl.col("target_module").is_in(list(modules)) & ~pl.col("target_module").str.contains(r"^\s*$"),
            "target_module",
            pl.format("unknown module '{}' (expected one of: " + allowed + ")", pl.col("target_module")),
        )
    )
    for side, expected in EXPECTED_OUTCOME.items():
        column = flat_column(side, OUTCOME_FIELD)
        # NaN and infinity come only from Parquet (JSON has no such numbers, see `parse_json`)
        checks.append((~pl.col(column).is_finite(), field_path(column), pl.format("outcome {} is not a number; expected 1 or 0", pl.col(column).cast(pl.String))))
        checks.append(
            (
                (pl.col(column) != expected) & pl.col(column).is_finite(),
                field_path(column),
                pl.format(f"outcome {{}} contradicts the pair: the {side} side must have outcome {expected}", _number_text(pl.col(column))),
            )
        )
    suspect = [condition for condition, _, _ in checks]  # cheap enough to run on every row
    positive, negative = pl.col("positive_module_text"), pl.col("negative_module_text")
    same = positive.str.strip_chars() == negative.str.strip_chars()
    checks.append((same, "negative.module_k_all_rounds", "identical to positive.module_k_all_rounds, so the pair states no preference"))
    # stripping is not: texts that differ and neither starts nor ends with whitespace differ once stripped too
    suspect.append((positive == negative) | _edge_whitespace(positive) | _edge_whitespace(negative))

    found = (
        flat.filter(pl.any_horizontal([condition.fill_null(False) for condition in suspect]))
        .select(
            pl.concat_list(
                [pl.when(condition.fill_null(False)).then(pl.struct(field=pl.lit(field), message=pl.lit(message) if isinstance(message, str) else message)) for condition, field, message in checks]
            )
            .list.drop_nulls()
            .alias("issues"),
            "_file",
            "_record",
            "_line",
            "pair_id",
        )
        .filter(pl.col("issues").list.len() > 0)
    )
    return [
        Problem(row["_file"], issue["message"], row["_record"], row["_line"], row["pair_id"], issue["field"])
        for row in found.iter_rows(named=True)
        for issue in row["issues"]
    ]


def _edge_whitespace(text: pl.Expr) -> pl.Expr:
    """Whether a text starts or ends with whitespace (two anchored searches: one with both
    anchors' alternatives scans the whole text)."""
    return text.str.contains(r"^\s") | text.str.contains(r"\s$")


def _number_text(number: pl.Expr) -> pl.Expr:
    """1.0 -> "1", 0.5 -> "0.5": outcomes read as floats but are written as users wrote them."""
    return pl.when(number == number.floor()).then(number.cast(pl.Int64).cast(pl.String)).otherwise(number.cast(pl.String))


def _duplicate_pair_ids(table: pl.DataFrame) -> list[Problem]:
    duplicated = table.filter(pl.col("pair_id").is_duplicated() & pl.col("pair_id").is_not_null())
    first = duplicated.group_by("pair_id").agg(pl.col("_file").first(), pl.col("_record").first())
    firsts = {row["pair_id"]: (row["_file"], row["_record"]) for row in first.iter_rows(named=True)}
    problems = []
    for row in duplicated.iter_rows(named=True):
        file, record = firsts[row["pair_id"]]
        if (file, record) != (row["_file"], row["_record"]):
            problems.append(
                Problem(row["_file"], f"duplicate pair_id, first seen in {file} record {record}", row["_record"], row["_line"], row["pair_id"], "pair_id")
            )
    return problems
