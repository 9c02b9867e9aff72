"""Stage 0b recipe: train one reward head per module on cached vectors only.

    pipeline train-heads splits/train.jsonl --val splits/val.jsonl --cache embeddings/ --out ckpt/   # reads the cache's only encoder
    pipeline train-heads ... --encoder minilm      # or names one, when the cache holds vectors of several
    pipeline train-heads more.jsonl --cache embeddings/ --out ckpt2/ --resume ckpt/     # continue on new data
    pipeline train-heads ... --search              # try the config's `search` grid, keep the lowest validation loss
    pipeline train-heads ... --ensemble 5          # 5 members on bootstrap resamples of the training tasks

Reads the vectors of the pairs' texts (of their pieces, under the `features.view` that cuts texts
into pieces) from the cache once into one matrix, each pair four text ids into it; the encoder
never runs (unless `--embed-missing` is asked for). Validates every epoch, stops early, keeps the best epoch, and
writes the checkpoint folder atomically: heads.safetensors, config.json, metrics.jsonl (and
search.jsonl + search.md after a search). The training loop is heads/fitting.py, the search
heads/search.py, the ensemble heads/ensemble.py.
"""

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from tqdm import tqdm

from cache import CacheError, EmbeddingCache, MissingVectors, Namespace, memory_map_above
from data.errors import UserError
from data.files import atomic_dir, check_output_folder, json_text
from data.guards import check_writable_folder, output_lock, scratch_folder
from data.schema import TEXT_COLUMNS, TEXT_KEY_COLUMNS
from data.splits import load_training_and_validation, module_pairs
from features.encoder import TextEncoder, pick_device
from features.pairs import pair_table_hash, with_text_keys
from features.views import PieceFeatures, View, ViewMismatch, check_same_view, piece_features
from heads.checkpoint import CheckpointRecord, save_checkpoint
from heads.model import CONFIG, WEIGHTS, CheckpointError, MultiModuleRewardModel
from heads.ensemble import RewardEnsemble, train_ensemble
from heads.fitting import Fit, HeadSetting, TrainingRecipe, fit_heads
from heads.blend import blend_line, blend_sample, describe_reward, fit_blend
from heads.search import SearchResult, grid, search_markdown
from heads.search import search as search_settings
from heads.training import PairTensors, evaluate_pairs, optimizer_steps
from pipeline.checkpoint import library_versions
from pipeline.config import Config
from pipeline.embed import embed_pairs


@dataclass
class TrainResult:
    best_epoch: int | None  # None for an ensemble: each member has its own (members)
    epochs_run: int
    validation: dict  # evaluate_pairs of the best epoch (of the members' mean, for an ensemble)
    seconds_per_epoch: float
    history: list[dict]  # per epoch: train_loss, lr, val (and member, for an ensemble)
    reward: str  # what the checkpoint's reward is made of, in words (heads/blend.py describe_reward)
    search: SearchResult | None = None  # with --search: every setting tried
    members: list[Fit] = field(default_factory=list)  # with --ensemble K > 1

def train_heads(
    files: Sequence[Path],
    cache_dir: Path,
    out: Path,
    config: Config,
    val_file: Path | None = None,
    resume: Path | None = None,
    namespace_id: str | None = None,
    embed_missing: bool = False,
    use_wandb: bool = False,
    progress: bool = True,
    say: Callable[[str], object] = print,
    overwrite: bool = False,
    search: bool = False,
) -> TrainResult:
    """Train the heads the config names; with `search`, every setting of the config's `search` grid
    first, keeping the one of lowest validation loss (config.yaml then records it); with
    `stage_0.ensemble` K > 1, K members on bootstrap resamples of the training tasks.

    Before anything is read: --out must be a folder this run can write (data/guards.py), and no
    other run may be writing it (its lock is held until the checkpoint is saved)."""
    check_writable_folder(out, "--out", inputs=[*files, val_file, cache_dir, resume])
    if embed_missing:
        check_writable_folder(cache_dir, "--cache", replaced=False)
    with output_lock(out, "train-heads"):
        check_output_folder(out, (CONFIG, WEIGHTS), "checkpoint", overwrite)  # before training, not after
        # Piece features larger than stage_0.memory_map_above_mb go to .npy files in a scratch
        # folder beside --out (on the disk chosen for the output; never in the cache, which this
        # run only reads and which may be read-only or shared), removed when training ends or fails.
        with scratch_folder(out, "pair-features") as scratch:
            return _train_heads(files, cache_dir, out, config, val_file, resume, namespace_id, embed_missing, use_wandb, progress, say, search, scratch)


