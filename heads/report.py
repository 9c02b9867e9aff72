"""The evaluation report as people read it: Markdown tables, a terminal table, and PNG plots.

    write_plots(folder, scores)     # score_distributions.png, roc.png, reliability.png
    markdown(report)                # report.md
    terminal_table(report)          # what `pipeline evaluate` prints
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from heads.metrics import calibration, response_roc  # noqa: E402

PLOTS = ("score_distributions.png", "roc.png", "reliability.png")
BASELINE_NAMES = {"length": "length (longer wins)", "cosine": "cosine(ctx, module)", "logistic_regression": "logistic regression"}


def write_plots(folder: Path, scores: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> list[str]:
    """`scores`: per module (r_pos, r_neg). One figure per kind of plot, one panel or curve per module."""
    modules = [m for m, (p, _) in scores.items() if len(p)]
    columns = min(len(modules), 4) or 1
    rows = -(-len(modules) // columns) or 1

    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax, module in zip(axes.flat, modules):
        positive, negative = scores[module]
        edges = np.histogram_bin_edges(np.concatenate([positive, negative]), bins=30)
        ax.hist(positive, bins=edges, alpha=0.6, label="positive", color="tab:green")
        ax.hist(negative, bins=edges, alpha=0.6, label="negative", color="tab:red")
        ax.set_title(f"{module} ({len(positive)} pairs)")
        ax.set_xlabel("reward")
    for ax in list(axes.flat)[len(modules) :]:
        ax.axis("off")
    axes.flat[0].legend()
    figure.suptitle("Reward of positive vs negative responses")
    _save(figure, folder / PLOTS[0])

    figure, ax = plt.subplots(figsize=(4.5, 4.5))
    for module in modules:
        fpr, tpr = response_roc(*scores[module])
        ax.plot(fpr, tpr, label=module)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC over single responses")
    ax.legend(loc="lower right")
    _save(figure, folder / PLOTS[1])

    figure, ax = plt.subplots(figsize=(4.5, 4.5))
    for module in modules:
        filled = [b for b in calibration(*scores[module], bins)["bins"] if b["n"]]
        ax.plot([b["confidence"] for b in filled], [b["frequency"] for b in filled], marker="o", label=module)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    ax.set(xlabel="sigma(r_a - r_b)", ylabel="observed frequency a preferred", title="Reliability (pairs in both orders)")
    ax.legend(loc="upper left")
    _save(figure, folder / PLOTS[2])
    return list(PLOTS)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _f(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(ci: dict | None, key: str) -> str:
    interval = (ci or {}).get(key)
    return "–" if not interval else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _rows(report: dict):
    yield "overall", report["overall"]
    yield from report["modules"].items()


def markdown(report: dict) -> str:
    confidence = int(round(100 * report["settings"]["confidence"]))
    lines = [
        f"# Evaluation of `{report['checkpoint']}`",
        "",
        f"{report['n_pairs']} pairs from {', '.join(f'`{f}`' for f in report['files'])}; encoder `{report['encoder']}`; "
        f"{report['embedded_texts']} texts embedded for this report. Intervals: {confidence}% bootstrap over "
        f"{report['settings']['group_by']} ({report['settings']['bootstrap_samples']} resamples).",
        "",
        "## Reward heads",
        "",
        f"| | pairs | accuracy | {confidence}% CI | AUC | {confidence}% CI | mean r+ − r− | Cohen's d | ECE |",
        "|---|---:|---:|---|---:|---|---:|---:|---:|",
    ]
    for name, m in _rows(report):
        s = m["separation"] or {}
        lines.append(
            f"| {name} | {m['n_pairs']} | {_f(m['pairwise_accuracy'])} | {_ci(m['ci'], 'pairwise_accuracy')} | {_f(m['auc'])} | "
            f"{_ci(m['ci'], 'auc')} | {_f(s.get('mean_difference'))} | {_f(s.get('cohens_d'), 2)} | {_f((m['calibration'] or {}).get('ece'))} |"
        )
    baselines = list(report["overall"]["baselines"])
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
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def terminal_table(report: dict) -> str:
    baselines = list(report["overall"]["baselines"])
    interval = f"{round(100 * report['settings']['confidence'])}% CI"
    header = f"{'module':<12}{'pairs':>7}{'accuracy':>10}  {interval:<16}{'AUC':>7}  {'d':>6}{'ECE':>7}" + "".join(f"{'vs ' + b[:8]:>14}" for b in baselines)
    lines = [header]
    for name, m in _rows(report):
        d = (m["separation"] or {}).get("cohens_d")
        line = (
            f"{name:<12}{m['n_pairs']:>7}{_f(m['pairwise_accuracy']):>10}  {_ci(m['ci'], 'pairwise_accuracy'):<16}"
            f"{_f(m['auc']):>7}  {_f(d, 2):>6}{_f((m['calibration'] or {}).get('ece')):>7}"
        )
        line += "".join(f"{_signed((m['above_baselines'].get(b) or {}).get('pairwise_accuracy')):>14}" for b in baselines)
        lines.append(line)
    return "\n".join(lines)
