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
from heads.blend import PART_NAMES
from heads.metrics import calibration, response_roc

CHANCE = 0.5  # pairwise accuracy and AUC of a scorer that ignores the text
PLOTS = ("score_distributions.png", "roc.png", "reliability.png")
BASELINE_NAMES = {
    "length": "length (longer wins)", "cosine": "cosine(ctx, module)", "tfidf": "TF-IDF", "logistic_regression": "logistic regression",
    "source": "source prior",
}  # fmt: skip
BASELINE_DEFINITIONS = {
    "length": "the response whose module text is longer wins.",
    "cosine": "the reward is the cosine between the context's and the module text's vectors.",
    "tfidf": "a linear model on the TF-IDF of the context and of the module text (word 1-2-grams), one for all modules, fitted "
    "like the heads on the checkpoint's training pairs (each pair's difference, in both orders); text only, no encoder.",
    "logistic_regression": "a logistic regression per module on the heads' own features, fitted on the checkpoint's training pairs.",
    "source": "each response scores the share of the checkpoint's training pairs its source (the model and strategy that "
    "wrote the run) won; a source never seen scores 0.5, and a pair of two sources with the same prior counts as wrong, as "
    "equal lengths do for the length rule. It reads no text: it recognises who wrote a run.",
}
LENGTHS = {"module_text": "module text", "context": "context"}
PICK_NAMES = {
    "heads": "highest reward", "random": "random run (base rate)", "shortest": "shortest run",
    "longest": "longest run", "oracle": "oracle (any success)",
}  # fmt: skip


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
    return _interval((ci or {}).get(key))


def _interval(interval: list[float] | None) -> str:
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
    lines = [f"# Evaluation of `{report['checkpoint']}`", ""]
    if report.get("reward"):
        lines += [f"**The reward**: {report['reward']}.", ""]
    if "overall" in report:
        lines += _pair_sections(report, confidence, settings)
    if report.get("uncertainty"):
        lines += _uncertainty_section(report["uncertainty"], confidence)
    if "best_of_n" in report:
        lines += _best_of_n_section(report["best_of_n"], report["runs_files"], confidence)
    for note in report.get("notes", []):
        lines += ["", f"Note: {note}"]
    if report["plots"]:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    return "\n".join(lines) + "\n"


