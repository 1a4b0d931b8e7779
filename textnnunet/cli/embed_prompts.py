"""textnnunet_embed_prompts: show the trained vocabulary and what textnnunet_predict will do with typed prompts.

Each prompt gets the decision predict makes (the same function, the same similarity bar): the trained class, a side
derived from one, a zero-shot vector (--allow_unknown_prompts) or the reason it is refused. Exit code 2 when a prompt
would be refused, so scripts can check prompts before a long run.

    textnnunet_embed_prompts -m RESULTS/TextPlans_001_002/3d_fullres/fold_0 "hepatic parenchyma" "left kidney"
    textnnunet_embed_prompts --plans PRE/TextPlans_001_002/plans.json --encoder minilm --list
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from textnnunet.cli.common import USER_ERROR_EXIT_CODE, user_errors_exit
from textnnunet.errors import UserError
from textnnunet.text.cache import EmbeddingCache
from textnnunet.text.encoders import TextEncoder, build_encoder, encoder_kinds
from textnnunet.text.prompts import CALIBRATED_SIMILARITY_THRESHOLDS, Resolution, describe_resolution
from textnnunet.text.vocabulary import VOCABULARY_FILE, Vocabulary
from textnnunet.utils.files import atomic_savez_compressed, load_json


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="textnnunet_embed_prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model", metavar="MODEL_FOLDER",
                        help=f"trained model folder holding {VOCABULARY_FILE} (or fold_*/ subfolders with one)")
    source.add_argument("--plans", metavar="PLANS_JSON", help="plans.json whose label space is the vocabulary")
    p.add_argument("prompts", nargs="*", help="prompts to place in the vocabulary")
    p.add_argument("-p", "--prompt", action="append", default=[], dest="extra_prompts", metavar="PROMPT",
                   help="a prompt (repeatable; same as positional prompts)")
    p.add_argument("--encoder", choices=encoder_kinds(), default=None,
                   help="text encoder (default: the one recorded with the model, else auto)")
    p.add_argument("--encoder-model", default=None, metavar="ID_OR_FOLDER",
                   help="model id or local folder of the encoder (clip/minilm)")
    p.add_argument("--template", default=None, help="prompt template with one '{}' (encoder default otherwise)")
    p.add_argument("--cache", default=None, metavar="FOLDER", help="embedding cache folder (reuse vectors)")
    p.add_argument("--list", action="store_true", help="print the vocabulary")
    p.add_argument("-k", "--top", type=int, default=3, help="how many nearest classes to show (default 3)")
    p.add_argument("--save", default=None, metavar="FILE.npz",
                   help="save to this .npz each prompt's own vector (what the similarity compares) and the vectors of "
                        "the heads predict would run for it (what the network is conditioned on)")
    p.add_argument("--modality", default=None, metavar="CHANNEL_NAME",
                   help="with --save, as textnnunet_predict: the image type the heads are for (a model whose prompts "
                        "name the modality has one head vector per type; saved under the model's name for it)")
    p.add_argument("--similarity_threshold", type=float, default=None,
                   help="as textnnunet_predict: minimum cosine to a lexicon or vocabulary name (default: the encoder's "
                        "calibrated bar)")
    p.add_argument("--allow_unknown_prompts", action="store_true",
                   help="as textnnunet_predict: show refused prompts as zero-shot instead")
    p.add_argument("--json", action="store_true", help="print the decisions as JSON lines")
    return p


def _vocabulary_file(model_folder: Path) -> Path:
    if not model_folder.is_dir():
        raise UserError(f"{model_folder}: model folder does not exist")
    direct = model_folder / VOCABULARY_FILE
    if direct.is_file():
        return direct
    # Every fold of one training shares the vocabulary: any fold's copy will do.
    in_folds = sorted(model_folder.glob(f"fold_*/{VOCABULARY_FILE}"))
    if not in_folds:
        raise UserError(f"{model_folder}: no {VOCABULARY_FILE} here or in fold_*/ (is it a trained model folder?)")
    return in_folds[0]


def _load_vocabulary(args: argparse.Namespace) -> Vocabulary:
    if args.model is not None:
        return Vocabulary.load(_vocabulary_file(Path(args.model)))
    return Vocabulary.from_plans(load_json(args.plans))


def _encoder(args: argparse.Namespace, vocab: Vocabulary) -> TextEncoder | None:
    """An explicitly chosen encoder, or None to use the vocabulary's recorded one."""
    explicit = args.encoder is not None or args.encoder_model is not None or args.template is not None
    if vocab.encoder_identity is not None and not explicit:
        return None
    kind = args.encoder or (vocab.encoder_identity or {}).get("kind", "auto")
    return build_encoder(kind, args.encoder_model, args.template, vocabulary=vocab.classes)


