"""Atomic writes of files and folders: an output appears complete, or not at all."""

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from data.errors import UserError


def current_umask() -> int:
    """The process's umask, read without changing it: Linux reports it in /proc/self/status; else
    the umask read once at import (os.umask sets while it reads, which races other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _UMASK_AT_IMPORT


def _umask_at_import() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK_AT_IMPORT = _umask_at_import()


def file_mode() -> int:
    """The mode `open()` would give a new file: 0o666 less the umask (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode `mkdir` would give a new folder: 0o777 less the umask (0755 under umask 022)."""
    return 0o777 & ~current_umask()


def follow_umask(path: str | Path) -> None:
    """Give `path`, and all under it when it is a folder, the mode a new file or folder gets under
    the umask (0644 / 0755 under umask 022), keeping a file's execute bits (as 0777 less the umask)."""
    path = Path(path)
    folder, file = folder_mode(), file_mode()
    if not path.is_dir():
        os.chmod(path, folder if os.stat(path).st_mode & 0o111 else file)
        return
    os.chmod(path, folder)
    for root, folders, files in os.walk(path):
        for name in folders:
            if not os.path.islink(os.path.join(root, name)):
                os.chmod(os.path.join(root, name), folder)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, folder if os.stat(full).st_mode & 0o111 else file)


@contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path` (atomic on
    POSIX), on any error it is removed and `path` is left as it was. `durable` also fsyncs the
    file before the rename and the folder after it (and the parent of every folder it had to
    create), so that after a power cut or a crash of the file server `path` holds the whole new
    content: what a file that lists it may rely on."""
    path = Path(path)
    created = [folder for folder in path.parents if not folder.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:  # mkstemp makes 0600 whatever the umask: give the file the mode any new file gets
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        follow_umask(tmp)  # again: a writer may have replaced the file (safetensors writes 0600)
        if durable:
            fsync_path(tmp)
        os.replace(tmp, path)
        if durable:
            for folder in [path.parent, *(folder.parent for folder in created)]:
                fsync_path(folder)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync_path(path: str | Path) -> None:
    """fsync a file's content, or a folder's entries (the renames and removals made in it)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def json_text(value: object, **dumps) -> str:
    """`json.dumps` for the files we write, which every JSON reader must accept: a float that is
    not finite (a diverged loss, an undefined statistic) is written as null, where Python's json
    would write NaN or Infinity, which are not JSON."""
    return json.dumps(_finite(value), allow_nan=False, **dumps)


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_text_atomic(path: str | Path, text: str, durable: bool = False) -> Path:
    with atomic_path(path, durable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def is_leftover(name: str) -> bool:
    """A hidden temporary name our atomic writers use (`.NAME.*.tmp`, `.NAME.*.old`), which a
    killed run can leave behind."""
    return name.startswith(".") and name.endswith((".tmp", ".old"))


def check_output_folder(path: str | Path, ours: Sequence[str], kind: str, overwrite: bool) -> None:
    """Refuse to write over a folder that is not one of ours, before anything is written. A missing
    or empty folder is fine; so is one holding every name in `ours` (what each `kind` this
    pipeline writes holds); anything else only with `overwrite`, the user's --overwrite."""
    path = Path(path)
    if overwrite or not path.is_dir():
        return
    # what a killed writer of ours leaves (atomic_dir's and atomic_path's hidden temp names) is no one else's
    names = sorted(p.name for p in path.iterdir() if not is_leftover(p.name))
    if not names or all((path / name).exists() for name in ours):
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise UserError(
        f"--out {path} holds {shown} and is not a {kind} this pipeline wrote (one holds {', '.join(ours)}); nothing was written. "
        "Choose another --out, or pass --overwrite to write over it"
    )


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` (an existing folder
    is moved aside first and removed after), on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        follow_umask(tmp)  # mkdtemp makes 0700, and some writers (safetensors) 0600 files, whatever the umask
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --- output files: replace only what is ours ---------------------------------------------------