def _pair_sections(report: dict, confidence: int, settings: dict) -> list[str]:
    overall = report["overall"]
    lines = [
        f"{report['n_pairs']} pairs from {', '.join(f'`{f}`' for f in report['files'])}; encoder `{report['encoder']}`; "
        f"{report['embedded_texts']} texts embedded for this report. Intervals: {confidence}% bootstrap over "
        f"{settings['group_by']} ({settings['bootstrap_samples']} resamples).",
        "",
        _headline(overall, confidence),
        "",
        "## The reward",
        "",
        f"Chance is {CHANCE} for pairwise accuracy and AUC: a scorer that ignores the text gets it on average. Each "
        f"interval says where it lies: *above chance* (all of it above {CHANCE}), *includes chance* (it contains {CHANCE}: "
        f"these pairs cannot tell the reward from a coin) or *below chance* (all of it below {CHANCE}).",
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
        if name == "overall":
            lines += [_part_row(part, p) for part, p in m.get("parts", {}).items() if p]
    if overall.get("parts"):
        lines += [
            "",
            "The rows *overall: … alone* score the same pairs with one part of the reward by itself (in parentheses its weight in "
            "the reward, the weighted sum of the standardised parts): where one ranks these pairs better than the reward, that part "
            "alone would have done better here. Their scores are on scales of their own, so their mean r+ − r−, Cohen's d and ECE "
            "are left out (–).",
        ]
    lines += ["", "What the columns mean:", ""] + _column_definitions(confidence, settings)
    baselines = list(overall["baselines"])
    lines += ["", "## Baselines (pairwise accuracy / AUC; reward minus baseline in brackets)", ""]
    lines += ["| | reward | " + " | ".join(BASELINE_NAMES[b] for b in baselines) + " |", "|---|---|" + "---|" * len(baselines)]
    for name, m in _rows(report):
        cells = [f"{_f(m['pairwise_accuracy'])} / {_f(m['auc'])}"]
        for b in baselines:
            base, gap = m["baselines"].get(b) or {}, m["above_baselines"].get(b) or {}
            cells.append(
                f"{_f(base.get('pairwise_accuracy'))} / {_f(base.get('auc'))} "
                f"({_signed(gap.get('pairwise_accuracy'))} / {_signed(gap.get('auc'))})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "The baselines score the same pairs without the reward:", ""]
    lines += [f"- **{BASELINE_NAMES[b]}**: {BASELINE_DEFINITIONS[b]}" for b in baselines]
    lines += _length_debiased_section(report, baselines, confidence)
    if "source_debiased" in overall:
        lines += _source_debiased_section(report, confidence)
    if report.get("sources"):
        lines += _sources_section(report["sources"], confidence)
    return lines


def _part_row(part: str, m: dict) -> str:
    """A row of the main table for one part of the reward alone (accuracy and AUC only)."""
    return (
        f"| overall: {PART_NAMES[part]} alone (weight {m['weight']:g}) | {m['n_pairs']} | {_f(m['pairwise_accuracy'])} | "
        f"{_ci_against_chance(m['ci'], 'pairwise_accuracy')} | {_f(m['auc'])} | {_ci_against_chance(m['ci'], 'auc')} | – | – | – |"
    )


def _length_debiased_section(report: dict, baselines: list[str], confidence: int) -> list[str]:
    overall = report["overall"]["length_debiased"]
    lines = [
        "",
        f"## Length-debiased accuracy ({confidence}% CI)",
        "",
        "Where the positive response is usually the longer one, \"longer wins\" looks good without reading a word. The "
        "length-debiased accuracy is the mean of two pairwise accuracies: on the pairs where the positive side is the longer "
        "one and on the pairs where it is the shorter one. Pairs of equal length are left out (no length rule can orient "
        f"them). Any length rule scores exactly {CHANCE} on it, so what lies above {CHANCE} is ranking that length does not "
        "explain. – where one of the two halves holds no pair (the mean is then undefined).",
    ]
    for kind, label in LENGTHS.items():
        halves = overall[kind]
        lines += [
            "",
            f"By {label} length (overall: positive longer in {halves['longer_won']['n_pairs']} pairs, shorter in "
            f"{halves['shorter_won']['n_pairs']}, equal in {halves['equal_length_pairs']}, left out):",
            "",
            "| | reward | " + " | ".join(BASELINE_NAMES[b] for b in baselines) + " |",
            "|---|---|" + "---|" * len(baselines),
        ]
        for name, m in _rows(report):
            cells = [_debiased_cell(m["length_debiased"][kind])]
            cells += [_debiased_cell(((m["baselines"].get(b) or {}).get("length_debiased") or {}).get(kind)) for b in baselines]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, m in _rows(report):
        for kind, label in LENGTHS.items():
            why = m["length_debiased"][kind]["why_none"]
            lines += ["", f"– {name}, by {label} length: {why}."] if why else []
    return lines


def _source_debiased_section(report: dict, confidence: int) -> list[str]:
    overall = report["overall"]["source_debiased"]
    lines = [
        "",
        f"## Source-debiased accuracy ({confidence}% CI)",
        "",
        "Each side of these pairs comes from a run with a source (the model and strategy that wrote it), and some sources "
        "win far more often than others, so recognising who wrote a run scores well without judging it (the source prior "
        "above). An RL policy is a single author. The source-debiased accuracy is the mean of two pairwise accuracies: on "
        "the pairs where the positive side's source won more of the training pairs than the negative side's, and on the "
        f"pairs where it won fewer; equal priors are left out. The source prior scores exactly {CHANCE} on it. "
        f"Overall: the favoured source won {overall['favoured_won']['n_pairs']} pairs and lost {overall['favoured_lost']['n_pairs']}; "
        f"{overall['equal_prior_pairs']} were left out.",
        "",
        "| | source-debiased | where the favoured source won | where it lost |",
        "|---|---|---:|---:|",
    ]
    for name, m in _rows(report):
        result = m["source_debiased"]
        lines.append(
            f"| {name} | {_debiased_cell(result)} | {_f(result['favoured_won']['pairwise_accuracy'])} | {_f(result['favoured_lost']['pairwise_accuracy'])} |"
        )
    return lines


def _debiased_cell(result: dict | None) -> str:
    if not result or result["accuracy"] is None:
        return "–"
    return f"{_f(result['accuracy'])} {_interval(result['ci'])}"


def _sources_section(sources: dict, confidence: int) -> list[str]:
    lines = [
        "",
        f"## By source (`{sources['column']}`)",
        "",
        "Pairwise accuracy of the reward on the pairs of each source; a pair whose two sides come from different sources is "
        "`<positive source> vs <negative source>`.",
        "",
        f"| source | pairs | accuracy | {confidence}% CI |",
        "|---|---:|---:|---|",
    ]
    for value, m in sources["values"].items():
        ci = {"pairwise_accuracy": m["ci"]}
        lines.append(f"| {value} | {m['n_pairs']} | {_f(m['pairwise_accuracy'])} | {_ci_against_chance(ci, 'pairwise_accuracy')} |")
    return lines


def _uncertainty_section(uncertainty: dict, confidence: int) -> list[str]:
    overall = uncertainty["overall"]
    lines = [
        "",
        f"## Accuracy by uncertainty (ensemble of {uncertainty['members']})",
        "",
        "A pair's uncertainty is the standard deviation across the ensemble's members of r+ − r− (population std); the pairs "
        "are cut into quartiles of it, lowest first, and each quartile's pairwise accuracy of the members' mean reward is "
        "shown with its interval. If uncertainty is worth serving, the most uncertain quarter is the least accurate. "
        "AUC (uncertainty → wrong): how well uncertainty alone tells wrong pairs from right ones (0.5: not at all).",
        "",
        f"**Does high uncertainty mark wrong pairs? {overall['verdict'][0].upper()}{overall['verdict'][1:]}.** "
        f"AUC (uncertainty → wrong) {_f(overall['auc_uncertainty_for_wrong'])} over {overall['wrong_pairs']} wrong pairs. "
        f"Left out: {overall['tied_pairs_left_out']} pairs whose two sides every member scores alike (the same vectors, "
        "e.g. texts equal after truncation; such a tie counts wrong in the tables above).",
        "",
        f"| quartile | pairs | uncertainty | accuracy | {confidence}% CI |",
        "|---|---:|---|---:|---|",
    ]
    for q in overall["quartiles"]:
        span = "–" if q["uncertainty_low"] is None else f"{q['uncertainty_low']:.3f} – {q['uncertainty_high']:.3f}"
        lines.append(f"| Q{q['quartile']} | {q['n_pairs']} | {span} | {_f(q['pairwise_accuracy'])} | {_interval(q['ci'])} |")
    lines += ["", "By module (accuracy in the least and the most uncertain quarter):", "", "| module | pairs | Q1 accuracy | Q4 accuracy | AUC (uncertainty → wrong) |", "|---|---:|---:|---:|---:|"]
    for name, m in uncertainty["modules"].items():
        quartiles = m["quartiles"]
        lines.append(
            f"| {name} | {sum(q['n_pairs'] for q in quartiles)} | {_f(quartiles[0]['pairwise_accuracy'])} {_interval(quartiles[0]['ci'])} | "
            f"{_f(quartiles[-1]['pairwise_accuracy'])} {_interval(quartiles[-1]['ci'])} | {_f(m['auc_uncertainty_for_wrong'])} |"
        )
    return lines


def _best_of_n_section(best: dict, files: list[str], confidence: int) -> list[str]:
    left_out = best["left_out"]
    lines = [
        "",
        "## Best of N on runs",
        "",
        f"{best['runs']} runs of {best['tasks']} tasks from {', '.join(f'`{f}`' for f in files)} ({left_out['runs']} runs of "
        f"{left_out['tasks']} tasks left out: {left_out['why']}); {best['embedded_texts']} of their texts had no vector in the "
        "cache and were encoded with the checkpoint's encoder. Each row picks one run per task; the success rate is the "
        f"share of tasks whose pick succeeded, with a {confidence}% bootstrap interval over tasks. Run reward: {best['reward']}. "
        "Ties among the picked runs count as a random choice among them.",
        "",
        f"| pick | success rate | {confidence}% CI |",
        "|---|---:|---|",
    ]
    for pick, result in best["success_rate"].items():
        lines.append(f"| {PICK_NAMES[pick]} | {_f(result['mean'])} | {_interval(result['ci'])} |")
    lines += [
        "",
        "- **random run (base rate)**: the mean, over tasks, of each task's share of successful runs: what picking blindly "
        "gets, the line the reward must clear.",
        "- **shortest / longest run**: the run with the fewest / most characters; the length rule of the pair baselines is "
        "\"longer wins\", and on agent runs a short run (it stopped early) and a long one (it looped) can both mean failure, "
        "so both are shown.",
        "- **oracle (any success)**: 1 for every task with at least one successful run: the ceiling no scorer can pass.",
    ]
    if best["runs_without_module_text"]:
        lines.append(f"- {best['runs_without_module_text']} runs wrote no text for any module: they rank last.")
    return lines


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
        "- **length-debiased accuracy** (its own tables below): the mean of the pairwise accuracy on the pairs where the "
        "positive side is the longer one and on the pairs where it is the shorter one, by module-text length and by context "
        f"length; pairs of equal length are left out. Any length rule scores exactly {CHANCE}.",
    ]


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.3f}"


