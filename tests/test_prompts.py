"""Prompts that mean what they say: the anatomy lexicon, the shared prompt decision, the prompt set, left/right."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from textnnunet.errors import UserError
from textnnunet.inference.laterality import apply_laterality, body_midline, keep_side
from textnnunet.text.encoders import build_encoder
from textnnunet.text.lexicon import edit_distance, load_lexicon, read_lexicon
from textnnunet.text.prompt_set import (MemoryEmbeddingCache, calibrate_threshold, demo_vocabulary, load_prompt_set,
                                        score_prompt_set)
from textnnunet.text.prompts import CALIBRATED_SIMILARITY_THRESHOLDS, describe_resolution
from textnnunet.text.vocabulary import Vocabulary

DEMO = ["liver", "liver tumor", "spleen", "kidney", "kidney tumor"]


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm")


@pytest.fixture(scope="module")
def demo_minilm(minilm):
    return demo_vocabulary(DEMO, minilm, MemoryEmbeddingCache())


def _decide(vocab, prompts, encoder, threshold=None, allow_unknown=False):
    threshold = CALIBRATED_SIMILARITY_THRESHOLDS[encoder.name] if threshold is None else threshold
    return {r.prompt: r for r in vocab.decide_prompts(prompts, threshold, allow_unknown, encoder)}


# ------------------------------------------------------------------------------------------------
# The lexicon


TOTALSEGMENTATOR_NAMING = {  # the naming rule documented in documentation/prompts.md
    "kidney_left": "left kidney", "adrenal_gland_left": "left adrenal gland", "iliac_artery_left": "left iliac artery",
    "iliac_vena_right": "right iliac vein", "vertebrae_L1": "vertebra l1", "vertebrae_C7": "vertebra c7",
    "rib_left_1": "left rib 1", "rib_right_12": "right rib 12", "clavicula_right": "right clavicle",
    "lung_upper_lobe_left": "left lung upper lobe", "kidney_cyst_right": "right kidney cyst",
    "portal_vein_and_splenic_vein": "portal vein and splenic vein", "urinary_bladder": "urinary bladder",
    "small_bowel": "small bowel", "atrial_appendage_left": "left atrial appendage", "hip_left": "left hip",
}


def test_lexicon_covers_every_source_label_list():
    lexicon = load_lexicon()
    by_source: dict[str, list[str]] = {}
    for entry in lexicon.entries.values():
        for source, label in entry.sources.items():
            by_source.setdefault(source, []).append(label)
    counts = {source: len(labels) for source, labels in by_source.items()}
    assert counts["totalsegmentator_ct_v2"] == 117
    assert [counts[s] for s in ("amos22", "btcv", "word", "flare22", "kits23")] == [15, 13, 16, 13, 3]
    assert len([s for s in counts if s.startswith("msd_task")]) == 10
    assert set(counts) <= set(lexicon.sources)
    for source, label in TOTALSEGMENTATOR_NAMING.items():
        assert lexicon.canonical_name(source) == label, source
    # Every multi-organ label name finds its own entry, so a converter can write canonical names.
    for entry in lexicon.entries.values():
        for source, label in entry.sources.items():
            if source in ("totalsegmentator_ct_v2", "amos22", "btcv", "word", "flare22"):
                assert lexicon.canonical_name(label) == entry.name, (source, label)


def test_lexicon_names_follow_the_naming_rule_and_relations_are_complete():
    lexicon = load_lexicon()
    for entry in lexicon.entries.values():
        assert entry.name == " ".join(entry.name.split()) and entry.name == entry.name.lower()
        assert "tumour" not in entry.name and "_" not in entry.name
        if entry.relation == "side":
            assert entry.name.startswith(entry.side + " ")
            assert lexicon.side_child(entry.parent, "left") and lexicon.side_child(entry.parent, "right")
    assert lexicon.entries["kidney tumor"].parent == "kidney" and lexicon.entries["kidney tumor"].relation == "part"
    assert lexicon.ancestors("left rib 3") == ["rib 3", "ribs"]
    assert lexicon.canonical_name("Liver_Tumour") == "liver tumor"  # British spelling, any case and separator
    assert lexicon.canonical_name("The oesophagus") == "esophagus"
    assert lexicon.split_side("kidney (right)") == ("right", "kidney")
    assert lexicon.is_lesion("renal mass") and not lexicon.is_lesion("renal parenchyma")


def test_a_broken_lexicon_file_is_one_line_error(tmp_path):
    path = tmp_path / "lexicon.json"
    path.write_text(json.dumps({"entries": [{"name": "liver", "synonyms": ["hepar"]},
                                            {"name": "spleen", "synonyms": ["hepar"]}]}))
    with pytest.raises(UserError, match="'hepar' names both 'liver' and 'spleen'"):
        read_lexicon(path)
    path.write_text(json.dumps({"entries": [{"name": "left kidney", "parent": "kidney", "relation": "side",
                                             "side": "left"}]}))
    with pytest.raises(UserError, match="parent 'kidney', which is not an entry"):
        read_lexicon(path)
    path.write_text("{not json")
    with pytest.raises(UserError, match="cannot read the anatomy lexicon"):
        read_lexicon(path)


def test_typo_correction_leaves_real_words_alone_and_side_words_count_anywhere(demo_minilm, minilm):
    decided = _decide(demo_minilm, ["adrenal mass", "livre tumor", "rigth kidney", "tumour of the right kidney"],
                      minilm)
    assert decided["adrenal mass"].refused  # 'adrenal' is a word of the lexicon, not a typo of 'renal'
    assert decided["livre tumor"].class_name == "liver tumor" and decided["livre tumor"].relation == "spelling"
    assert (decided["rigth kidney"].class_name, decided["rigth kidney"].side) == ("kidney", "right")
    right_tumour = decided["tumour of the right kidney"]
    assert (right_tumour.class_name, right_tumour.side) == ("kidney tumor", "right")


def test_edit_distance_counts_transpositions_once():
    assert edit_distance("kidney", "kidney") == 0
    assert edit_distance("kidnye", "kidney") == 1
    assert edit_distance("spleeen", "spleen") == 1
    assert edit_distance("liver", "spleen", limit=2) == 3


# ------------------------------------------------------------------------------------------------
# The decision


def test_the_five_misroutes_of_issue_12_are_fixed(demo_minilm, minilm):
    decided = _decide(demo_minilm, ["stomach", "gallbladder", "bladder", "pancreatic tumor", "left kidney",
                                    "renal mass"], minilm)
    for prompt, structure in (("stomach", "stomach"), ("gallbladder", "gallbladder"), ("bladder", "urinary bladder"),
                              ("pancreatic tumor", "pancreas tumor")):
        assert decided[prompt].refused and decided[prompt].class_name is None
        assert f"means '{structure}', which this model did not train" in decided[prompt].refusal
    left = decided["left kidney"]
    assert (left.class_name, left.side, left.structure, left.derived) == ("kidney", "left", "left kidney", "laterality")
    assert decided["renal mass"].class_name == "kidney tumor"
    with pytest.raises(UserError, match=r"prompt 'stomach' refused: means 'stomach'.*trained vocabulary: liver, "
                                        r"liver tumor, spleen, kidney, kidney tumor"):
        demo_minilm.resolve_prompts(["liver", "stomach"], 0.76, encoder=minilm)


def test_refusals_say_why_and_allow_unknown_keeps_its_meaning(demo_minilm, minilm):
    decided = _decide(demo_minilm, ["banana", "kidney stone", "left liver", "liver vessel"], minilm)
    assert "near no structure the lexicon or the model knows" in decided["banana"].refusal
    assert "names a lesion, but its nearest name 'kidney'" in decided["kidney stone"].refusal
    assert "'liver' has no left and right halves" in decided["left liver"].refusal
    assert "(it is part of 'liver', a different structure)" in decided["liver vessel"].refusal
    zero_shot = _decide(demo_minilm, ["banana"], minilm, allow_unknown=True)["banana"]
    assert zero_shot.class_name is None and zero_shot.relation == "zero-shot" and not zero_shot.refused
    np.testing.assert_allclose(zero_shot.embedding, minilm.encode(["banana"])[0], atol=1e-5)
    assert describe_resolution(zero_shot).startswith("prompt 'banana': zero-shot with its own vector")


def test_a_trained_side_is_used_as_a_class_and_the_whole_is_their_union():
    vocab = Vocabulary.from_plans({"label_space": {"classes": [{"name": n} for n in
                                                               ("left kidney", "right kidney", "liver")]}})
    encoder = build_encoder("onehot", vocabulary=vocab.classes)
    vocab = vocab.embed(encoder)
    decided = _decide(vocab, ["kidney_left", "lt kidney", "kidneys", "left kidney tumor", "left liver"], encoder)
    assert decided["kidney_left"].class_name == "left kidney" and decided["kidney_left"].side is None
    assert decided["lt kidney"].class_name == "left kidney" and decided["lt kidney"].side is None
    union = decided["kidneys"]
    assert (union.class_name, union.structure, union.parts, union.derived) == \
        (None, "kidney", ("left kidney", "right kidney"), "union")
    assert describe_resolution(union) == ("prompt 'kidneys' -> 'kidney': derived: union (of the trained classes "
                                          "'left kidney' and 'right kidney')")
    assert decided["left kidney tumor"].refused and decided["left liver"].refused


def test_onehot_resolves_exact_names_only_and_never_guesses():
    vocab = Vocabulary.from_plans({"label_space": {"classes": [{"name": n} for n in DEMO]}})
    encoder = build_encoder("onehot", vocabulary=DEMO)
    vocab = vocab.embed(encoder)
    decided = _decide(vocab, ["renal mass", "kidny", "left kidney", "tumour of the liver"], encoder)
    assert decided["renal mass"].class_name == "kidney tumor"
    assert decided["kidny"].class_name == "kidney" and decided["kidny"].relation == "spelling"
    assert decided["left kidney"].side == "left"
    assert "cannot compare other wordings" in decided["tumour of the liver"].refusal


# ------------------------------------------------------------------------------------------------
# The prompt set


def test_prompt_set_is_large_and_varied():
    vocabulary, cases = load_prompt_set()
    assert vocabulary == DEMO and len(cases) >= 150
    assert sum(c.expect == "refuse" for c in cases) >= 50
    categories = {c.category for c in cases}
    assert {"british spelling", "abbreviation", "misspelling", "left/right", "tumour word", "paraphrase",
            "untrained lexicon structure", "not anatomy"} <= categories
    assert all(c.expect in DEMO + ["refuse"] for c in cases)


@pytest.mark.parametrize("kind, min_development, min_held_out", [("minilm", 0.97, 0.72), ("onehot", 0.8, 0.28)])
def test_prompt_set_meets_the_targets(kind, min_development, min_held_out):
    report = score_prompt_set(kind, calibrate=False)
    summary = report["summary"]
    assert summary["silent_wrong_structures"] == 0, [p for p in report["prompts"] if p["outcome"] == "wrong"]
    assert summary["refusal_recall"] == 1.0
    assert report["summary_development"]["accuracy_in_vocabulary"] >= min_development
    assert report["summary_held_out"]["accuracy_in_vocabulary"] >= min_held_out  # as measured: guards regressions
    untrained = [p for p in report["prompts"] if p["category"] == "untrained lexicon structure"]
    assert untrained and all(p["outcome"] == "correct" for p in untrained)


def test_shipped_minilm_bar_is_the_calibrated_one(demo_minilm, minilm):
    _, cases = load_prompt_set()
    development = [c for c in cases if not c.held_out]
    assert calibrate_threshold(development, demo_minilm, minilm, MemoryEmbeddingCache()) == \
        CALIBRATED_SIMILARITY_THRESHOLDS["minilm"]


# ------------------------------------------------------------------------------------------------
# Left/right


def _two_blobs(shape=(6, 10, 40), body=(4, 36), left_x=30, right_x=10) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((1, *shape), -3.0, dtype=np.float32)
    image[0, :, :, body[0]:body[1]] = 1.0
    probs = np.zeros(shape, dtype=np.float32)
    probs[2:4, 3:6, left_x - 2:left_x + 2] = 0.9
    probs[2:4, 3:6, right_x - 2:right_x + 2] = 0.8
    return image, probs


def test_midline_is_the_body_centre_not_the_array_centre():
    image, _ = _two_blobs(body=(10, 40))
    assert body_midline(image) == pytest.approx(24.5)
    assert body_midline(np.zeros((1, 3, 3, 9), dtype=np.float32)) == 4.0  # nothing bright: the array centre


def test_keep_side_keeps_whole_components_on_the_patients_side():
    image, probs = _two_blobs()
    midline = body_midline(image)
    left = keep_side(probs, "left", midline)  # LPS: the patient's left is the higher x index
    assert left[..., 28:32].max() == pytest.approx(0.9) and left[..., :20].max() == 0
    right = keep_side(probs, "right", midline)
    assert right[..., 8:12].max() == pytest.approx(0.8) and right[..., 20:].max() == 0
    both = apply_laterality(np.stack([probs, probs]), image, [None, "left"])
    np.testing.assert_array_equal(both[0], probs)
    np.testing.assert_array_equal(both[1], left)


def test_laterality_judges_components_at_each_channels_own_threshold():
    # the right blob with a two-voxel rim at 0.4: a mask at 0.3 holds the rim, so the cut must judge it at 0.3
    image, probs = _two_blobs()
    probs[1:5, 1:8, 6:14][probs[1:5, 1:8, 6:14] == 0] = 0.4
    at_half, at_own = apply_laterality(np.stack([probs, probs]), image, ["left", "left"], [0.5, 0.3])
    assert (at_own[..., :20] > 0.3).sum() == 0  # the whole right component is gone, rim and all
    assert (at_half[..., :20] > 0.3).sum() > 0  # judged at 0.5, part of the rim stays for a mask at 0.3
    np.testing.assert_array_equal(at_own[..., 20:], probs[..., 20:])
    with pytest.raises(ValueError, match="2 channels but 1 thresholds"):
        apply_laterality(np.stack([probs, probs]), image, ["left", None], [0.5])


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_predict_left_kidney_on_a_kidney_model_writes_the_patients_left(tmp_path, capsys, monkeypatch, direction):
    from test_prediction import _run, make_model_folder, write_ct
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.inference.predictor import TextPredictor

    def two_kidneys(self, data, embeddings):
        """Canonical grid (x to the patient's left): one blob in each half, for every prompt."""
        probs = np.zeros((embeddings.shape[0], *data.shape[1:]), dtype=np.float32)
        nx = data.shape[-1]
        probs[:, 1:-1, 1:-1, 1:nx // 2 - 2] = 0.9
        probs[:, 1:-1, 1:-1, nx // 2 + 2:-1] = 0.9
        return probs

    monkeypatch.setattr(TextPredictor, "predict_preprocessed", two_kidneys)
    model = make_model_folder(tmp_path / "results")
    (tmp_path / "in").mkdir()
    write_ct(tmp_path / "in" / "case_0000.nii.gz", direction=direction)
    code, out, _ = _run(predict_main, ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model),
                                       "-p", "kidney", "left kidney", "--device", "cpu", "--disable_tta"], capsys)
    assert code == 0
    assert "prompt 'left kidney' -> 'left kidney': derived: laterality (trained class 'kidney'" in out
    whole = sitk.ReadImage(str(tmp_path / "out" / "case_kidney.nii.gz"))
    left = sitk.ReadImage(str(tmp_path / "out" / "case_left_kidney.nii.gz"))
    whole_x = _world_x(whole)
    left_x = _world_x(left)
    assert whole_x.min() < 0 < whole_x.max()  # both halves of the body
    assert left_x.size and left_x.min() > 0  # LPS: the patient's left is +x
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert manifest["resolutions"]["left kidney"]["derived"] == "laterality"
    assert manifest["resolutions"]["left kidney"]["side"] == "left"
    assert manifest["cases"]["case"]["prompts"]["left kidney"] == "left kidney"


def _world_x(mask: sitk.Image) -> np.ndarray:
    """LPS x of every foreground voxel, relative to the image's centre column."""
    array = sitk.GetArrayFromImage(mask)
    zyx = np.argwhere(array > 0)
    size = mask.GetSize()
    centre = mask.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in size])[0]
    return np.array([mask.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]])[0] - centre for p in zyx])