def _train_heads(files, cache_dir, out, config, val_file, resume, namespace_id, embed_missing, use_wandb, progress, say, search, scratch: Path) -> TrainResult:
    modules, data = config.data.modules, config.data
    train, val = load_training_and_validation(files, val_file, modules, data.val_fraction, data.split_seed, data.group_by)
    train, val = with_text_keys(train), with_text_keys(val)  # each text hashed once, whatever reads them

    view = View.from_config(config.features, config.model)
    previous = MultiModuleRewardModel.load(resume) if resume else None
    if previous is not None:
        try:
            check_same_view(view, previous[1].view, f"the checkpoint {resume}")
        except ViewMismatch as e:
            raise CheckpointError(str(e)) from None
    every_file = [*files, *([val_file] if val_file else [])]
    try:
        namespace, note = select_namespace(cache_dir, config, namespace_id, previous[1] if previous else None)
    except CacheError:
        # --embed-missing embeds with the configured encoder, which is only a guess of the user's
        # when no encoder was named and the cache already holds others: then the listing stands
        guessing = "model.encoder" not in config.explicit and EmbeddingCache(cache_dir).namespaces()
        if not embed_missing or namespace_id is not None or previous is not None or guessing:
            raise
        report = embed_pairs(every_file, cache_dir, config, progress=progress)
        namespace, note = EmbeddingCache(cache_dir).select(namespace_id=report.namespace), f"embedded {report.new} texts into {cache_dir}"
    if note:
        say(note)
    view.check_vectors(namespace.fingerprint, f"the vectors of namespace {namespace.id} in {cache_dir}")
    try:
        vectors = read_features(namespace, train, val, view, config.stage_0.memory_map_above_mb, scratch)
    except MissingVectors as missing:
        if not embed_missing:
            raise CacheError(_missing_message(missing, cache_dir, namespace, every_file)) from None
        # the namespace's own encoder and settings, whichever the config names
        encoder = TextEncoder.load_matching(namespace.fingerprint, device=config.training.device, batch_size=config.model.batch_size)
        embed_pairs(every_file, cache_dir, config.override({"cache.dtype": namespace.dtype}), encoder=encoder, progress=progress)
        vectors = read_features(namespace.reload(), train, val, view, config.stage_0.memory_map_above_mb, scratch)
    # the texts are in the matrix now: keep only what the checkpoint and an ensemble still read
    hashes = {name: pair_table_hash(pairs, vectors[name].text_keys) for name, pairs in (("train", train), ("val", val))}
    counts = module_pairs(train, val, modules)
    group_by = config.data.group_by if config.data.group_by in train.columns else "task"
    # the blend's TF-IDF part reads texts: a bounded sample of them outlives the tables
    texts = {name: blend_sample(pairs, group_by, config.training.seed) for name, pairs in (("train", train), ("val", val))} if config.model.blend == "auto" else None
    train = train.select(group_by)
    del val

    device = pick_device(config.training.device)
    members = config.stage_0.ensemble
    if previous is not None and (search or members > 1):
        raise UserError("--resume continues one model's heads; train without it to --search or build an --ensemble")
    if previous is not None:
        model, _ = previous
        if model.modules_order != list(modules):
            raise CheckpointError(f"{resume} has heads for {model.modules_order}, but the config's modules are {list(modules)}")
    else:
        model = None
    order = model or MultiModuleRewardModel(1, modules, 0.0, "linear")  # PairTensors needs only its module order
    train_data = PairTensors.from_pieces(vectors["train"], order, device)
    val_data = PairTensors.from_pieces(vectors["val"], order, device)
    recipe = training_recipe(config, "attention" if view.attention else "mean")
    setting = head_setting(config)
    dimension = namespace.dimension
    started = time.perf_counter()

    if use_wandb and (search or members > 1):
        say("note: --use-wandb logs the epochs of a plain run; a search or an ensemble writes its tables into the checkpoint instead")
    searched = None
    if search:
        settings = search_grid(config)
        if "stage_0.epochs" in config.explicit:
            say(f"note: the search runs the epochs of search.epochs ({', '.join(map(str, config.search.epochs))}), not stage_0.epochs")
        say(f"searching {len(settings)} settings of the heads on {len(train_data)} training and {len(val_data)} validation pairs")
        bar = tqdm(total=len(settings), desc="search", unit="setting", disable=not progress, dynamic_ncols=True)
        searched = search_settings(train_data, val_data, dimension, modules, settings, recipe, device=device, on_result=lambda row: bar.update(1))
        bar.close()
        setting = searched.best_setting
        config = config.override({
            "model.head": setting.head, "model.dropout": setting.dropout, "stage_0.lr": setting.lr,
            "training.weight_decay": setting.weight_decay, "stage_0.epochs": setting.epochs,
        }, source="search")  # fmt: skip
        say(f"chosen by validation loss: setting {searched.rows[searched.best]['setting']} of {len(settings)}: {setting.label()}")

    fits = []
    if members > 1:
        say(f"training {members} members on bootstrap resamples of the {train[group_by].n_unique()} training tasks ({group_by}): {setting.label()}")
        fits = train_ensemble(train_data, val_data, train[group_by].to_numpy(), dimension, modules, setting, recipe, members, device=device, say=say)
        model = RewardEnsemble([fit.model for fit in fits])
        best = evaluate_pairs(model, val_data, recipe.margin, recipe.margin_weight)
        fit = None
    elif searched is not None:
        fit = searched.best_fit
    else:
        wandb_run = _start_wandb(config) if use_wandb else None
        total = optimizer_steps(len(train_data), recipe.batch_size, recipe.grad_accumulation) * setting.epochs
        bar = tqdm(total=total, desc="train-heads", unit="step", disable=not progress, dynamic_ncols=True)
        fit = fit_heads(
            train_data, val_data, dimension, modules, setting, recipe, model=model, device=device,
            on_step=lambda loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}")),
            on_epoch=(lambda r: _log_epoch(wandb_run, r)) if wandb_run is not None else None,
        )  # fmt: skip
        bar.close()
        if wandb_run is not None:
            wandb_run.finish()
    if fit is not None:
        model, best = fit.model, fit.validation
        history = fit.history
    else:
        history = [{"member": k + 1, **record} for k, member in enumerate(fits) for record in member.history]
    epochs_run = sum(len(f.history) for f in fits) if fits else len(history)
    seconds_per_epoch = (time.perf_counter() - started) / max(epochs_run + (sum(r["epochs_run"] for r in searched.rows) if searched else 0), 1)
    blended, blend_summary = None, {}
    if config.model.blend == "auto":
        # the same setting on the training pairs of all tasks but a fold's, to score that fold's
        # pairs as unseen (a resumed model's start cannot be repeated: validation alone then)
        fit_fold = None if previous is not None else lambda rows: fit_heads(train_data.rows(rows), val_data, dimension, modules, setting, recipe, device=device).model
        blended, blend_summary = fit_blend(model, texts["train"], texts["val"], train_data, val_data, modules, fit_fold, seed=config.training.seed)
        say(blend_line(blended, blend_summary))

    provenance = {
        "resumed_from": str(resume) if resume else None,
        "best_epoch": fit.best_epoch if fit is not None else None,
        "metrics": {"train_loss": fit.train_loss if fit is not None else None, "val": best},
        "versions": library_versions(),
    }
    if searched is not None:
        provenance["search"] = {"settings": len(searched.rows), "chosen": searched.rows[searched.best], "table": "search.jsonl"}
    if fits:
        provenance["members"] = [
            {"member": k + 1, "seed": recipe.seed + k, "best_epoch": f.best_epoch, "val": f.validation} for k, f in enumerate(fits)
        ]  # fmt: skip
    record = CheckpointRecord.of(
        model, stage=0, encoder_fingerprint=namespace.fingerprint, cache_namespace=namespace.id, cache_dtype=namespace.dtype, view=view,
        blend=blended.record() if blended is not None else None,
        # the weights chosen and on what; every point of the grid goes to blend.jsonl
        blend_choice={key: value for key, value in blend_summary.items() if key != "table"} if blend_summary else None,
        module_pairs=counts,  # a module with no training pairs is refused when scored (pipeline/rewards.py)
        training_config=config.to_dict(), train_files=[str(f) for f in files], val_file=str(val_file) if val_file else None,
        train_data_sha256=hashes["train"], val_data_sha256=hashes["val"], provenance=provenance,
    )  # fmt: skip
    with atomic_dir(out) as folder:
        save_checkpoint(folder, model.to("cpu"), record)
        if blended is not None:
            blended.save(folder)
        if blend_summary:
            (folder / "blend.jsonl").write_text("".join(json_text(row) + "\n" for row in blend_summary["table"]))
        (folder / "metrics.jsonl").write_text("".join(json_text(record) + "\n" for record in history))
        if searched is not None:
            (folder / "search.jsonl").write_text("".join(json_text(row) + "\n" for row in searched.rows))
            validation = f"`{val_file}`" if val_file else f"the validation {config.data.group_by}s carved out of the training files (data.val_fraction {config.data.val_fraction:g})"
            (folder / "search.md").write_text(search_markdown(searched.rows, searched.best, validation))
        config.save(folder / "config.yaml")
    return TrainResult(fit.best_epoch if fit else None, epochs_run, best, seconds_per_epoch, history, describe_reward(record), searched, fits)