# What each file-writing verb may replace without --overwrite: a file of the kind it writes, told
# apart by its first record (data.load.first_record), so that a user's own file of the same
# format is never replaced by another kind of content. kind -> (what it is, test of a record).
OUTPUT_KINDS = {
    "synthetic pairs": (
        "pairs `pipeline synth` wrote (pair_id synth-...)",
        lambda r: isinstance(r.get("pair_id"), str) and r["pair_id"].startswith("synth-") and "positive" in r,
    ),
    "mined pairs": (
        "pairs `pipeline pairs` mined (pair_id RUN-vs-RUN-MODULE)",
        lambda r: isinstance(r.get("pair_id"), str) and "-vs-" in r["pair_id"] and "positive" in r,
    ),
    "imported runs": (
        "runs `pipeline import` wrote (run_id FILE:...)",
        lambda r: isinstance(r.get("run_id"), str) and ":" in r["run_id"] and isinstance(r.get("rounds"), list),
    ),
    "scores": ("records `pipeline score` wrote (with \"scores\")", lambda r: isinstance(r.get("scores"), dict)),
}


def side_config(path: str | Path) -> Path:
    """The config a verb writes beside its output file: `<stem>.config.yaml`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.config.yaml")


def same_file(a: str | Path, b: str | Path) -> bool:
    """`a` and `b` are one file: the same path once resolved (symlinks followed), or hard links."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_file(path: str | Path, inputs: Sequence[str | Path], kind: str, overwrite: bool, config_sections: Sequence[str] = ()) -> None:
    """Refuse, before any work, to write a file over what the user did not ask to replace:
    - `path` (or its side config, when the verb writes one: `config_sections`, the sections such a
      config holds, given) is one of `inputs` (resolved,
      symlinks and hard links included): always, --overwrite or not;
    - `path` is a folder;
    - `path` exists, is not empty, and is not of `kind` (OUTPUT_KINDS): unless `overwrite`;
    - the side config `<stem>.config.yaml` exists and is not a config this pipeline wrote (a YAML
      mapping whose keys are config sections): unless `overwrite`."""
    path = Path(path)
    side = bool(config_sections)
    outputs = [("--out", path)] + ([("the config beside --out", side_config(path))] if side else [])
    for what, output in outputs:
        for given in inputs:
            if Path(given).exists() and same_file(output, given):
                raise UserError(
                    f"{what} {output} is the input {given}: writing it would destroy what is being read; nothing was written. Choose another --out"
                )
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; this verb writes a file. Choose a file name for --out")
    if overwrite:
        return
    what, ours = OUTPUT_KINDS[kind]
    if path.exists() and path.stat().st_size > 0 and not _first_record_is(path, ours):
        raise UserError(
            f"--out {path} exists and is not {what}; nothing was written. Choose another --out, or pass --overwrite to replace it"
        )
    config = side_config(path)
    if side and config.exists() and not is_our_config(config, config_sections):
        raise UserError(
            f"{config} (the config written beside --out {path.name}) exists and is not a config this pipeline wrote; nothing was written. "
            "Choose another --out, or pass --overwrite to replace it"
        )


def _first_record_is(path: Path, test) -> bool:
    from data.load import first_record

    record = first_record(path)
    return isinstance(record, dict) and bool(test(record))


def is_our_config(path: str | Path, sections: Sequence[str]) -> bool:
    """A config file this pipeline writes (`Config.save`): a YAML mapping of config `sections`."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(loaded, dict) and bool(loaded) and set(loaded) <= set(sections)


def read_once(paths: Sequence[str | Path], say=None) -> list[Path]:
    """`paths` without repeats (the same file given twice, by the same path, another path to it or
    a symlink), in the order first given; `say` gets one line per repeated file."""
    kept: list[Path] = []
    for path in map(Path, paths):
        twin = next((k for k in kept if same_file(k, path)), None)
        if twin is None:
            kept.append(path)
        elif say is not None:
            say(f"{twin} given twice: read once" if str(twin) == str(path) else f"{path} is {twin}, given twice: read once")
    return kept