def test_predict_refuses_an_untrained_structure_and_writes_nothing(tmp_path, capsys):
    from test_prediction import _run, make_model_folder, write_ct
    from textnnunet.cli.embed_prompts import main as embed_main
    from textnnunet.cli.predict import main as predict_main

    model = make_model_folder(tmp_path / "results")
    (tmp_path / "in").mkdir()
    write_ct(tmp_path / "in" / "case_0000.nii.gz")
    code, out, err = _run(predict_main, ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model),
                                         "-p", "liver", "stomach", "--device", "cpu"], capsys)
    assert code == 2 and not (tmp_path / "out").exists()
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "prompt 'stomach' refused: means 'stomach'" in err
    assert "trained vocabulary: liver (hepatic parenchyma)" in err
    # embed_prompts shows the same decision, worded as predict prints it.
    code, out, _ = _run(embed_main, ["-m", str(model), "stomach", "left kidney"], capsys)
    assert code == 2
    assert "prompt 'stomach': refused: means 'stomach', which this model did not train" in out
    assert "prompt 'left kidney' -> 'left kidney': derived: laterality" in out


def test_evaluation_matches_canonical_structures_to_the_references_own_names():
    from textnnunet.evaluation.evaluate_folders import _under_reference_names

    left = np.ones((2, 2, 2), dtype=bool)
    masks = _under_reference_names({"left kidney": left}, {"kidney left": (1,), "spleen": (2,)})
    assert masks["kidney left"] is left and "spleen" not in masks


