"""A small grid search over head settings on cached vectors: each setting trained from the same
seed on the same tensors, kept by its validation loss (task-grouped validation: no validation task
is trained on).

    settings = grid(heads=["2d,d", "256", "linear"], lrs=[3e-4, 1e-3], weight_decays=[0.01, 0.1], dropouts=[0.1, 0.3], epochs=[5, 10])
    result = search(train, val, dimension, modules, settings, TrainingRecipe())
    result.best_fit.model, result.rows[result.best]      # the chosen heads, and their row of the table
    search_markdown(result.rows, result.best)             # the table of every setting tried

Every setting starts from the same seed, so two settings differ only in what they set, and a
search is reproducible: the same grid, data and seed give the same table (all but the seconds).
The setting of lowest validation loss at its best epoch wins; a tie goes to the setting listed
first.
"""

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from heads.fitting import Fit, HeadSetting, TrainingRecipe, fit_heads
from heads.model import hidden_widths
from heads.training import PairTensors

TABLE_COLUMNS = ("setting", "head", "lr", "weight_decay", "dropout", "epochs", "val_loss", "val_accuracy", "best_epoch", "epochs_run", "seconds")


def grid(heads: Sequence[str], lrs: Sequence[float], weight_decays: Sequence[float], dropouts: Sequence[float], epochs: Sequence[int]) -> list[HeadSetting]:
    """Every combination, heads outermost. A linear head has no dropout, so it is tried with the
    first dropout only: the others would repeat the same run."""
    settings = []
    for head, lr, weight_decay, dropout, n_epochs in itertools.product(heads, lrs, weight_decays, dropouts, epochs):
        if head.strip() == "linear" and dropout != dropouts[0]:
            continue
        settings.append(HeadSetting(head=head, dropout=dropout, lr=lr, weight_decay=weight_decay, epochs=n_epochs))
    return settings


@dataclass
class SearchResult:
    rows: list[dict]  # one per setting, in grid order (TABLE_COLUMNS)
    best: int  # index into rows
    best_fit: Fit

    @property
    def best_setting(self) -> HeadSetting:
        row = self.rows[self.best]
        return HeadSetting(row["head"], row["dropout"], row["lr"], row["weight_decay"], row["epochs"])


def search(
    train: PairTensors,
    val: PairTensors,
    dimension: int,
    modules: Sequence[str],
    settings: Sequence[HeadSetting],
    recipe: TrainingRecipe,
    *,
    device: str = "cpu",
    on_result: Callable[[dict], object] | None = None,
) -> SearchResult:
    """Train every setting (each from `recipe.seed`) and keep the one of lowest validation loss.
    `on_result` gets each row as it is done. Only the best model so far is kept in memory."""
    if not settings:
        raise ValueError("no settings to search")
    for setting in settings:
        hidden_widths(setting.head, dimension)  # a bad head spec fails before anything trains
    rows, best, best_fit = [], -1, None
    for number, setting in enumerate(settings, start=1):
        fit = fit_heads(train, val, dimension, modules, setting, recipe, device=device)
        row = {
            "setting": number,
            **setting.as_dict(),
            "val_loss": fit.validation["loss"],
            "val_accuracy": fit.validation["pairwise_accuracy"],
            "best_epoch": fit.best_epoch,
            "epochs_run": len(fit.history),
            "seconds": round(fit.seconds, 3),
        }
        rows.append({name: row[name] for name in TABLE_COLUMNS})
        if best_fit is None or row["val_loss"] < rows[best]["val_loss"]:
            best, best_fit = len(rows) - 1, fit
        if on_result is not None:
            on_result(rows[-1])
    return SearchResult(rows, best, best_fit)


def table_rows(rows: Sequence[dict], best: int) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the search table, for the terminal and for Markdown; the chosen row is
    marked with *."""
    header = ["#", "head", "lr", "weight decay", "dropout", "epochs", "val loss", "val accuracy", "best epoch", "seconds"]
    cells = []
    for i, row in enumerate(rows):
        cells.append([
            f"{row['setting']}{' *' if i == best else ''}", row["head"], f"{row['lr']:g}", f"{row['weight_decay']:g}",
            "–" if row["head"].strip() == "linear" else f"{row['dropout']:g}", str(row["epochs"]), f"{row['val_loss']:.4f}",
            f"{row['val_accuracy']:.3f}", f"{row['best_epoch']} of {row['epochs_run']}", f"{row['seconds']:.1f}",
        ])  # fmt: skip
    return header, cells


def search_markdown(rows: Sequence[dict], best: int, validation: str) -> str:
    """search.md: what was searched, the chosen setting, and the table of every setting."""
    header, cells = table_rows(rows, best)
    chosen = rows[best]
    lines = [
        "# Head search",
        "",
        f"{len(rows)} settings, each trained from the same seed on the same cached vectors and validated on {validation} "
        "after every epoch (early stopping; a setting's row is its best epoch). The setting of lowest validation loss is "
        f"kept: **#{chosen['setting']}** (head {chosen['head']}, lr {chosen['lr']:g}, weight decay {chosen['weight_decay']:g}, "
        f"dropout {chosen['dropout']:g}, {chosen['epochs']} epochs), validation loss {chosen['val_loss']:.4f}, "
        f"pairwise accuracy {chosen['val_accuracy']:.3f}. Marked * below; search.jsonl has the same rows.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"