def _parts_line(overall: dict, interval: str) -> str:
    """The reward's overall pairwise accuracy beside each of its parts' alone, as a line under the
    terminal table; "" when the reward is the heads alone."""
    parts = [f"{PART_NAMES[name]} alone (weight {m['weight']:g}) {_f(m['pairwise_accuracy'])} {_ci(m['ci'], 'pairwise_accuracy')}" for name, m in overall.get("parts", {}).items() if m]
    if not parts:
        return ""
    reward = f"reward {_f(overall['pairwise_accuracy'])} {_ci(overall['ci'], 'pairwise_accuracy')}"
    return f"\noverall pairwise accuracy ({interval}) of the reward and of each part alone: {reward}; " + "; ".join(parts)


def terminal_table(report: dict) -> str:
    """Per module and overall: the reward's metrics, its module-text length-debiased accuracy, then
    how far its pairwise accuracy is above each baseline's, and under them the overall accuracy of
    each part of a blended reward alone; then the best-of-N picks on runs."""
    tables = []
    if "overall" in report:
        baselines = list(report["overall"]["baselines"])
        interval = f"{round(100 * report['settings']['confidence'])}% CI"
        header = ["module", "pairs", "accuracy", interval, "AUC", "d", "ECE", "len-debiased", *(f"vs {b}" for b in baselines)]
        rows = []
        for name, m in _rows(report):
            row = [
                name, m["n_pairs"], _f(m["pairwise_accuracy"]), _ci(m["ci"], "pairwise_accuracy"), _f(m["auc"]),
                _f((m["separation"] or {}).get("cohens_d"), 2), _f((m["calibration"] or {}).get("ece")),
                _f(m["length_debiased"]["module_text"]["accuracy"]),
            ]  # fmt: skip
            rows.append(row + [_signed((m["above_baselines"].get(b) or {}).get("pairwise_accuracy")) for b in baselines])
        tables.append(aligned_table(header, rows) + _parts_line(report["overall"], interval))
    if report.get("uncertainty"):
        overall = report["uncertainty"]["overall"]
        interval = f"{round(100 * report['settings']['confidence'])}% CI"
        rows = [[f"Q{q['quartile']}", q["n_pairs"], _f(q["uncertainty_high"]), _f(q["pairwise_accuracy"]), _interval(q["ci"])] for q in overall["quartiles"]]
        title = f"accuracy by uncertainty quartile (ensemble of {report['uncertainty']['members']}): {overall['verdict']}"
        tables.append(title + "\n" + aligned_table(["quartile", "pairs", "up to", "accuracy", interval], rows))
    if "best_of_n" in report:
        best = report["best_of_n"]
        rows = [[PICK_NAMES[pick], _f(r["mean"]), _interval(r["ci"])] for pick, r in best["success_rate"].items()]
        title = f"best of N: {best['runs']} runs of {best['tasks']} tasks ({best['left_out']['tasks']} single-run tasks left out)"
        tables.append(title + "\n" + aligned_table(["pick", "success rate", f"{round(100 * report['settings']['confidence'])}% CI"], rows))
    return "\n\n".join(tables)