def read_features(source, train: pl.DataFrame, val: pl.DataFrame, view: View, memory_map_above_mb: int | str, scratch: Path) -> dict[str, PieceFeatures]:
    """The piece features of the training and the validation pairs, read from `source` (a cache
    namespace) in one read into one matrix that both share; memory-mapped from a .npy file in
    `scratch` when the matrix of their distinct pieces is larger than `memory_map_above_mb`
    (`cache.memory_map_above`: MiB, or "auto")."""
    # what piece_features reads (the texts' keys too, when carried: not hashed again); the files may differ in others
    columns = ["target_module", *TEXT_COLUMNS, *(c for c in TEXT_KEY_COLUMNS if c in train.columns and c in val.columns)]
    pairs = pl.concat([train.select(columns), val.select(columns)])
    features = piece_features(source, pairs, view, scratch / "pieces", memory_map_above(memory_map_above_mb))
    return {"train": features.select_pairs(slice(0, train.height)), "val": features.select_pairs(slice(train.height, None))}


def training_recipe(config: Config, pooling: str = "mean") -> TrainingRecipe:
    """What stays fixed across settings and members, from the config (and the view's pooling)."""
    stage, loss = config.stage_0, config.loss
    return TrainingRecipe(
        batch_size=stage.batch_size, grad_accumulation=stage.grad_accumulation, warmup_steps=stage.warmup_steps,
        max_warmup_fraction=config.training.max_warmup_fraction, grad_clip=config.training.grad_clip,
        margin=loss.margin, margin_weight=loss.margin_weight, patience=stage.patience, seed=config.training.seed, pooling=pooling,
    )  # fmt: skip