def _print_vocabulary(vocab: Vocabulary) -> None:
    identity = vocab.encoder_identity
    print(f"vocabulary: {len(vocab)} classes" + (f", encoder {json.dumps(identity)}" if identity else ""))
    for cls in vocab.classes:
        words = vocab.synonyms.get(cls)
        print(f"  {cls}" + (f"  (synonyms: {', '.join(words)})" if words else ""))


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.top < 1:
        raise UserError(f"--top {args.top}: must be at least 1")
    vocab = _load_vocabulary(args)
    prompts = list(args.prompts) + list(args.extra_prompts)
    if args.list or not prompts:
        _print_vocabulary(vocab)
    if not prompts:
        if args.save:
            raise UserError(f"--save {args.save}: no prompts given to embed")
        return 0
    encoder = _encoder(args, vocab)
    cache = EmbeddingCache(args.cache) if args.cache else None
    kind = (encoder.identity() if encoder is not None else vocab.encoder_identity or {}).get("kind", "minilm")
    threshold = args.similarity_threshold
    if threshold is None:
        threshold = CALIBRATED_SIMILARITY_THRESHOLDS.get(kind, 0.5)
    decisions = vocab.decide_prompts(prompts, threshold, args.allow_unknown_prompts, encoder, cache)
    for decision in decisions:
        _print_decision(decision, vocab, args, encoder, cache)
    refused = [d for d in decisions if d.refused]
    if refused and not args.json:
        print(f"{len(refused)} of {len(decisions)} prompt(s) would be refused by textnnunet_predict; trained "
              f"vocabulary: {vocab.describe()}")
    if args.save:
        if refused:
            names = ", ".join(d.prompt for d in refused)
            raise UserError(f"--save {args.save}: refused prompts have no vector ({names})")
        _save(Path(args.save), decisions, vocab, encoder, cache, args.modality)
        print(f"saved {len(decisions)} prompt vectors and their head vectors to {args.save}")
    return USER_ERROR_EXIT_CODE if refused else 0


def _semantic(vocab: Vocabulary, encoder: TextEncoder | None) -> bool:
    """Whether the encoder in use (the given one, else the vocabulary's recorded one) can embed any text."""
    return encoder.semantic if encoder is not None else (vocab.encoder_identity or {}).get("kind") != "onehot"


def _print_decision(decision: Resolution, vocab: Vocabulary, args: argparse.Namespace,
                    encoder: TextEncoder | None, cache: EmbeddingCache | None) -> None:
    """The decision line (as predict prints it), then the nearest trained classes where the encoder can tell."""
    if args.json:
        print(json.dumps({"prompt": decision.prompt, **decision.to_json()}))
        return
    print(describe_resolution(decision))
    if _semantic(vocab, encoder):
        nearest = vocab.nearest_classes(decision.prompt, args.top, encoder, cache)
        print("    nearest trained classes: " + " | ".join(f"{cls} {sim:.3f}" for cls, sim in nearest))


def _save(path: Path, decisions: list[Resolution], vocab: Vocabulary, encoder: TextEncoder | None,
          cache: EmbeddingCache | None, modality: str | None) -> None:
    """prompts / prompt_vectors / nearest_class / similarity: one row per prompt; head_vectors / head_class /
    head_prompt: one row per head predict runs (a whole joined from its sides runs two), head_prompt indexing the
    prompt rows and head_class '' for a zero-shot head."""
    if path.suffix != ".npz":
        raise UserError(f"--save {path}: must end in .npz")
    identity = encoder.identity() if encoder is not None else vocab.encoder_identity
    if modality is not None and vocab.modality_prompts:
        modality = vocab.modality_name(modality)  # the model's spelling of the type; an unknown one is an error
    heads_of = [vocab.head_vectors(d, modality, encoder, cache) for d in decisions]
    heads = [(i, cls, vector) for i, own in enumerate(heads_of) for cls, vector in own]
    atomic_savez_compressed(
        path,
        prompts=np.array([d.prompt for d in decisions], dtype=np.str_),
        prompt_vectors=np.stack([_own_vector(d, vocab, encoder, cache, like=own[0][1])
                                 for d, own in zip(decisions, heads_of)]).astype(np.float32),
        nearest_class=np.array([d.class_name or d.nearest for d in decisions], dtype=np.str_),
        similarity=np.array([d.similarity for d in decisions], dtype=np.float32),
        head_vectors=np.stack([h[2] for h in heads]).astype(np.float32),
        head_class=np.array([h[1] or "" for h in heads], dtype=np.str_),
        head_prompt=np.array([h[0] for h in heads], dtype=np.int64),
        modality=np.array(modality or ""),
        encoder_identity=np.array(json.dumps(identity, sort_keys=True)),
    )


def _own_vector(decision: Resolution, vocab: Vocabulary, encoder: TextEncoder | None, cache: EmbeddingCache | None,
                like: np.ndarray) -> np.ndarray:
    """The typed prompt's own vector; NaN (shaped `like` a head vector) where the encoder cannot embed it: one-hot
    knows only the trained names and synonyms ('left kidney' derived from 'kidney' has a head, not a text vector)."""
    if not _semantic(vocab, encoder) and not vocab.knows_exactly(decision.prompt):
        return np.full_like(like, np.nan, dtype=np.float32)
    return vocab.embed_prompt(decision.prompt, encoder, cache)


if __name__ == "__main__":
    main()
