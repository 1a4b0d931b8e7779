"""The eight-dataset phantom pool (issue 13, item 3): finer anatomy codes left the earlier datasets bit for bit as
they were; the pool generates, its labels are anatomy, and its union vocabulary, hierarchy and test sets add up."""
import hashlib

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from textnnunet.dataset.description import load_dataset
from textnnunet.dataset.integrity import verify_dataset_integrity
from textnnunet.demo.phantoms import (
    ANATOMY_CODES,
    PART_OF,
    POOL_PHANTOM_DATASETS,
    POOL_TEST_IDS,
    POOL_TRAIN_IDS,
    SIDED,
    generate_case,
    generate_phantom_datasets,
    phantom_spec,
)
from textnnunet.experiment_planning.label_space import build_label_space, class_names
from textnnunet.text.lexicon import load_lexicon

# sha256 (first 16 hex digits) of image bytes + label bytes + repr(geometry) of every "small" case (seed 0), computed
# with the generator of commit 501dfac, before the anatomy codes were split (bowel, vessel, bone, back muscles).
EARLIER_DIGESTS = {
    1: ["54d3039ccfd9aad3", "b39af2e99edda57f", "8e2d89734e40d9ce", "237804566706ff58", "d5bd9433b27b7313",
        "d0ed70129c41ed6b"],
    2: ["9eb968459ee62977", "ca3b58ed212a709a", "b4feec95a366dea6", "0216dcb18baa4ca3", "3a9409ed2bb68ba0"],
    3: ["32eca724a60c2bec", "ea01fa9499a29976", "9f42d5363115cbd5", "f6e0fed80217c88f", "dfab599b754c692c",
        "70f17ba551cc3a94"],
    4: ["568346feb1640e6e", "efd869db5fb3f7d4"],
    5: ["3de3544d129460f5", "8fcf2b83eb363c70", "24511a14699bf25f", "2c712c2ccebd0c80", "b3a0afe2de173712"],
    11: ["049199f8aabeefdb", "508eca7e0f7894b2", "19f98d55a0257c28", "4816ba2f9af8cc2a"],
    12: ["d82bb2f66eac5685", "a3bf9baec8da7e7c", "975cbb6328149dea", "5b1175ad08443085"],
    13: ["6aad07f04c50417f"],
    14: ["58edf052af23ad45"],
}
# The same float32 operations the generator relies on (sin, gaussian_filter, sqrt), on the machine the digests came
# from. Vectorised float32 maths may round differently on another CPU or numpy; there the digests cannot be compared.
CANARY = "feeae8ee532b053a"


def _canary() -> str:
    x = np.random.default_rng(7).standard_normal((16, 24, 24), dtype=np.float32)
    h = hashlib.sha256()
    h.update(np.sin(x * 3).tobytes())
    h.update(gaussian_filter(x, (0.35, 0.5, 0.5), mode="nearest").tobytes())
    h.update(np.sqrt(np.abs(x)).tobytes())
    return h.hexdigest()[:16]


def _digest(case) -> str:
    h = hashlib.sha256()
    h.update(case.image.tobytes())
    h.update(case.labels.tobytes())
    h.update(repr(case.geometry).encode())
    return h.hexdigest()[:16]


def test_earlier_datasets_are_bit_identical():
    if _canary() != CANARY:
        pytest.skip("float32 maths rounds differently on this platform: the stored digests do not apply")
    for dataset_id, expected in EARLIER_DIGESTS.items():
        spec = phantom_spec(dataset_id)
        n = spec.num_training["small"] + spec.num_test["small"]
        assert [_digest(generate_case(spec, i, "small", 0)) for i in range(n)] == expected, spec.name


def test_pool_ids_are_free_and_complete():
    assert len(POOL_TRAIN_IDS) >= 8
    assert {s.dataset_id for s in POOL_PHANTOM_DATASETS} | {14} == set(POOL_TRAIN_IDS) | set(POOL_TEST_IDS)
    sizes = [phantom_spec(i).num_training["default"] for i in POOL_TRAIN_IDS]
    assert min(sizes) == 5 and max(sizes) == 40
    train = [phantom_spec(i) for i in POOL_TRAIN_IDS]
    assert {s.modality for s in train} == {"CT", "T1", "T2"}
    assert {s.phase for s in train if s.modality == "CT"} == {"portal_venous", "arterial", "noncontrast"}
    assert all(phantom_spec(i).num_training["default"] == 0 and 3 <= phantom_spec(i).num_test["default"] <= 4
               and phantom_spec(i).labelled_test for i in POOL_TEST_IDS)


@pytest.mark.parametrize("spec", POOL_PHANTOM_DATASETS, ids=lambda s: s.name)
def test_pool_specs_generate_every_declared_label(spec):
    assert set(spec.label_values) <= set(ANATOMY_CODES) | set(SIDED)
    case = generate_case(spec, 0, "small")
    declared = {int(v) for v in spec.label_values.values()} | {0}
    assert set(np.unique(case.labels).tolist()) == declared, spec.name
    # Every label value is painted anatomy: structures the dataset does not label stay background.
    labelled = np.zeros(case.anatomy.shape, bool)
    for structure in spec.label_values:
        codes = SIDED[structure][0] if structure in SIDED else (structure,)
        codes += tuple(part for part, whole in PART_OF.items() if whole in codes and part not in spec.label_values)
        labelled |= np.isin(case.anatomy, [ANATOMY_CODES[c] for c in codes])
    assert not case.labels[~labelled].any()


@pytest.fixture(scope="module")
def pool_raw(tmp_path_factory):
    raw = tmp_path_factory.mktemp("pool_raw")
    generate_phantom_datasets(raw, size="small", seed=0, datasets=list(POOL_TRAIN_IDS) + list(POOL_TEST_IDS))
    return raw


def test_pool_datasets_pass_the_integrity_check(pool_raw):
    for dataset_id in POOL_TRAIN_IDS + POOL_TEST_IDS:
        assert verify_dataset_integrity(load_dataset(pool_raw, dataset_id)) == [], dataset_id


def test_union_vocabulary_hierarchy_and_test_coverage(pool_raw):
    lexicon = load_lexicon()
    descs = [load_dataset(pool_raw, i) for i in POOL_TRAIN_IDS]
    space = build_label_space(descs, lexicon)
    names = class_names(space)
    assert len(names) >= 15 and len(names) == len(set(names))
    assert all(name in lexicon.entries for name in names), [n for n in names if n not in lexicon.entries]
    hierarchy = {child: (link["parent"], link["relation"]) for child, link in space["hierarchy"].items()}
    assert hierarchy == {"liver tumor": ("liver", "part"), "liver vessel": ("liver", "part"),
                         "kidney tumor": ("kidney", "part"), "left kidney": ("kidney", "side"),
                         "right kidney": ("kidney", "side")}
    # Overlapping label sets: several classes are labelled by more than one dataset.
    labelled_by = {n: [d for d, classes in space["datasets"].items() if n in classes] for n in names}
    assert sum(len(d) > 1 for d in labelled_by.values()) >= 5
    # Every class is scored by a test set in each modality it is labelled in.
    modality = {d.name: d.channel_names["0"] for d in descs}
    scored: dict[str, set[str]] = {}
    for test_id in POOL_TEST_IDS:
        test = load_dataset(pool_raw, test_id)
        for label in test.classes:
            canonical = lexicon.canonical_name(label) or label
            assert canonical in names, (test.name, label)
            scored.setdefault(canonical, set()).add(test.channel_names["0"])
    for name, datasets in labelled_by.items():
        assert {modality[d] for d in datasets} <= scored.get(name, set()), name
