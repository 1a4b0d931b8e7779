"""The prompt set (prompt_set.json, shipped next to this file): how well prompts resolve, and the calibrated bar.

Each prompt of the set expects a trained class of the demo vocabulary (with a side when only that side must be
kept) or a refusal. `score_prompt_set` runs the decision textnnunet_predict makes (PromptResolver) on every
prompt; `calibrate_threshold` finds the similarity bar: the middle of the range of bars that resolve no prompt to
a wrong structure and refuse the fewest in-vocabulary prompts.

    python -m textnnunet.text.prompt_set --encoder minilm --output documentation/measurements/prompt_set_minilm.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textnnunet.errors import UserError, user_errors_exit
from textnnunet.text.encoders import TextEncoder, build_encoder, identity_key
from textnnunet.text.prompts import CALIBRATED_SIMILARITY_THRESHOLDS, PromptResolver, Resolution
from textnnunet.text.vocabulary import Vocabulary
from textnnunet.utils.files import atomic_write_json

PROMPT_SET_FILE = Path(__file__).with_name("prompt_set.json")
REFUSE = "refuse"
THRESHOLD_GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))  # 0.50 ... 0.99


HELD_OUT = "held-out"  # category prefix of prompts written after the mechanism and the bar were fixed


@dataclass(frozen=True)
class PromptCase:
    prompt: str
    category: str
    expect: str  # a trained class or "refuse"
    side: str | None = None

    @property
    def held_out(self) -> bool:
        """Not used to calibrate (written after the bar was fixed, measured as they came)."""
        return self.category.startswith(HELD_OUT)


def load_prompt_set(path: str | Path = PROMPT_SET_FILE) -> tuple[list[str], list[PromptCase]]:
    """(vocabulary, cases) of a prompt-set file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        cases = [PromptCase(p["prompt"], p["category"], p["expect"], p.get("side")) for p in data["prompts"]]
        return list(data["vocabulary"]), cases
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a prompt set ({e})") from None