@pytest.mark.parametrize("stored_as", ["", "RAS", "RPI"])
def test_sides_derived_from_the_whole_kidney_match_the_reference_sides(tmp_path, stored_as):
    """On the phantom that labels each kidney (re-stored in other orientations, same anatomy), the reference kidney
    split at the body midline gives back the reference left and right kidney exactly."""
    from textnnunet.dataset.description import load_dataset, training_cases
    from textnnunet.demo.phantoms import generate_phantom_datasets
    from textnnunet.experiment_planning.planner import plan_datasets
    from textnnunet.preprocessing.preprocessor import preprocess_case

    generate_phantom_datasets(tmp_path / "raw", size="small", datasets=[5])
    desc = load_dataset(tmp_path / "raw", 5)
    cases = training_cases(desc)[:3]
    if stored_as:
        for path in [p for case in cases for p in (*case.image_files, case.label_file)]:
            sitk.WriteImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), stored_as), str(path))
    joint, _ = plan_datasets(tmp_path / "raw", tmp_path / "pre", [5], memory_target_gb=0.08, base_features=8,
                             progress=False)
    plans = json.loads(joint.read_text())
    left_value, right_value = desc.classes["left kidney"][0], desc.classes["right kidney"][0]
    for case in cases:
        data, seg, _ = preprocess_case(case.image_files, case.label_file, plans, "3d_fullres")
        kidney = np.isin(seg[0], [left_value, right_value]).astype(np.float32)
        left, right = apply_laterality(np.stack([kidney, kidney]), data, ["left", "right"]) > 0.5
        np.testing.assert_array_equal(left, seg[0] == left_value)
        np.testing.assert_array_equal(right, seg[0] == right_value)


