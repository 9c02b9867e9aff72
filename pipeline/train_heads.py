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

The recipe, as `train_heads` runs it: `setup` (the pairs, the namespace, the features, --resume's
heads), one training strategy (`train_plain` the config's setting, `train_search` the grid's and
keep the best, `train_members` an ensemble, of the searched setting after a search), then
`fit_reward_blend`, then `save_checkpoint`.
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
from data.guards import check_writable_folder, output_lock, scratch_folder, terminate_as_exit
from data.schema import TEXT_COLUMNS, TEXT_KEY_COLUMNS
from data.splits import load_training_and_validation, module_pairs
from features.encoder import TextEncoder, pick_device
from features.pairs import pair_table_hash, with_text_keys
from features.views import PieceFeatures, View, ViewMismatch, check_same_view, piece_features
from heads.checkpoint import CheckpointRecord
from heads.checkpoint import save_checkpoint as write_checkpoint
from heads.model import CONFIG, WEIGHTS, CheckpointError, MultiModuleRewardModel
from heads.ensemble import RewardEnsemble, train_ensemble
from heads.fitting import Fit, HeadSetting, TrainingRecipe, fit_heads
from heads.blend import Blended, BlendSample, blend_line, blend_sample, describe_reward, fit_blend
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


@dataclass
class TrainingSetup:
    """What `setup` hands a training strategy: the pairs as tensors on the device (their texts
    read from the cache once), the inputs they came from, and what the checkpoint records of them."""

    config: Config
    files: Sequence[Path]
    val_file: Path | None
    resume: Path | None
    view: View
    namespace: Namespace  # whose vectors: the checkpoint's encoder
    previous: MultiModuleRewardModel | None  # --resume's heads, which training continues
    train: PairTensors
    val: PairTensors
    groups: pl.Series  # each training pair's task (data.group_by): what an ensemble resamples
    hashes: dict[str, str]  # train, val: the pair tables' sha256
    module_pairs: dict[str, dict[str, int]]
    blend_texts: dict[str, BlendSample] | None  # a bounded sample of the texts, for the blend's TF-IDF part
    recipe: TrainingRecipe
    device: str

    @property
    def modules(self) -> list[str]:
        return list(self.config.data.modules)

    @property
    def dimension(self) -> int:
        return self.namespace.dimension


@dataclass
class Trained:
    """What a training strategy returns: the heads (one model, or an ensemble), their validation
    and history, and the config they were trained with (a search's chosen setting in it)."""

    model: MultiModuleRewardModel | RewardEnsemble
    validation: dict
    history: list[dict]
    config: Config
    setting: HeadSetting
    seconds: float  # training's wall time: a search's included
    timed_epochs: int  # the epochs of that time
    fit: Fit | None = None  # a single model's fit (None for an ensemble)
    searched: SearchResult | None = None
    members: list[Fit] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return sum(len(member.history) for member in self.members) if self.members else len(self.history)

    @property
    def seconds_per_epoch(self) -> float:
        return self.seconds / max(self.timed_epochs, 1)


