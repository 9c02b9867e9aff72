"""What a checkpoint folder holds besides its heads: the encoder its heads read vectors of, and the
library versions it was made with. Shared by the recipes that write checkpoints (train-heads,
finetune) and the code that reads them (evaluate, the reward API).
"""

import platform
from pathlib import Path

from features.encoder import EncoderMismatch, TextEncoder
from heads.model import CheckpointError
from pipeline import __version__


def load_checkpoint_encoder(folder: str | Path, fingerprint: dict, name: str | None = None, device: str = "auto") -> TextEncoder:
    """The encoder whose vectors a checkpoint's heads were trained on: `name` when given, else the
    checkpoint's own fine-tuned `encoder/` folder (stage 1), else the model its fingerprint names;
    loaded with the fingerprint's prompt, token limits and truncation, and refused (CheckpointError)
    when its vectors would differ from the ones the heads know."""
    own = Path(folder) / "encoder"
    name = name or (str(own) if own.is_dir() else fingerprint["encoder"])
    try:
        return TextEncoder.load_matching(fingerprint, name, device=device)
    except EncoderMismatch as e:
        raise CheckpointError(f"{e}: those are not the vectors {folder}'s heads were trained on. Point --encoder at the model the checkpoint was trained with.") from None


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