def test_predict_the_whole_from_a_model_that_trained_its_sides(tmp_path, capsys, monkeypatch):
    import test_prediction
    from test_prediction import _run, make_model_folder, write_ct
    from textnnunet.cli.predict import main as predict_main
    from textnnunet.inference.predictor import TextPredictor

    monkeypatch.setattr(test_prediction, "CLASSES", ["left kidney", "right kidney", "liver"])

    def one_blob_per_side(self, data, embeddings):
        """Head 'left kidney' (one-hot index 0) sees a blob at high x (patient's left), 'right kidney' at low x."""
        probs = np.zeros((embeddings.shape[0], *data.shape[1:]), dtype=np.float32)
        nx = data.shape[-1]
        for channel, vector in enumerate(embeddings.numpy()):
            if int(np.argmax(vector)) == 0:
                probs[channel, 1:-1, 1:-1, nx // 2 + 2:-1] = 0.9
            elif int(np.argmax(vector)) == 1:
                probs[channel, 1:-1, 1:-1, 1:nx // 2 - 2] = 0.8
        return probs

    monkeypatch.setattr(TextPredictor, "predict_preprocessed", one_blob_per_side)
    model = make_model_folder(tmp_path / "results")
    (tmp_path / "in").mkdir()
    write_ct(tmp_path / "in" / "case_0000.nii.gz", direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    code, out, _ = _run(predict_main, ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model),
                                       "-p", "kidneys", "left kidney", "--device", "cpu", "--disable_tta"], capsys)
    assert code == 0 and "prompt 'kidneys' -> 'kidney': derived: union" in out
    both = _world_x(sitk.ReadImage(str(tmp_path / "out" / "case_kidneys.nii.gz")))
    left = _world_x(sitk.ReadImage(str(tmp_path / "out" / "case_left_kidney.nii.gz")))
    assert both.min() < 0 < both.max() and left.size and left.min() > 0
    manifest = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert manifest["resolutions"]["kidneys"]["parts"] == ["left kidney", "right kidney"]
    assert manifest["cases"]["case"]["prompts"]["kidneys"] == "kidney"


def test_embed_prompts_saves_the_vectors_predict_conditions_its_heads_on(tmp_path, minilm, capsys):
    """--save writes each typed prompt's own vector and, apart, the trained vectors of the heads predict runs for it:
    a lexicon synonym runs its class's head, a whole joined from its sides runs one head per side."""
    from textnnunet.cli.embed_prompts import main as embed_main

    classes = ["liver", "spleen", "left kidney", "right kidney"]
    plans = {"plans_name": "TextPlans_001", "label_space": {"classes": [{"name": n, "synonyms": []} for n in classes],
                                                            "datasets": {}}}
    vocab = Vocabulary.from_plans(plans).embed(minilm, MemoryEmbeddingCache())
    vocab.save(tmp_path / "model" / "fold_0")
    out_file = tmp_path / "vectors.npz"
    with pytest.raises(SystemExit) as exit_info:
        embed_main(["-m", str(tmp_path / "model"), "hepatic parenchyma", "kidney", "--save", str(out_file)])
    assert exit_info.value.code == 0, capsys.readouterr()
    saved = np.load(out_file)
    table = np.asarray(vocab.class_embeddings, dtype=np.float32)
    assert list(saved["prompts"]) == ["hepatic parenchyma", "kidney"]
    assert list(saved["head_class"]) == ["liver", "left kidney", "right kidney"]
    assert list(saved["head_prompt"]) == [0, 1, 1]
    np.testing.assert_array_equal(saved["head_vectors"], table[[0, 2, 3]])
    own = minilm.encode(["hepatic parenchyma"])[0]
    np.testing.assert_allclose(saved["prompt_vectors"][0], own, atol=1e-6)
    assert not np.allclose(saved["prompt_vectors"][0], table[0], atol=1e-3)


def test_embed_prompts_saves_the_modality_tables_head_vector(tmp_path, minilm, capsys):
    """A model whose prompts named the modality conditions a head on the class's row for the input's image type:
    --save needs --modality when there are several types, as predict does, and saves that row."""
    from textnnunet.cli.embed_prompts import main as embed_main

    vocab = Vocabulary(["liver", "spleen"]).embed(minilm).embed_modalities(["CT", "T2"], minilm)
    vocab.save(tmp_path / "model" / "fold_0")
    out_file = tmp_path / "vectors.npz"
    with pytest.raises(SystemExit) as exit_info:
        embed_main(["-m", str(tmp_path / "model"), "spleen", "--save", str(out_file)])
    assert exit_info.value.code == 2 and "--modality" in capsys.readouterr().err and not out_file.exists()
    with pytest.raises(SystemExit) as exit_info:
        embed_main(["-m", str(tmp_path / "model"), "spleen", "--modality", "t2 ", "--save", str(out_file)])
    assert exit_info.value.code == 0
    saved = np.load(out_file)
    np.testing.assert_array_equal(saved["head_vectors"], vocab.modality_embeddings["T2"][[1]].astype(np.float32))
    assert str(saved["modality"]) == "T2"