def train_heads(
    *,
    files: Sequence[Path],
    cache_dir: Path,
    out: Path,
    config: Config,
    val_file: Path | None = None,
    resume: Path | None = None,
    namespace_id: str | None = None,
    embed_missing: bool = False,
    search: bool = False,
    use_wandb: bool = False,
    progress: bool = True,
    say: Callable[[str], object] = print,
    overwrite: bool = False,
) -> TrainResult:
    """Train the heads the config names; with `search`, every setting of the config's `search` grid
    first, keeping the one of lowest validation loss (config.yaml then records it); with
    `stage_0.ensemble` K > 1, K members on bootstrap resamples of the training tasks. Then the
    blend (`model.blend: auto`), then the checkpoint.

    Before anything is read: --out must be a folder this run can write (data/guards.py), and no
    other run may be writing it (its lock is held until the checkpoint is saved)."""
    if resume is not None and (search or config.stage_0.ensemble > 1):
        raise UserError("--resume continues one model's heads; train without it to --search or build an --ensemble")
    check_writable_folder(out, "--out", inputs=[*files, val_file, cache_dir, resume])
    if embed_missing:
        check_writable_folder(cache_dir, "--cache", replaced=False)
    with terminate_as_exit(), output_lock(out, "train-heads"):
        check_output_folder(out, (CONFIG, WEIGHTS), "checkpoint", overwrite)  # before training, not after
        # Piece features larger than stage_0.memory_map_above_mb go to .npy files in a scratch
        # folder beside --out (on the disk chosen for the output; never in the cache, which this
        # run only reads and which may be read-only or shared), removed when training ends, fails
        # or is terminated (a kill -9 leaves it to the next run's sweep).
        with scratch_folder(out, "pair-features") as scratch:
            run = setup(
                files=files, cache_dir=cache_dir, config=config, val_file=val_file, resume=resume, namespace_id=namespace_id,
                embed_missing=embed_missing, progress=progress, say=say, scratch=scratch,
            )  # fmt: skip
            ensemble = config.stage_0.ensemble > 1
            if use_wandb and (search or ensemble):
                say("note: --use-wandb logs the epochs of a plain run; a search or an ensemble writes its tables into the checkpoint instead")
            # a search keeps its best model, unless the members of an ensemble are to train its setting
            trained = train_search(run, progress=progress, say=say) if search else None
            if ensemble:
                trained = train_members(run, searched=trained, say=say)
            elif trained is None:
                trained = train_plain(run, use_wandb=use_wandb, progress=progress)
            blended, blend_summary = fit_reward_blend(run, trained, say=say)
            written = save_checkpoint(out, run=run, trained=trained, blended=blended, blend_summary=blend_summary)
    return TrainResult(
        trained.fit.best_epoch if trained.fit else None, trained.epochs_run, trained.validation, trained.seconds_per_epoch,
        trained.history, describe_reward(written), trained.searched, trained.members,
    )  # fmt: skip


# --- setup: the pairs' vectors from the cache, once -----------------------------------------------


def setup(
    *,
    files: Sequence[Path],
    cache_dir: Path,
    config: Config,
    val_file: Path | None,
    resume: Path | None,
    namespace_id: str | None,
    embed_missing: bool,
    progress: bool,
    say: Callable[[str], object],
    scratch: Path,
) -> TrainingSetup:
    """The pairs (validation carved out unless `val_file`), the cache namespace whose vectors they
    are read from (embedding what it lacks with `embed_missing`), and --resume's heads, checked
    against the config's view and modules."""
    modules, data = config.data.modules, config.data
    train, val = load_training_and_validation(files, val_file, modules, data.val_fraction, data.split_seed, data.group_by)
    train, val = with_text_keys(train), with_text_keys(val)  # each text hashed once, whatever reads them
    view = View.from_config(config.features, config.model)
    previous, previous_record = _load_resumed(resume, view, modules)
    every_file = [*files, *([val_file] if val_file else [])]
    namespace = _namespace(cache_dir, config, namespace_id, previous_record, embed_missing, every_file, progress, say)
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
    # the texts are in the matrix now: keep only what the checkpoint, the blend and an ensemble still read
    group_by = data.group_by if data.group_by in train.columns else "task"
    device = pick_device(config.training.device)
    return TrainingSetup(
        config=config, files=files, val_file=val_file, resume=resume, view=view, namespace=namespace, previous=previous,
        # the heads' module order is the config's (a resumed model's is checked to be the same)
        train=PairTensors.from_pieces(vectors["train"], list(modules), device),
        val=PairTensors.from_pieces(vectors["val"], list(modules), device),
        groups=train[group_by],
        hashes={name: pair_table_hash(pairs, vectors[name].text_keys) for name, pairs in (("train", train), ("val", val))},
        module_pairs=module_pairs(train, val, modules),
        # the blend's TF-IDF part reads texts: a bounded sample of them outlives the tables
        blend_texts={name: blend_sample(pairs, group_by, config.training.seed) for name, pairs in (("train", train), ("val", val))} if config.model.blend == "auto" else None,
        recipe=training_recipe(config, "attention" if view.attention else "mean"),
        device=device,
    )  # fmt: skip


def _load_resumed(resume: Path | None, view: View, modules: Sequence[str]) -> tuple[MultiModuleRewardModel | None, CheckpointRecord | None]:
    """--resume's heads and record, refused when trained under another view or other modules."""
    if resume is None:
        return None, None
    model, saved = MultiModuleRewardModel.load(resume)
    try:
        check_same_view(view, saved.view, f"the checkpoint {resume}")
    except ViewMismatch as e:
        raise CheckpointError(str(e)) from None
    if model.modules_order != list(modules):
        raise CheckpointError(f"{resume} has heads for {model.modules_order}, but the config's modules are {list(modules)}")
    return model, saved


