"""The label hierarchy: canonical names in the joint plan, voxel-wise knowledge in the sampler, the masked loss."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from textnnunet.dataset.description import DatasetDescription
from textnnunet.errors import UserError
from textnnunet.experiment_planning.label_space import build_label_space, describe_label_space
from textnnunet.training.dataloading import _augment, to_torch
from textnnunet.training.loss import (DeepSupervisionLoss, PartialAnnotation, annotated_pairs, batch_annotation,
                                      fully_annotated, masked_bce_dice_loss)
from textnnunet.training.sampling import CaseRef, PatchSampler, hierarchy_knowledge

# ------------------------------------------------------------------------------------------------
# The loss on hand-made tensors: classes [parent, child]


def _parent_and_child(shape=(4, 6, 6)):
    target = torch.zeros(1, 2, *shape)
    target[0, 0, 1:3, 1:4, 1:4] = 1  # the parent (say kidney), labelled by this dataset
    logits = torch.zeros(1, 2, *shape, requires_grad=True)
    annotation = PartialAnnotation(annotated=torch.tensor([[True, False]]), outside_of=torch.tensor([[-1, 0]]),
                                   where_positive=torch.tensor([[False, False]]))
    return logits, target, annotation


@pytest.mark.parametrize("batch_dice", [False, True])
def test_child_of_a_labelled_parent_gets_no_gradient_inside_and_a_negative_outside(batch_dice):
    logits, target, annotation = _parent_and_child()
    masked_bce_dice_loss(logits, target, annotation, batch_dice=batch_dice).backward()
    inside = target[0, 0] > 0
    child_grad = logits.grad[0, 1]
    assert torch.all(child_grad[inside] == 0)  # inside the kidney the left kidney is unknown
    assert torch.all(child_grad[~inside] > 0)  # outside it: a known negative (the loss falls as the logit falls)
    assert logits.grad[0, 0].abs().sum() > 0  # the parent itself is judged as before


def test_parent_known_where_a_labelled_part_is_and_nowhere_else():
    shape = (3, 5, 5)
    target = torch.zeros(1, 2, *shape)
    target[0, 1, 1, 1:3, 1:3] = 1  # the part (say kidney tumor), labelled
    target[0, 0] = target[0, 1]  # the sampler derives the parent's positives from its labelled parts
    logits = torch.zeros(1, 2, *shape, requires_grad=True)
    annotation = PartialAnnotation(torch.tensor([[False, True]]), torch.tensor([[-1, -1]]),
                                   torch.tensor([[True, False]]))
    masked_bce_dice_loss(logits, target, annotation).backward()
    positive = target[0, 1] > 0
    assert torch.all(logits.grad[0, 0][positive] < 0)  # a known positive: the logit is pushed up
    assert torch.all(logits.grad[0, 0][~positive] == 0)  # elsewhere the kidney is unknown


def test_fully_annotated_pairs_give_the_same_loss_either_way():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 5)
    target = (torch.rand(2, 3, 4, 5, 5) > 0.7).float()
    annotated = torch.tensor([[True, False, True], [False, True, True]])
    partial = PartialAnnotation(annotated, torch.full((2, 3), -1), torch.zeros(2, 3, dtype=torch.bool))
    for batch_dice in (False, True):
        assert masked_bce_dice_loss(logits, target, partial, batch_dice=batch_dice).item() == pytest.approx(
            masked_bce_dice_loss(logits, target, annotated, batch_dice=batch_dice).item(), rel=1e-5)


def test_deep_supervision_derives_the_known_voxels_at_every_scale():
    logits, target, annotation = _parent_and_child(shape=(4, 8, 8))
    low = torch.zeros(1, 2, 2, 4, 4, requires_grad=True)
    loss = DeepSupervisionLoss(lambda o, t, a: masked_bce_dice_loss(o, t, a), [1.0, 0.5])
    loss([logits, low], target, annotation).backward()
    low_parent = torch.nn.functional.interpolate(target, size=(2, 4, 4), mode="nearest-exact")[0, 0] > 0
    assert torch.all(low.grad[0, 1][low_parent] == 0) and torch.all(low.grad[0, 1][~low_parent] > 0)


def test_batch_annotation_helpers():
    batch = {"annotated": torch.tensor([[True, False]])}
    assert torch.equal(batch_annotation(batch, "cpu"), batch["annotated"])
    batch.update(known_outside_of=torch.tensor([[-1, 0]]), known_where_positive=torch.tensor([[False, False]]))
    annotation = batch_annotation(batch, "cpu")
    assert torch.equal(annotated_pairs(annotation), torch.tensor([[True, True]]))
    assert torch.equal(fully_annotated(annotation), torch.tensor([[True, False]]))


# ------------------------------------------------------------------------------------------------
# The joint label space


def _desc(tmp_path: Path, name: str, classes: dict, synonyms: dict | None = None, raw: dict | None = None):
    return DatasetDescription(folder=tmp_path / name, name=name, dataset_id=int(name[7:10]), channel_names={"0": "CT"},
                              file_ending=".nii.gz", num_training=2, classes=classes,
                              declared_label_values=tuple(sorted({0, *[v for vs in classes.values() for v in vs]})),
                              synonyms=synonyms or {}, raw=raw or {})


def test_label_space_maps_names_to_the_lexicon_and_records_the_hierarchy(tmp_path):
    descs = [
        _desc(tmp_path, "Dataset001_Liver", {"liver": (1, 2), "liver tumour": (2,)}),
        _desc(tmp_path, "Dataset003_Kidney", {"kidneys": (1, 2), "kidney tumor": (2,)}),
        _desc(tmp_path, "Dataset005_Sides", {"kidney left": (1,), "kidney right": (2,), "organ x": (3, 4),
                                             "lesion x": (4,)}),
        _desc(tmp_path, "Dataset006_Own", {"renal thing": (1,)}, raw={"canonical_names": {"renal_thing": "kidney"}}),
    ]
    space = build_label_space(descs)
    names = [c["name"] for c in space["classes"]]
    assert names == ["liver", "liver tumor", "kidney", "kidney tumor", "left kidney", "right kidney", "organ x",
                     "lesion x"]
    assert space["canonical_names"]["Dataset005_Sides"] == {
        "kidney left": "left kidney", "kidney right": "right kidney", "organ x": "organ x", "lesion x": "lesion x"}
    assert space["canonical_names"]["Dataset006_Own"] == {"renal thing": "kidney"}  # the dataset's own choice wins
    assert space["datasets"]["Dataset006_Own"] == {"kidney": [1]}
    synonyms = {c["name"]: c["synonyms"] for c in space["classes"]}
    assert "kidney left" in synonyms["left kidney"] and "kidneys" in synonyms["kidney"]
    assert space["hierarchy"] == {
        "liver tumor": {"parent": "liver", "relation": "part", "from": "lexicon"},
        "kidney tumor": {"parent": "kidney", "relation": "part", "from": "lexicon"},
        "left kidney": {"parent": "kidney", "relation": "side", "from": "lexicon"},
        "right kidney": {"parent": "kidney", "relation": "side", "from": "lexicon"},
        "lesion x": {"parent": "organ x", "relation": "part", "from": "Dataset005_Sides regions"}}
    lines = describe_label_space(space)
    assert "Dataset005_Sides: kidney left -> left kidney, kidney right -> right kidney, organ x (not in the lexicon, " \
           "kept), lesion x (not in the lexicon, kept)" in lines
    assert "hierarchy: 'left kidney' is the left side of 'kidney' (lexicon)" in lines


def test_label_space_rejects_bad_overrides_and_two_labels_of_one_structure(tmp_path):
    with pytest.raises(UserError, match="'canonical_names' names unknown label"):
        build_label_space([_desc(tmp_path, "Dataset001_A", {"liver": (1,)}, raw={"canonical_names": {"x": "y"}})])
    with pytest.raises(UserError, match="both mean 'left kidney'"):
        build_label_space([_desc(tmp_path, "Dataset001_A", {"kidney left": (1,), "left kidney": (2,)})])


# ------------------------------------------------------------------------------------------------
# The sampler: derived targets and the batch keys

KIDNEY_DS, SIDES_DS = "Dataset003_Kidney", "Dataset005_Sides"
CLASSES = ["kidney", "left kidney", "right kidney"]
HIERARCHY = {"left kidney": {"parent": "kidney", "relation": "side", "from": "lexicon"},
             "right kidney": {"parent": "kidney", "relation": "side", "from": "lexicon"}}


def _plans(shape):
    return {"plans_name": "TextPlans_003_005",
            "label_space": {"classes": [{"name": c, "synonyms": []} for c in CLASSES],
                            "datasets": {KIDNEY_DS: {"kidney": [1]},
                                         SIDES_DS: {"left kidney": [1], "right kidney": [2]}},
                            "hierarchy": HIERARCHY},
            "configurations": {"3d_fullres": {"data_identifier": "3d_fullres", "patch_size": list(shape),
                                              "batch_size": 2}}}


def _case(folder: Path, dataset: str, seg: np.ndarray, classes: dict) -> CaseRef:
    (folder / dataset).mkdir(parents=True, exist_ok=True)
    npz, props = folder / dataset / "case.npz", folder / dataset / "case.json"
    np.savez_compressed(npz, data=np.zeros((1, *seg.shape), np.float32), seg=seg[None].astype(np.int16))
    locations = {name: np.argwhere(np.isin(seg, values)).tolist() for name, values in classes.items()}
    props.write_text(json.dumps({"case_id": "case", "dataset": dataset, "class_locations": locations}))
    return CaseRef(dataset, "case", npz, props)


def test_hierarchy_knowledge_per_dataset():
    knowledge = hierarchy_knowledge(CLASSES, {KIDNEY_DS: {"kidney": [1]}, SIDES_DS: {"left kidney": [1],
                                                                                     "right kidney": [2]}}, HIERARCHY)
    assert knowledge[KIDNEY_DS].outside_of.tolist() == [-1, 0, 0] and not knowledge[KIDNEY_DS].where_positive.any()
    assert knowledge[SIDES_DS].union_of == {0: [1, 2]}
    only_left = hierarchy_knowledge(CLASSES, {"D": {"left kidney": [1]}}, HIERARCHY)["D"]
    assert only_left.positives_of == {0: [1]} and only_left.where_positive.tolist() == [True, False, False]
    assert hierarchy_knowledge(CLASSES, {"D": {"kidney": [1], "left kidney": [2], "right kidney": [3]}},
                               HIERARCHY) == {}
    # A part of a whole that is the union of labelled sides: known negative outside that union.
    with_tumour = hierarchy_knowledge(CLASSES + ["kidney tumor"], {SIDES_DS: {"left kidney": [1], "right kidney": [2]}},
                                      {**HIERARCHY, "kidney tumor": {"parent": "kidney", "relation": "part"}})
    assert with_tumour[SIDES_DS].union_of == {0: [1, 2]}
    assert with_tumour[SIDES_DS].outside_of.tolist() == [-1, -1, -1, 0]


def test_sampler_batches_carry_the_derived_targets_and_knowledge(tmp_path):
    shape = (4, 6, 8)
    kidney_seg = np.zeros(shape, np.int16)
    kidney_seg[1:3, 2:4, 1:3] = 1
    kidney_seg[1:3, 2:4, 5:7] = 1
    sides_seg = np.zeros(shape, np.int16)
    sides_seg[1:3, 2:4, 1:3] = 2  # patient's right: low x
    sides_seg[1:3, 2:4, 5:7] = 1
    cases = [_case(tmp_path, KIDNEY_DS, kidney_seg, {"kidney": [1]}),
             _case(tmp_path, SIDES_DS, sides_seg, {"left kidney": [1], "right kidney": [2]})]
    sampler = PatchSampler(cases, _plans(shape), "3d_fullres", rng=np.random.default_rng(0))
    batches = [sampler.next_batch() for _ in range(6)]
    items = {key[0]: (batch, i) for batch in batches for i, key in enumerate(batch["keys"])}
    batch, i = items[SIDES_DS]
    assert batch["annotated"][i].tolist() == [True, True, True]  # the kidney is the union of its sides
    np.testing.assert_array_equal(batch["target"][i, 0], np.maximum(batch["target"][i, 1], batch["target"][i, 2]))
    batch, i = items[KIDNEY_DS]
    assert batch["annotated"][i].tolist() == [True, False, False]
    assert batch["known_outside_of"][i].tolist() == [-1, 0, 0] and batch["target"][i, 1:].sum() == 0

    torch_batch = to_torch(_augment(batch, None))
    annotation = batch_annotation(torch_batch, "cpu")
    assert isinstance(annotation, PartialAnnotation)
    known = annotation.known(torch_batch["target"])
    kidney = torch_batch["target"][i, 0] > 0
    assert torch.all(known[i, 1][kidney] == 0) and torch.all(known[i, 1][~kidney] == 1)


def test_without_the_hierarchy_related_classes_stay_unrelated(tmp_path):
    from textnnunet.training.config import TrainingConfig

    shape = (4, 6, 8)
    sides_seg = np.zeros(shape, np.int16)
    sides_seg[1:3, 2:4, 5:7] = 1
    cases = [_case(tmp_path, SIDES_DS, sides_seg, {"left kidney": [1], "right kidney": [2]})]
    plans = _plans(shape)
    plans["label_space"]["datasets"] = {SIDES_DS: plans["label_space"]["datasets"][SIDES_DS]}
    batch = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0), use_hierarchy=False).next_batch()
    assert "known_outside_of" not in batch and batch["annotated"][:, 0].tolist() == [False, False]
    assert TrainingConfig(label_hierarchy=False).model_tag("minilm") == "nohierarchy"


def test_augmentation_keeps_the_hierarchy_keys(tmp_path):
    from textnnunet.training.augmentation import augmentation_preset, get_training_transforms

    shape = (8, 16, 16)
    kidney_seg = np.zeros(shape, np.int16)
    kidney_seg[2:6, 4:12, 2:6] = 1
    cases = [_case(tmp_path, KIDNEY_DS, kidney_seg, {"kidney": [1]})]
    plans = _plans(shape)
    plans["label_space"]["datasets"] = {KIDNEY_DS: {"kidney": [1]}}
    batch = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0)).next_batch()
    augmented = _augment(batch, get_training_transforms(list(shape), augmentation_preset("nnunet", list(shape))))
    assert augmented["known_outside_of"].tolist() == [[-1, 0, 0], [-1, 0, 0]]
    assert isinstance(batch_annotation(to_torch(augmented), "cpu"), PartialAnnotation)


# ------------------------------------------------------------------------------------------------ exclusion

def test_exclusion_knowledge_marks_other_labelled_structures_but_never_relatives():
    classes = ["liver", "liver tumor", "spleen", "kidney", "left kidney"]
    hierarchy = {"liver tumor": {"parent": "liver", "relation": "part"},
                 "left kidney": {"parent": "kidney", "relation": "side"}}
    labels = {"LiverDS": {"liver": [1]}, "KidneyDS": {"kidney": [1]}}
    k = hierarchy_knowledge(classes, labels, hierarchy, exclusion=True)
    index = {c: i for i, c in enumerate(classes)}
    liver_ds, kidney_ds = k["LiverDS"].excluded_by, k["KidneyDS"].excluded_by
    # Liver voxels are not spleen and not kidney, but may be liver tumour (a part of the liver).
    assert liver_ds[index["spleen"], index["liver"]] and liver_ds[index["kidney"], index["liver"]]
    assert not liver_ds[index["liver tumor"], index["liver"]]
    # Kidney voxels are not liver, liver tumour or spleen, but may be the left kidney (a side of it).
    assert kidney_ds[index["liver tumor"], index["kidney"]] and kidney_ds[index["spleen"], index["kidney"]]
    assert not kidney_ds[index["left kidney"], index["kidney"]]
    # Only labelled structures exclude, and labelled classes need none of it.
    assert not liver_ds[:, index["spleen"]].any() and not liver_ds[index["liver"]].any()
    assert hierarchy_knowledge(classes, labels, hierarchy) == {} or not any(
        v.excluded_by.any() for v in hierarchy_knowledge(classes, labels, hierarchy).values())


def test_excluded_class_gets_a_negative_on_the_other_structure_and_no_gradient_elsewhere():
    target = torch.zeros(1, 2, 4, 6, 6)
    target[0, 0, 1:3, 1:4, 1:4] = 1  # class 0 (kidney) labelled here; class 1 (spleen) not
    logits = torch.zeros(1, 2, 4, 6, 6, requires_grad=True)
    annotation = PartialAnnotation(annotated=torch.tensor([[True, False]]), outside_of=torch.tensor([[-1, -1]]),
                                   where_positive=torch.tensor([[False, False]]),
                                   excluded_by=torch.tensor([[[False, False], [True, False]]]))
    assert annotation.pairs.tolist() == [[True, True]]
    masked_bce_dice_loss(logits, target, annotation).backward()
    kidney = target[0, 0] > 0
    spleen_grad = logits.grad[0, 1]
    assert torch.all(spleen_grad[kidney] > 0)  # on the kidney: known "not spleen"
    assert torch.all(spleen_grad[~kidney] == 0)  # elsewhere the spleen stays unknown


def test_sampler_exclusion_follows_the_hierarchy_switch(tmp_path):
    from training_cache_helpers import make_plans, two_dataset_cases

    plans, cases = make_plans(patch_3d=(4, 8, 8), batch_size=4), two_dataset_cases(tmp_path)
    old_plan = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0), use_exclusion=True).next_batch()
    assert "known_excluded_by" not in old_plan  # a plan made before the lexicon knows no relations: no exclusion
    plans["label_space"] = {**plans["label_space"], "hierarchy": {"liver tumor": {"parent": "liver",
                                                                                   "relation": "part"}}}
    assert "known_excluded_by" not in PatchSampler(cases, plans, "3d_fullres").next_batch()  # off by default
    batch = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0), use_exclusion=True).next_batch()
    assert "known_excluded_by" in batch and batch["known_excluded_by"].any()
    names = [c["name"] for c in plans["label_space"]["classes"]]
    for (dataset, _), excluded in zip(batch["keys"], batch["known_excluded_by"]):
        labelled = plans["label_space"]["datasets"][dataset]
        for k, name in enumerate(names):  # a labelled class needs no exclusion; an unlabelled one is excluded
            assert excluded[k].any() == (name not in labelled)  # by this dataset's (unrelated) structures
    without = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0), use_hierarchy=False,
                           use_exclusion=True).next_batch()
    assert "known_excluded_by" not in without


def test_pairs_known_only_as_negative_get_bce_but_no_dice():
    target = torch.zeros(1, 2, 4, 6, 6)
    target[0, 0, 1:3, 1:4, 1:4] = 1
    logits = torch.full((1, 2, 4, 6, 6), 2.0, requires_grad=True)  # confidently positive everywhere
    excluded = torch.tensor([[[False, False], [True, False]]])
    annotation = PartialAnnotation(torch.tensor([[True, False]]), torch.tensor([[-1, -1]]),
                                   torch.tensor([[False, False]]), excluded)
    with_partial = masked_bce_dice_loss(logits, target, annotation)
    labelled_only = masked_bce_dice_loss(logits, target, torch.tensor([[True, False]]))
    known = annotation.known(target)
    bce_excluded_voxels = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[0, 1][known[0, 1] > 0], target[0, 1][known[0, 1] > 0], reduction="sum")
    # The labelled pair's BCE and Dice, plus the excluded voxels' BCE weighed as background voxels of a labelled
    # pair (sum / patch voxels) without counting as a pair: no Dice of 1, no halving of the labelled pair's BCE.
    bce_labelled = torch.nn.functional.binary_cross_entropy_with_logits(logits[0, 0], target[0, 0])
    dice_part = labelled_only - bce_labelled
    expected = bce_labelled + bce_excluded_voxels / target[0, 0].numel() + dice_part
    assert torch.isclose(with_partial, expected, atol=1e-5)


def test_exclusion_weighs_like_background_whatever_the_structure_size():
    # The same prediction on the excluded voxels costs the same per voxel whether the other structure is small or
    # large: an excluded pair's loss grows with its known voxels, it is not their mean (which made a 1-voxel kidney
    # weigh as much as the whole labelled pair).
    def excluded_loss(n_voxels: int) -> torch.Tensor:
        target = torch.zeros(1, 2, 4, 6, 6)
        target[0, 0].view(-1)[:n_voxels] = 1
        logits = torch.zeros(1, 2, 4, 6, 6)
        logits[0, 1] = 3.0
        annotation = PartialAnnotation(torch.tensor([[True, False]]), torch.tensor([[-1, -1]]),
                                       torch.tensor([[False, False]]), torch.tensor([[[False, False], [True, False]]]))
        labelled_only = masked_bce_dice_loss(logits, target, torch.tensor([[True, False]]))
        return masked_bce_dice_loss(logits, target, annotation) - labelled_only

    small, large = excluded_loss(4), excluded_loss(40)
    assert torch.isclose(large, 10 * small, rtol=1e-4)


def test_exclusion_is_capped_per_item_and_draws_nothing_below_the_cap(tmp_path):
    from training_cache_helpers import make_plans, two_dataset_cases

    plans, cases = make_plans(patch_3d=(4, 8, 8), batch_size=4), two_dataset_cases(tmp_path)
    plans["label_space"] = {**plans["label_space"], "hierarchy": {}}
    free = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0), use_exclusion=True)
    capped = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0), use_exclusion=True,
                          max_excluded_classes=1)
    uncapped_batch = free.next_batch()
    assert (uncapped_batch["known_excluded_by"].any(axis=2).sum(axis=1) > 1).any()  # the fixture excludes several
    batch = capped.next_batch()
    assert (batch["known_excluded_by"].any(axis=2).sum(axis=1) <= 1).all()
    roomy = PatchSampler(cases, plans, "3d_fullres", rng=np.random.default_rng(0), use_exclusion=True,
                         max_excluded_classes=99)
    same = roomy.next_batch()  # below the cap: the very same stream as without one
    assert np.array_equal(same["data"], uncapped_batch["data"])
    assert np.array_equal(same["known_excluded_by"], uncapped_batch["known_excluded_by"])
