"""The evaluation report as people read it: Markdown tables, a terminal table, and PNG plots.

    write_plots(folder, scores)     # score_distributions.png, roc.png, reliability.png
    markdown(report)                # report.md
    terminal_table(report)          # what `pipeline evaluate` prints

Plots are drawn on `matplotlib.figure.Figure` objects and saved straight to files: importing this
module neither imports pyplot nor switches matplotlib's backend for the program that imports it.
"""

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from data.text_table import aligned_table
from heads.metrics import calibration, response_roc

CHANCE = 0.5  # pairwise accuracy and AUC of a scorer that ignores the text
PLOTS = ("score_distributions.png", "roc.png", "reliability.png")
BASELINE_NAMES = {"length": "length (longer wins)", "cosine": "cosine(ctx, module)", "logistic_regression": "logistic regression"}
BASELINE_DEFINITIONS = {
    "length": "the response whose module text is longer wins.",
    "cosine": "the reward is the cosine between the context's and the module text's vectors.",
    "logistic_regression": "a logistic regression per module on the heads' own features, fitted on the checkpoint's training pairs.",
}


def write_plots(folder: Path, scores: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> list[str]:
    """`scores`: per module (r_pos, r_neg). One figure per kind of plot, one panel or curve per module."""
    scored = {m: s for m, s in scores.items() if len(s[0])}
    figures = (score_distributions_figure(scored), roc_figure(scored), reliability_figure(scored, bins))
    for figure, name in zip(figures, PLOTS):
        figure.savefig(folder / name, dpi=110)
    return list(PLOTS)


def score_distributions_figure(scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    columns = min(len(scores), 4) or 1
    rows = -(-len(scores) // columns) or 1
    figure = Figure(figsize=(4 * columns, 3.2 * rows), layout="tight")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, (module, (positive, negative)) in zip(axes.flat, scores.items()):
        edges = np.histogram_bin_edges(np.concatenate([positive, negative]), bins=30)
        ax.hist(positive, bins=edges, alpha=0.6, label="positive", color="tab:green")
        ax.hist(negative, bins=edges, alpha=0.6, label="negative", color="tab:red")
        ax.set_title(f"{module} ({len(positive)} pairs)")
        ax.set_xlabel("reward")
    for ax in list(axes.flat)[len(scores) :]:
        ax.axis("off")
    axes.flat[0].legend()
    figure.suptitle("Reward of positive vs negative responses")
    return figure


def roc_figure(scores: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    figure = Figure(figsize=(4.5, 4.5), layout="tight")
    ax = figure.subplots()
    for module, (positive, negative) in scores.items():
        fpr, tpr = response_roc(positive, negative)
        ax.plot(fpr, tpr, label=module)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC over single responses")
    ax.legend(loc="lower right")
    return figure


def reliability_figure(scores: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> Figure:
    """Reliability curves above, and below them how many scores each bin holds: a point that
    strays from the diagonal means little when its bin holds a handful of scores."""
    figure = Figure(figsize=(4.5, 5.6), layout="tight")
    curves, counts = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    width = 1 / bins / (len(scores) + 1)
    for i, (module, (positive, negative)) in enumerate(scores.items()):
        reliability = calibration(positive, negative, bins)["bins"]
        filled = [b for b in reliability if b["n"]]
        (line,) = curves.plot([b["confidence"] for b in filled], [b["frequency"] for b in filled], marker="o", label=module)
        bar_centres = np.array([b["low"] for b in reliability]) + (i + 1) * width  # side by side within each bin
        counts.bar(bar_centres, [b["n"] for b in reliability], width=width, color=line.get_color(), label=module)
    curves.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    curves.set(ylabel="observed frequency a preferred", title="Reliability (pairs in both orders)")
    curves.legend(loc="upper left")
    counts.set(xlabel="sigma(r_a - r_b)", ylabel="scores in bin\n(2 per pair)", xlim=(0, 1))
    return figure


def chance_verdict(interval: list[float]) -> str:
    """Where a confidence interval of pairwise accuracy or AUC lies against chance."""
    low, high = interval
    if low > CHANCE:
        return "above chance"
    if high < CHANCE:
        return "below chance"
    return "includes chance"


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: dict | None, key: str) -> str:
    interval = (ci or {}).get(key)
    return "–" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _ci_against_chance(ci: dict | None, key: str) -> str:
    interval = (ci or {}).get(key)
    return "–" if not interval else f"{_ci(ci, key)} {chance_verdict(interval)}"


def _rows(report: dict):
    yield "overall", report["overall"]
    yield from report["modules"].items()


def markdown(report: dict) -> str:
    settings = report["settings"]
    confidence = int(round(100 * settings["confidence"]))
    overall = report["overall"]
    lines = [
        f"# Evaluation of `{report['checkpoint']}`",
        "",
        f"{report['n_pairs']} pairs from {', '.join(f'`{f}`' for f in report['files'])}; encoder `{report['encoder']}`; "
        f"{report['embedded_texts']} texts embedded for this report. Intervals: {confidence}% bootstrap over "
        f"{settings['group_by']} ({settings['bootstrap_samples']} resamples).",
        "",
        _headline(overall, confidence),
        "",
        "## Reward heads",
        "",
        f"Chance is {CHANCE} for pairwise accuracy and AUC: a scorer that ignores the text gets it on average. Each "
        f"interval says where it lies: *above chance* (all of it above {CHANCE}), *includes chance* (it contains {CHANCE}: "
        f"these pairs cannot tell the heads from a coin) or *below chance* (all of it below {CHANCE}).",
        "",
        f"| | pairs | accuracy | {confidence}% CI | AUC | {confidence}% CI | mean r+ − r− | Cohen's d | ECE |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for name, m in _rows(report):
        s = m["separation"] or {}
        lines.append(
            f"| {name} | {m['n_pairs']} | {_f(m['pairwise_accuracy'])} | {_ci_against_chance(m['ci'], 'pairwise_accuracy')} | "
            f"{_f(m['auc'])} | {_ci_against_chance(m['ci'], 'auc')} | {_f(s.get('mean_difference'))} | {_f(s.get('cohens_d'), 2)} | "
            f"{_f((m['calibration'] or {}).get('ece'))} |"
        )
    lines += ["", "What the columns mean:", ""] + _column_definitions(confidence, settings)
    baselines = list(overall["baselines"])
    lines += ["", "## Baselines (pairwise accuracy / AUC; heads minus baseline in brackets)", ""]
    lines += ["| | heads | " + " | ".join(BASELINE_NAMES[b] for b in baselines) + " |", "|---|---|" + "---|" * len(baselines)]
    for name, m in _rows(report):
        cells = [f"{_f(m['pairwise_accuracy'])} / {_f(m['auc'])}"]
        for b in baselines:
            base, gap = m["baselines"].get(b) or {}, m["above_baselines"].get(b) or {}
            cells.append(
                f"{_f(base.get('pairwise_accuracy'))} / {_f(base.get('auc'))} "
                f"({_signed(gap.get('pairwise_accuracy'))} / {_signed(gap.get('auc'))})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "The baselines score the same pairs without the heads:", ""]
    lines += [f"- **{BASELINE_NAMES[b]}**: {BASELINE_DEFINITIONS[b]}" for b in baselines]
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _headline(overall: dict, confidence: int) -> str:
    if not overall["n_pairs"]:
        return "No pairs: nothing to report."
    parts = []
    for key, label in (("pairwise_accuracy", "pairwise accuracy"), ("auc", "AUC")):
        interval = (overall["ci"] or {}).get(key)
        where = f", {confidence}% CI {_ci(overall['ci'], key)}, {chance_verdict(interval)} ({CHANCE})" if interval else " (no interval: fewer than 2 groups)"
        parts.append(f"{label} {_f(overall[key])}{where}")
    return "**Overall: " + "; ".join(parts) + ".**"


def _column_definitions(confidence: int, settings: dict) -> list[str]:
    return [
        "- **pairs**: preference pairs scored; a module's row holds the pairs whose target module it is.",
        "- **accuracy** (pairwise accuracy): the share of pairs where the positive response scores higher than the "
        f"negative one; a tie counts wrong. Chance: {CHANCE}.",
        "- **AUC** over single responses: every response is scored alone, the positive side of each pair labelled 1 and "
        "the negative side 0; the probability that a positive response outscores a negative one (ties count half). "
        f"Chance: {CHANCE}.",
        f"- **{confidence}% CI**: percentile bootstrap interval that resamples groups of pairs sharing a {settings['group_by']}, not single pairs "
        f"(the pairs of one {settings['group_by']} share a context and are not independent draws); – when there are fewer than 2 groups.",
        "- **mean r+ − r−**: the mean, over pairs, of the positive response's reward minus the negative one's (raw reward units).",
        "- **Cohen's d**: the separation r+ − r− in standard units: mean of the positive rewards minus mean of the negative "
        "rewards, over their pooled standard deviation. 0 is none; 0.2, 0.5 and 0.8 are by convention small, medium and large.",
        "- **ECE**: expected calibration error of σ(r_a − r_b) read as the probability that response a is preferred, with "
        "every pair scored in both orders, (σ(r+ − r−), preferred) and (σ(r− − r+), not preferred): the mean "
        f"|observed frequency − predicted probability| over {settings['calibration_bins']} bins, weighted by how many scores "
        "each holds. 0 is calibrated; reliability.png shows the bins and their counts.",
    ]


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def terminal_table(report: dict) -> str:
    """Per module and overall: the heads' metrics, then how far their pairwise accuracy is above each baseline's."""
    baselines = list(report["overall"]["baselines"])
    interval = f"{round(100 * report['settings']['confidence'])}% CI"
    header = ["module", "pairs", "accuracy", interval, "AUC", "d", "ECE", *(f"vs {b}" for b in baselines)]
    rows = []
    for name, m in _rows(report):
        row = [
            name, m["n_pairs"], _f(m["pairwise_accuracy"]), _ci(m["ci"], "pairwise_accuracy"), _f(m["auc"]),
            _f((m["separation"] or {}).get("cohens_d"), 2), _f((m["calibration"] or {}).get("ece")),
        ]  # fmt: skip
        rows.append(row + [_signed((m["above_baselines"].get(b) or {}).get("pairwise_accuracy")) for b in baselines])
    return aligned_table(header, rows)