class MemoryEmbeddingCache:
    """EmbeddingCache's interface without files: each text is encoded once per process."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], np.ndarray] = {}

    def get(self, encoder: TextEncoder, prompts: list[str]) -> np.ndarray:
        key = identity_key(encoder.identity())
        missing = list(dict.fromkeys(p for p in prompts if (key, p) not in self._vectors))
        if missing:
            for prompt, vector in zip(missing, encoder.encode(missing)):
                self._vectors[(key, prompt)] = np.asarray(vector, dtype=np.float32)
        if not prompts:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return np.stack([self._vectors[(key, p)] for p in prompts])


def demo_vocabulary(classes: list[str], encoder: TextEncoder, cache: MemoryEmbeddingCache) -> Vocabulary:
    plans = {"plans_name": "prompt set", "label_space": {"classes": [{"name": c, "synonyms": []} for c in classes]}}
    return Vocabulary.from_plans(plans).embed(encoder, cache)


def outcome(case: PromptCase, r: Resolution) -> str:
    """'correct', 'refused' (an in-vocabulary prompt refused: safe, but a miss) or 'wrong' (a wrong structure)."""
    if case.expect == REFUSE:
        return "correct" if r.refused else "wrong"
    if r.refused:
        return "refused"
    asked = r.structure if r.parts else r.class_name  # a union is scored as the whole it shows
    return "correct" if (asked, r.side) == (case.expect, case.side) else "wrong"


def summarise(cases: list[PromptCase], outcomes: list[str]) -> dict[str, Any]:
    """Accuracy on in-vocabulary prompts, refusal precision/recall, silent wrong structures."""
    in_vocab = [o for c, o in zip(cases, outcomes) if c.expect != REFUSE]
    to_refuse = [o for c, o in zip(cases, outcomes) if c.expect == REFUSE]
    refused_right = sum(o == "correct" for o in to_refuse)
    refused_total = refused_right + sum(o == "refused" for o in in_vocab)
    return {"prompts": len(cases), "in_vocabulary": len(in_vocab), "to_refuse": len(to_refuse),
            "accuracy_in_vocabulary": round(sum(o == "correct" for o in in_vocab) / max(len(in_vocab), 1), 4),
            "in_vocabulary_refused": sum(o == "refused" for o in in_vocab),
            "refusal_precision": round(refused_right / refused_total, 4) if refused_total else None,
            "refusal_recall": round(refused_right / max(len(to_refuse), 1), 4),
            "silent_wrong_structures": sum(o == "wrong" for o in outcomes)}


def decide_all(cases: list[PromptCase], vocab: Vocabulary, threshold: float, encoder: TextEncoder,
               cache: MemoryEmbeddingCache) -> list[Resolution]:
    resolver = PromptResolver(vocab, threshold, encoder, cache)
    return [resolver.resolve(c.prompt) for c in cases]


def calibrate_threshold(cases: list[PromptCase], vocab: Vocabulary, encoder: TextEncoder,
                        cache: MemoryEmbeddingCache, grid: tuple[float, ...] = THRESHOLD_GRID) -> float:
    """The middle of the bars of `grid` that route no prompt to a wrong structure (fewest, if none is clean) and,
    among those, refuse the fewest in-vocabulary prompts: as far as the set allows from both kinds of error."""
    def errors_then_misses(threshold: float) -> tuple[int, int]:
        outcomes = [outcome(c, r) for c, r in zip(cases, decide_all(cases, vocab, threshold, encoder, cache))]
        return outcomes.count("wrong"), outcomes.count("refused")

    scores = {t: errors_then_misses(t) for t in grid}
    best = min(scores.values())
    plateau = [t for t in grid if scores[t] == best]
    return plateau[len(plateau) // 2]


def score_prompt_set(encoder_kind: str, threshold: float | None = None, path: str | Path = PROMPT_SET_FILE,
                     calibrate: bool = True) -> dict[str, Any]:
    """Every prompt's decision and the summary figures for one encoder (threshold: the shipped calibrated one);
    `calibrate` adds the calibration itself (whole set, and each half tested on the other)."""
    classes, cases = load_prompt_set(path)
    encoder = build_encoder(encoder_kind, vocabulary=classes)
    cache = MemoryEmbeddingCache()
    vocab = demo_vocabulary(classes, encoder, cache)
    if threshold is None:
        threshold = CALIBRATED_SIMILARITY_THRESHOLDS.get(encoder.name, 1.0)
    resolutions = decide_all(cases, vocab, threshold, encoder, cache)
    outcomes = [outcome(c, r) for c, r in zip(cases, resolutions)]
    development = [(c, o) for c, o in zip(cases, outcomes) if not c.held_out]
    held_out = [(c, o) for c, o in zip(cases, outcomes) if c.held_out]
    report = {"encoder": encoder.identity(), "threshold": threshold, "summary": summarise(cases, outcomes),
              "summary_development": summarise(*map(list, zip(*development))),
              "summary_held_out": summarise(*map(list, zip(*held_out))) if held_out else None,
              "by_category": _by_category(cases, outcomes),
              "prompts": [{"prompt": c.prompt, "category": c.category, "expect": c.expect, "side": c.side,
                           "outcome": o, **r.to_json()} for c, r, o in zip(cases, resolutions, outcomes)]}
    if calibrate and encoder.semantic:
        report["calibration"] = _calibration([c for c in cases if not c.held_out], vocab, encoder, cache)
    return report


def _by_category(cases: list[PromptCase], outcomes: list[str]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for case, result in zip(cases, outcomes):
        row = table.setdefault(case.category, {"prompts": 0, "correct": 0, "refused": 0, "wrong": 0})
        row["prompts"] += 1
        row[result] += 1
    return table


def _calibration(cases: list[PromptCase], vocab: Vocabulary, encoder: TextEncoder,
                 cache: MemoryEmbeddingCache) -> dict[str, Any]:
    """The bar calibrated on the development prompts, and on each half of them measured on the other half."""
    halves = (cases[0::2], cases[1::2])
    held_out = []
    for fit, test in (halves, halves[::-1]):
        threshold = calibrate_threshold(fit, vocab, encoder, cache)
        test_outcomes = [outcome(c, r) for c, r in zip(test, decide_all(test, vocab, threshold, encoder, cache))]
        held_out.append({"threshold": threshold, "held_out": summarise(test, test_outcomes)})
    return {"grid": [THRESHOLD_GRID[0], THRESHOLD_GRID[-1], 0.01],
            "development_set": calibrate_threshold(cases, vocab, encoder, cache),
            "even_prompts_fit_odd_tested": held_out[0], "odd_prompts_fit_even_tested": held_out[1]}


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m textnnunet.text.prompt_set", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="minilm", choices=("minilm", "clip", "onehot"))
    parser.add_argument("--threshold", type=float, default=None, help="similarity bar (default: the calibrated one)")
    parser.add_argument("--output", default=None, metavar="JSON", help="write the full report here")
    args = parser.parse_args(argv)
    started = time.time()
    report = score_prompt_set(args.encoder, args.threshold)
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report["platform"] = platform.platform()
    report["seconds"] = round(time.time() - started, 1)
    print(json.dumps({k: report[k] for k in ("threshold", "summary", "summary_development", "summary_held_out")},
                     indent=1))
    if "calibration" in report:
        print(json.dumps(report["calibration"], indent=1))
    for p in report["prompts"]:
        if p["outcome"] != "correct":
            print(f"{p['outcome']:8s} {p['prompt']!r}: expected {(p['side'] + ' ') if p['side'] else ''}{p['expect']}"
                  f", got {p['structure'] or 'refusal'} ({p['relation']}, {p['matched']!r} {p['similarity']})")
    if args.output:
        atomic_write_json(Path(args.output), report)
    return 0


if __name__ == "__main__":
    main()