def _namespace(cache_dir, config: Config, namespace_id, checkpoint: CheckpointRecord | None, embed_missing: bool, every_file, progress: bool, say) -> Namespace:
    """`select_namespace`, saying how it chose; with --embed-missing and a cache holding no vectors
    of the configured encoder, after embedding the pairs with it."""
    try:
        namespace, note = select_namespace(cache_dir, config, namespace_id, checkpoint)
    except CacheError:
        # --embed-missing embeds with the configured encoder, which is only a guess of the user's
        # when no encoder was named and the cache already holds others: then the listing stands
        guessing = "model.encoder" not in config.explicit and EmbeddingCache(cache_dir).namespaces()
        if not embed_missing or namespace_id is not None or checkpoint is not None or guessing:
            raise
        report = embed_pairs(every_file, cache_dir, config, progress=progress)
        namespace, note = EmbeddingCache(cache_dir).select(namespace_id=report.namespace), f"embedded {report.new} texts into {cache_dir}"
    if note:
        say(note)
    return namespace


# --- one training strategy: plain, search or ensemble ---------------------------------------------


def train_plain(run: TrainingSetup, *, use_wandb: bool, progress: bool) -> Trained:
    """The config's one setting (continuing --resume's heads), each epoch logged to wandb if asked."""
    setting, recipe = head_setting(run.config), run.recipe
    started = time.perf_counter()
    wandb_run = _start_wandb(run.config) if use_wandb else None
    total = optimizer_steps(len(run.train), recipe.batch_size, recipe.grad_accumulation) * setting.epochs
    bar = tqdm(total=total, desc="train-heads", unit="step", disable=not progress, dynamic_ncols=True)
    fit = fit_heads(
        run.train, run.val, run.dimension, run.modules, setting, recipe, model=run.previous, device=run.device,
        on_step=lambda loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.4f}")),
        on_epoch=(lambda r: _log_epoch(wandb_run, r)) if wandb_run is not None else None,
    )  # fmt: skip
    bar.close()
    if wandb_run is not None:
        wandb_run.finish()
    return Trained(fit.model, fit.validation, fit.history, run.config, setting, time.perf_counter() - started, len(fit.history), fit=fit)


def train_search(run: TrainingSetup, *, progress: bool, say: Callable[[str], object]) -> Trained:
    """Every setting of the config's `search` grid; the one of lowest validation loss is kept, and
    written into the config the checkpoint records."""
    config = run.config
    settings = search_grid(config)
    if "stage_0.epochs" in config.explicit:
        say(f"note: the search runs the epochs of search.epochs ({', '.join(map(str, config.search.epochs))}), not stage_0.epochs")
    say(f"searching {len(settings)} settings of the heads on {len(run.train)} training and {len(run.val)} validation pairs")
    started = time.perf_counter()
    bar = tqdm(total=len(settings), desc="search", unit="setting", disable=not progress, dynamic_ncols=True)
    searched = search_settings(run.train, run.val, run.dimension, run.modules, settings, run.recipe, device=run.device, on_result=lambda row: bar.update(1))
    bar.close()
    setting, fit = searched.best_setting, searched.best_fit
    config = config.override({
        "model.head": setting.head, "model.dropout": setting.dropout, "stage_0.lr": setting.lr,
        "training.weight_decay": setting.weight_decay, "stage_0.epochs": setting.epochs,
    }, source="search")  # fmt: skip
    say(f"chosen by validation loss: setting {searched.rows[searched.best]['setting']} of {len(settings)}: {setting.label()}")
    timed = len(fit.history) + sum(row["epochs_run"] for row in searched.rows)
    return Trained(fit.model, fit.validation, fit.history, config, setting, time.perf_counter() - started, timed, fit=fit, searched=searched)


def train_members(run: TrainingSetup, *, searched: Trained | None, say: Callable[[str], object]) -> Trained:
    """`stage_0.ensemble` members of the config's setting (or of the one `searched` chose), each on
    a bootstrap resample of the training tasks; validated as the members' mean."""
    config = searched.config if searched is not None else run.config
    setting, members, recipe = head_setting(config), run.config.stage_0.ensemble, run.recipe
    say(f"training {members} members on bootstrap resamples of the {run.groups.n_unique()} training tasks ({run.groups.name}): {setting.label()}")
    started = time.perf_counter()
    fits = train_ensemble(run.train, run.val, run.groups.to_numpy(), run.dimension, run.modules, setting, recipe, members, device=run.device, say=say)
    model = RewardEnsemble([fit.model for fit in fits])
    validation = evaluate_pairs(model, run.val, recipe.margin, recipe.margin_weight)
    history = [{"member": k + 1, **record} for k, member in enumerate(fits) for record in member.history]
    seconds, timed = time.perf_counter() - started, sum(len(fit.history) for fit in fits)
    if searched is not None:
        seconds, timed = seconds + searched.seconds, timed + searched.timed_epochs - len(searched.history)
    return Trained(model, validation, history, config, setting, seconds, timed, searched=searched.searched if searched else None, members=fits)


