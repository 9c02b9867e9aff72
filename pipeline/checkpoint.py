"""What a checkpoint folder holds besides its heads: the encoder its heads read vectors of, and the
library versions it was made with. Shared by the recipes that write checkpoints (train-heads,
finetune) and the code that reads them (evaluate, the reward API).
"""

import logging
import os
import platform
from pathlib import Path

from features.encoder import MINILM, EncoderMismatch, TextEncoder
from heads.model import CheckpointError
from pipeline import __version__

logger = logging.getLogger(__name__)


def load_checkpoint_encoder(folder: str | Path, fingerprint: dict, name: str | None = None, device: str = "auto") -> TextEncoder:
    """The encoder whose vectors a checkpoint's heads were trained on: `name` when given, else the
    checkpoint's own fine-tuned `encoder/` folder (stage 1), else the model its fingerprint names
    (`checkpoint_encoder_source`); loaded with the fingerprint's prompt, token limits and
    truncation, refused (CheckpointError) when its vectors would differ from the ones the heads
    know, and the folder it was read from logged."""
    name = name or checkpoint_encoder_source(folder, fingerprint["encoder"])
    try:
        encoder = TextEncoder.load_matching(fingerprint, name, device=device)
    except EncoderMismatch as e:
        raise CheckpointError(f"{e}: those are not the vectors {folder}'s heads were trained on. Point --encoder at the model the checkpoint was trained with.") from None
    loaded = encoder.folder.resolve() if encoder.folder is not None else f"{name} (from the Hugging Face Hub cache)"
    logger.info("encoder of %s: %s", folder, loaded)
    return encoder


def checkpoint_encoder_source(folder: str | Path, recorded: str) -> str:
    """What to load for a checkpoint whose config.json names the encoder `recorded`: its own
    `encoder/` folder when it has one; a relative folder name resolved against the checkpoint
    folder, never the current directory (a checkpoint points only at what it owns, wherever it is
    run from); else `recorded` as a Hub id, an absolute folder or `minilm`. A relative name that is
    not in the checkpoint folder but would be found in the current one is refused."""
    folder = Path(folder)
    if (folder / "encoder").is_dir():
        return str(folder / "encoder")
    if Path(recorded).expanduser().is_absolute() or recorded.strip().lower() == MINILM:
        return recorded
    if (folder / recorded).is_dir():
        return str(folder / recorded)
    if os.path.exists(recorded) or recorded.startswith(("./", "../")) or recorded.count("/") > 1:
        raise CheckpointError(
            f"{folder / 'config.json'} names the encoder folder {recorded!r}, which is not inside {folder} (a relative encoder "
            f"folder is read from the checkpoint folder, not the current directory); copy it there, or pass --encoder FOLDER"
        )
    return recorded


def library_versions() -> dict[str, str]:
    """The versions a checkpoint was made with, read from package metadata (importing
    sentence-transformers just to read its version would cost seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"pipeline": __version__, "python": platform.python_version()}
    for package in ("torch", "numpy", "sentence-transformers", "transformers", "duckdb", "polars", "pyarrow"):
        try:
            versions[package.replace("-", "_")] = version(package)
        except PackageNotFoundError:
            versions[package.replace("-", "_")] = "not installed"
    return versions
