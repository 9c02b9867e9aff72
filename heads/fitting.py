"""One setting of the heads trained on pair tensors already built: the loop every stage 0 path
shares (`pipeline train-heads`, its `--search` over settings, each member of an `--ensemble`).

    setting = HeadSetting(head="256", dropout=0.1, lr=1e-3, weight_decay=0.1, epochs=10)
    fit = fit_heads(train, val, dimension=384, modules=MODULES, setting=setting, recipe=TrainingRecipe())
    fit.model, fit.best_epoch, fit.validation["loss"], fit.history

AdamW, linear warmup then decay, gradient accumulation and clipping, the Bradley–Terry loss with
its margin term; validation on `val` after every epoch, early stopping after `recipe.patience`
epochs without a lower validation loss, and the model of the best epoch kept. Seeded: the same
setting, recipe and data give the same model on CPU.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch

from heads.model import MultiModuleRewardModel
from heads.training import EarlyStopping, PairTensors, evaluate_pairs, optimizer_steps, train_epoch, warmup_linear_schedule, warmup_steps_for


@dataclass(frozen=True)
class HeadSetting:
    """What a search varies: the head's hidden widths (`model.head`), dropout, learning rate,
    weight decay and the number of epochs (the longest run; early stopping may end it sooner)."""

    head: str = "2d,d"
    dropout: float = 0.1
    lr: float = 3e-4
    weight_decay: float = 0.01
    epochs: int = 5

    def as_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        return f"head {self.head}, lr {self.lr:g}, weight decay {self.weight_decay:g}, dropout {self.dropout:g}, {self.epochs} epochs"


@dataclass(frozen=True)
class TrainingRecipe:
    """What stays fixed across settings (the config's stage_0, loss and training sections)."""

    batch_size: int = 64
    grad_accumulation: int = 2
    warmup_steps: int = 100
    max_warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    margin: float = 0.1
    margin_weight: float = 0.1
    patience: int = 2
    seed: int = 0
    pooling: str = "mean"  # how a head pools a text's pieces: attention under the rounds view (heads/model.py)


@dataclass
class Fit:
    model: MultiModuleRewardModel  # at its best epoch
    best_epoch: int
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, train_loss, lr, val (evaluate_pairs)
    seconds: float = 0.0

    @property
    def validation(self) -> dict:
        return self.history[self.best_epoch - 1]["val"]

    @property
    def train_loss(self) -> float:
        return self.history[self.best_epoch - 1]["train_loss"]


def fit_heads(
    train: PairTensors,
    val: PairTensors,
    dimension: int,
    modules: Sequence[str],
    setting: HeadSetting,
    recipe: TrainingRecipe,
    *,
    model: MultiModuleRewardModel | None = None,
    seed: int | None = None,
    device: str = "cpu",
    on_step: Callable[[float], object] | None = None,
    on_epoch: Callable[[dict], object] | None = None,
) -> Fit:
    """Train `setting` on `train` (a new model, or `model` to continue from) and return it at the
    epoch of lowest loss on `val`. `seed` (default `recipe.seed`) seeds the initial weights, dropout
    and the order of the pairs."""
    seed = recipe.seed if seed is None else seed
    torch.manual_seed(seed)
    if model is None:
        model = MultiModuleRewardModel(dimension, modules, setting.dropout, setting.head, recipe.pooling)
    model.to(device)
    # foreach: the same update as the per-tensor loop (bitwise, on CPU), in fewer kernel calls
    optimizer = torch.optim.AdamW(model.parameters(), lr=setting.lr, betas=(0.9, 0.999), weight_decay=setting.weight_decay, foreach=True)
    total_steps = optimizer_steps(len(train), recipe.batch_size, recipe.grad_accumulation) * setting.epochs
    scheduler = warmup_linear_schedule(optimizer, warmup_steps_for(total_steps, recipe.warmup_steps, recipe.max_warmup_fraction), total_steps)
    generator = torch.Generator().manual_seed(seed)

    history: list[dict] = []
    best_state, stopping = None, EarlyStopping(recipe.patience)
    started = time.perf_counter()
    for epoch in range(1, setting.epochs + 1):
        train_loss = train_epoch(
            model, train, optimizer, scheduler,
            batch_size=recipe.batch_size, grad_accumulation=recipe.grad_accumulation, grad_clip=recipe.grad_clip,
            margin=recipe.margin, margin_weight=recipe.margin_weight, generator=generator, on_step=on_step,
        )  # fmt: skip
        validation = evaluate_pairs(model, val, recipe.margin, recipe.margin_weight)
        record = {"epoch": epoch, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0], "val": validation}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if stopping.update(epoch, validation["loss"]):
            # a copy on the model's own device: no transfer per epoch
            best_state = {name: value.detach().clone() for name, value in model.state_dict().items()}
        elif stopping.should_stop:
            break
    model.load_state_dict(best_state)
    return Fit(model, stopping.best_epoch, history, time.perf_counter() - started)