def head_setting(config: Config) -> HeadSetting:
    """The one setting the config names (what a run without --search trains)."""
    return HeadSetting(config.model.head, config.model.dropout, config.stage_0.lr, config.training.weight_decay, config.stage_0.epochs)


def search_grid(config: Config) -> list[HeadSetting]:
    s = config.search
    return grid(s.head, s.lr, s.weight_decay, s.dropout, s.epochs)


def _log_epoch(run, record: dict) -> None:
    val = record["val"]
    run.log({"epoch": record["epoch"], "train/loss": record["train_loss"], "val/loss": val["loss"], "val/pairwise_accuracy": val["pairwise_accuracy"]})


def select_namespace(cache_dir: Path, config: Config, namespace_id: str | None, checkpoint: CheckpointRecord | None) -> tuple[Namespace, str]:
    """The cache namespace to read, and a note on how it was chosen when the user did not name it:
    the one a resumed checkpoint was trained on (a mismatch is refused), `--namespace`, the only one
    of the encoder the user named (flag or config file), or, with no encoder named, the only one the
    cache holds."""
    cache = EmbeddingCache(cache_dir)
    if checkpoint is not None:
        wanted = checkpoint.encoder_fingerprint
        matching = [ns for ns in cache.namespaces() if ns.fingerprint == wanted and ns.dtype == checkpoint.cache_dtype]
        if not matching:
            raise CheckpointError(
                f"the checkpoint's heads were trained on vectors of encoder {wanted.get('encoder')!r} (namespace "
                f"{checkpoint.cache_namespace}), and {cache_dir} holds no vectors of that encoder; it holds:\n{cache.describe()}\n"
                "Heads only score vectors of the encoder they were trained on: embed with that encoder, or train new heads."
            )
        return matching[0], ""
    named = "model.encoder" in config.explicit
    if namespace_id is None:
        # head_tail vectors and the others' live in namespaces of their own: the view tells them apart
        view = View.from_config(config.features, config.model)
        fitting = [ns for ns in cache.namespaces() if (not named or ns.fingerprint.get("encoder") == config.model.encoder) and _fits(view, ns)]
        if len(fitting) == 1 and len(cache.namespaces()) > 1:
            return fitting[0], "" if named else f"training on the only vectors of view {view.name} in {cache_dir}: {fitting[0].describe()} (namespace {fitting[0].id})"
    namespace = cache.select(config.model.encoder if named else None, namespace_id)
    if named or namespace_id is not None:
        return namespace, ""
    return namespace, f"training on the only vectors in {cache_dir}: {namespace.describe()} (namespace {namespace.id})"


def _fits(view: View, namespace: Namespace) -> bool:
    try:
        view.check_vectors(namespace.fingerprint, namespace.id)
    except ViewMismatch:
        return False
    return True


def _missing_message(missing: MissingVectors, cache_dir: Path, namespace: Namespace, files: Sequence[Path]) -> str:
    every_file = " ".join(str(f) for f in files)
    return (
        f"{len(missing.missing)} of the {missing.total} texts these pairs reference have no vector in {cache_dir} "
        f"(namespace {namespace.id}, encoder {namespace.fingerprint.get('encoder')!r}). Embed them first:\n"
        f"  pipeline embed {every_file} --cache {cache_dir} --encoder {namespace.fingerprint.get('encoder')}\n"
        "or rerun with --embed-missing."
    )


def _start_wandb(config: Config):
    try:
        import wandb
    except ImportError:
        raise UserError("--use-wandb needs the wandb package: pip install wandb (training never requires it)") from None
    return wandb.init(project="module-reward-models", config=config.to_dict(), mode=os.environ.get("WANDB_MODE", "offline"))