# --- the blend -------------------------------------------------------------------------------------


def fit_reward_blend(run: TrainingSetup, trained: Trained, *, say: Callable[[str], object]) -> tuple[Blended | None, dict]:
    """With `model.blend: auto`, the heads blended with a linear and a TF-IDF part at the weights
    chosen on held-out pairs (heads/blend.py); (None, {}) otherwise."""
    if run.blend_texts is None:
        return None, {}
    # the same setting on the training pairs of all tasks but a fold's, to score that fold's
    # pairs as unseen (a resumed model's start cannot be repeated: validation alone then)
    fit_fold = None
    if run.previous is None:
        fit_fold = lambda rows: fit_heads(run.train.rows(rows), run.val, run.dimension, run.modules, trained.setting, run.recipe, device=run.device).model  # noqa: E731
    blended, summary = fit_blend(
        trained.model, run.blend_texts["train"], run.blend_texts["val"], run.train, run.val, run.modules, fit_fold,
        seed=run.config.training.seed, rule=run.config.model.blend_rule,
    )  # fmt: skip
    say(blend_line(blended, summary))
    return blended, summary


# --- the checkpoint ----------------------------------------------------------------------------------


def save_checkpoint(out: Path, *, run: TrainingSetup, trained: Trained, blended: Blended | None, blend_summary: dict) -> CheckpointRecord:
    """The checkpoint folder, written atomically: heads.safetensors and config.json (the record of
    what the heads were trained on and how, heads/checkpoint.py), the blend's files, metrics.jsonl,
    search.jsonl + search.md after a search, and the resolved config.yaml. Returns the record written."""
    config, namespace, fit, searched = trained.config, run.namespace, trained.fit, trained.searched
    provenance = {
        "resumed_from": str(run.resume) if run.resume else None,
        "best_epoch": fit.best_epoch if fit is not None else None,
        "metrics": {"train_loss": fit.train_loss if fit is not None else None, "val": trained.validation},
        "versions": library_versions(),
    }
    if searched is not None:
        provenance["search"] = {"settings": len(searched.rows), "chosen": searched.rows[searched.best], "table": "search.jsonl"}
    if trained.members:
        provenance["members"] = [
            {"member": k + 1, "seed": run.recipe.seed + k, "best_epoch": f.best_epoch, "val": f.validation} for k, f in enumerate(trained.members)
        ]  # fmt: skip
    record = CheckpointRecord.of(
        trained.model, stage=0, encoder_fingerprint=namespace.fingerprint, cache_namespace=namespace.id, cache_dtype=namespace.dtype,
        view=run.view, blend=blended.record() if blended is not None else None,
        # the weights chosen and on what; every point of the grid goes to blend.jsonl
        blend_choice={key: value for key, value in blend_summary.items() if key != "table"} if blend_summary else None,
        module_pairs=run.module_pairs,  # a module with no training pairs is refused when scored (pipeline/rewards.py)
        training_config=config.to_dict(), train_files=[str(f) for f in run.files], val_file=str(run.val_file) if run.val_file else None,
        train_data_sha256=run.hashes["train"], val_data_sha256=run.hashes["val"], provenance=provenance,
    )  # fmt: skip
    with atomic_dir(out) as folder:
        write_checkpoint(folder, trained.model.to("cpu"), record)
        if blended is not None:
            blended.save(folder)
        if blend_summary:
            (folder / "blend.jsonl").write_text("".join(json_text(row) + "\n" for row in blend_summary["table"]))
        (folder / "metrics.jsonl").write_text("".join(json_text(row) + "\n" for row in trained.history))
        if searched is not None:
            (folder / "search.jsonl").write_text("".join(json_text(row) + "\n" for row in searched.rows))
            validation = f"`{run.val_file}`" if run.val_file else f"the validation {config.data.group_by}s carved out of the training files (data.val_fraction {config.data.val_fraction:g})"
            (folder / "search.md").write_text(search_markdown(searched.rows, searched.best, validation))
        config.save(folder / "config.yaml")
    return record


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
