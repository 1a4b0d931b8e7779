"""Synthetic abdominal CT phantoms: four partially labelled nnU-Net v2 raw datasets for the demo and tests.

Every case is one synthetic patient described analytically in millimetres, in the patient's LPS frame
(x towards the patient's left, y posterior, z superior, origin at the body centre). The voxel grid only
samples that description, so the "small", "default" and "full" sizes show the same anatomy at different
resolutions. Each dataset then keeps only the labels a real public dataset of its kind has (LiTS, MSD
spleen, KiTS): the other organs stay in the image as background, which is exactly the partial-label
problem textnnunet exists for. Dataset004 is a fully labelled test set to judge all organs at once.
"""
from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from scipy.ndimage import gaussian_filter

from textnnunet.dataset.resumable import check_dataset_id_free, check_resumable
from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry, write_image
from textnnunet.utils.files import atomic_write_json, load_json

GENERATOR_VERSION = 1
FILE_ENDING = ".nii.gz"
IN_PROGRESS_MARKER = ".phantom_generation.json"

# Codes of the full anatomy map (what the generator painted). Codes 1-6 equal Dataset004's label values. The code is
# only the map's value: splitting a structure into finer codes (bowel -> small bowel / colon, vessel -> aorta / IVC /
# liver vessels, bone -> vertebrae / ribs / spinal canal, back muscles -> autochthon / iliopsoas) left every image and
# every earlier dataset's label map bit for bit as it was (tests/test_phantoms.py checks digests).
ANATOMY_CODES: dict[str, int] = {
    "air": 0, "liver": 1, "liver_tumor": 2, "spleen": 3, "kidney": 4, "kidney_tumor": 5, "pancreas": 6,
    "stomach": 7, "small_bowel": 8, "vertebrae": 9, "aorta": 10, "muscle": 11, "fat": 12, "colon": 13, "ribs": 14,
    "spinal_cord": 15, "inferior_vena_cava": 16, "autochthon": 17, "iliopsoas": 18, "liver_vessel": 19,
}
A = ANATOMY_CODES
# A structure painted inside another that belongs to it: a dataset that does not label the part labels it as the
# whole (the liver of LiTS, BTCV, ... includes its vessels; MSD Task08 labels the vessels themselves).
PART_OF: dict[str, str] = {"liver_vessel": "liver"}


def structure_mask(anatomy: np.ndarray, structure: str) -> np.ndarray:
    """Voxels of a structure in an anatomy map, with its parts (the liver with its vessels)."""
    return np.isin(anatomy, [A[structure]] + [A[part] for part, whole in PART_OF.items() if whole == structure])
# Left/right halves of paired organs, split at the midline: (anatomy structures included, side of patient x).
# An organ includes its tumour, as KiTS's "kidney" region and TotalSegmentator's kidney masks do.
SIDED: dict[str, tuple[tuple[str, ...], int]] = {
    "kidney_left": (("kidney", "kidney_tumor"), +1), "kidney_right": (("kidney", "kidney_tumor"), -1),
    "autochthon_left": (("autochthon",), +1), "autochthon_right": (("autochthon",), -1),
    "iliopsoas_left": (("iliopsoas",), +1), "iliopsoas_right": (("iliopsoas",), -1),
}

# Base attenuation (HU, portal venous phase) of each tissue; enhancing tissues shift with the dataset phase.
BASE_HU: dict[str, float] = {
    "air": -1000.0, "fat": -100.0, "visceral_fat": -85.0, "muscle": 50.0, "liver": 60.0, "spleen": 50.0,
    "kidney_cortex": 165.0, "kidney_medulla": 130.0, "pancreas": 42.0, "aorta": 170.0, "ivc": 120.0,
    "liver_vessel": 135.0, "stomach_wall": 55.0, "water": 10.0, "gas": -850.0, "bowel_wall": 45.0,
    "bone_cortex": 650.0, "bone_cancellous": 230.0, "disc": 90.0, "csf": 15.0,
}
# MR signal (arbitrary units, 0-1000) of each tissue in two weightings: T1 (fat and marrow bright, fluid and flowing
# blood dark, liver brighter than spleen) and T2 (fluid bright, spleen and kidneys brighter than the dark liver).
MR_BASE: dict[str, dict[str, float]] = {
    "T1": {"air": 0.0, "fat": 820.0, "visceral_fat": 790.0, "muscle": 300.0, "liver": 470.0, "spleen": 330.0,
           "kidney_cortex": 390.0, "kidney_medulla": 250.0, "pancreas": 500.0, "aorta": 90.0, "ivc": 110.0,
           "liver_vessel": 140.0, "stomach_wall": 320.0, "water": 70.0, "gas": 10.0, "bowel_wall": 300.0,
           "bone_cortex": 30.0, "bone_cancellous": 520.0, "disc": 250.0, "csf": 70.0},
    "T2": {"air": 0.0, "fat": 600.0, "visceral_fat": 570.0, "muscle": 150.0, "liver": 210.0, "spleen": 430.0,
           "kidney_cortex": 460.0, "kidney_medulla": 560.0, "pancreas": 300.0, "aorta": 70.0, "ivc": 90.0,
           "liver_vessel": 110.0, "stomach_wall": 250.0, "water": 900.0, "gas": 10.0, "bowel_wall": 260.0,
           "bone_cortex": 20.0, "bone_cancellous": 300.0, "disc": 520.0, "csf": 950.0},
}
ENHANCING = ("liver", "spleen", "kidney_cortex", "kidney_medulla", "pancreas", "aorta", "ivc", "liver_vessel")
# Contrast phases as HU changes against BASE_HU (portal venous). Typical values of abdominal CT: unenhanced
# organs sit within ~25 HU of each other, the late arterial phase lights up the renal cortex and the aorta.
PHASE_HU_DELTA: dict[str, dict[str, float]] = {
    "portal_venous": {},
    "arterial": {"aorta": 130.0, "ivc": -40.0, "liver": -5.0, "spleen": 40.0, "kidney_cortex": 60.0,
                 "kidney_medulla": -30.0, "pancreas": 40.0, "liver_vessel": -35.0},
    "noncontrast": {"aorta": -130.0, "ivc": -80.0, "liver": -5.0, "spleen": -5.0, "kidney_cortex": -130.0,
                    "kidney_medulla": -100.0, "pancreas": -2.0, "liver_vessel": -95.0},
    # Delayed (excretory, ~3-5 min): vessels washed out to ~110 HU, liver and spleen alike and a little lower, the
    # renal medulla now brighter than the cortex (contrast in the tubules). Only the sealed test set uses it.
    "delayed": {"aorta": -60.0, "ivc": -10.0, "liver": -8.0, "spleen": -6.0, "kidney_cortex": -20.0,
                "kidney_medulla": 55.0, "pancreas": -6.0, "liver_vessel": -25.0},
}


@dataclass(frozen=True)
class SizeSpec:
    inplane_factor: float  # voxel spacing multiplier in-plane (the field of view in mm stays the same)
    z_factor: float  # voxel spacing multiplier along z


# "full": clinical-like resolution (about 2.5 mm in-plane) for GPU runs; "default": the demo, coarse enough
# (about 4.5 mm) that the universal model trains in minutes on 2 CPU cores; "small": tests and CI.
SIZES: dict[str, SizeSpec] = {"full": SizeSpec(1.0, 1.0), "default": SizeSpec(1.8, 1.5), "small": SizeSpec(2.8, 2.2)}


@dataclass(frozen=True)
class PhantomDatasetSpec:
    dataset_id: int
    name: str  # folder name, DatasetXXX_Name
    case_prefix: str
    label_values: dict[str, int]  # anatomy structure -> label value written in this dataset
    labels: dict  # dataset.json "labels" (nnU-Net region syntax where a class covers several values)
    regions_class_order: tuple[int, ...] | None
    synonyms: dict[str, list[str]]
    spacing: tuple[float, float, float]  # (z, y, x) mm at size "full"
    fov_mm: tuple[float, float]  # (z extent, in-plane extent)
    z_centre_mm: float  # where the field of view is centred along z, relative to the body centre
    flip_x: bool  # store with direction diag(-1, 1, 1) so geometry handling is exercised
    noise_std: float  # HU
    enhancement_hu: float  # contrast phase: offset of all enhancing tissues
    num_training: dict[str, int] = field(default_factory=dict)  # per size
    num_test: dict[str, int] = field(default_factory=dict)
    labelled_test: bool = False  # write labelsTs for the test cases
    description: str = ""
    phase: str = "portal_venous"  # key of PHASE_HU_DELTA
    orientation: str = ""  # DICOM orientation code the files are stored in ("" = as sampled: LPS, x flipped by flip_x)
    modality: str = "CT"  # "CT" (HU) or an MR weighting of MR_BASE ("T1", "T2"): the dataset's channel name
    # Generated with this seed whatever the caller's seed (the sealed test set: its data must not move with --seed).
    fixed_seed: int | None = None

    def case_id(self, index: int) -> str:
        return f"{self.case_prefix}_{index:03d}"

    def labels_from_anatomy(self, anatomy: np.ndarray, patient_x: np.ndarray | None = None) -> np.ndarray:
        """Keep only the structures this dataset annotates; everything else becomes background.

        Sided structures (SIDED: "kidney_left", ...) split an organ at the patient's midline, x = 0 in the
        generator's frame (x towards the patient's left); `patient_x` holds x of each array column.
        """
        lut = np.zeros(256, np.uint8)
        for part, whole in PART_OF.items():
            if part not in self.label_values and whole in self.label_values:
                lut[ANATOMY_CODES[part]] = self.label_values[whole]
        for structure, value in self.label_values.items():
            if structure not in SIDED:
                lut[ANATOMY_CODES[structure]] = value
        labels = lut[anatomy]
        for structure, value in self.label_values.items():
            if structure in SIDED:
                codes, side = SIDED[structure]
                if patient_x is None:
                    raise ValueError(f"{structure}: sided labels need the patient x coordinate of each column")
                on_side = (np.asarray(patient_x) * side > 0)[None, None, :]
                labels[np.isin(anatomy, [ANATOMY_CODES[c] for c in codes]) & on_side] = value
        return labels


PHANTOM_DATASETS: tuple[PhantomDatasetSpec, ...] = (
    PhantomDatasetSpec(
        dataset_id=1, name="Dataset001_Liver", case_prefix="liver",
        label_values={"liver": 1, "liver_tumor": 2},
        labels={"background": 0, "liver": [1, 2], "liver_tumor": 2}, regions_class_order=(1, 2),
        synonyms={"liver": ["hepatic parenchyma"], "liver_tumor": ["liver lesion", "hepatic tumor"]},
        spacing=(3.0, 2.5, 2.5), fov_mm=(168.0, 270.0), z_centre_mm=12.0, flip_x=False,
        noise_std=12.0, enhancement_hu=0.0,
        num_training={"full": 12, "default": 12, "small": 5}, num_test={"full": 3, "default": 3, "small": 1},
        description="Synthetic CT, liver and liver tumour labelled (like LiTS); other organs unlabelled.",
    ),
    PhantomDatasetSpec(
        dataset_id=2, name="Dataset002_Spleen", case_prefix="spleen",
        label_values={"spleen": 1},
        labels={"background": 0, "spleen": 1}, regions_class_order=None,
        synonyms={"spleen": ["splenic parenchyma"]},
        spacing=(5.0, 2.2, 2.2), fov_mm=(195.0, 250.0), z_centre_mm=5.0, flip_x=False,
        noise_std=20.0, enhancement_hu=-12.0,
        num_training={"full": 10, "default": 10, "small": 4}, num_test={"full": 3, "default": 3, "small": 1},
        description="Synthetic CT with 5 mm slices, spleen labelled (like MSD Task09); other organs unlabelled.",
    ),
    PhantomDatasetSpec(
        dataset_id=3, name="Dataset003_Kidney", case_prefix="kidney",
        label_values={"kidney": 1, "kidney_tumor": 2},
        labels={"background": 0, "kidney": [1, 2], "kidney_tumor": 2}, regions_class_order=(1, 2),
        synonyms={"kidney": ["kidneys", "renal parenchyma"], "kidney_tumor": ["renal tumor", "kidney lesion"]},
        spacing=(2.5, 3.0, 3.0), fov_mm=(165.0, 300.0), z_centre_mm=-8.0, flip_x=True,
        noise_std=15.0, enhancement_hu=15.0,
        num_training={"full": 12, "default": 12, "small": 5}, num_test={"full": 3, "default": 3, "small": 1},
        description="Synthetic CT stored with a flipped x axis, kidneys and kidney tumours labelled (like KiTS).",
    ),
    PhantomDatasetSpec(
        dataset_id=4, name="Dataset004_Abdomen", case_prefix="abdomen",
        label_values={"liver": 1, "liver_tumor": 2, "spleen": 3, "kidney": 4, "kidney_tumor": 5, "pancreas": 6},
        labels={"background": 0, "liver": [1, 2], "liver_tumor": 2, "spleen": 3, "kidney": [4, 5],
                "kidney_tumor": 5, "pancreas": 6},
        regions_class_order=(1, 2, 3, 4, 5, 6),
        synonyms={"liver": ["hepatic parenchyma"], "spleen": ["splenic parenchyma"],
                  "kidney": ["kidneys", "renal parenchyma"], "pancreas": ["pancreatic gland"]},
        spacing=(2.5, 2.6, 2.6), fov_mm=(185.0, 280.0), z_centre_mm=6.0, flip_x=False,
        noise_std=14.0, enhancement_hu=5.0,
        num_training={"full": 0, "default": 0, "small": 0}, num_test={"full": 6, "default": 6, "small": 2}, labelled_test=True,
        description="Synthetic CT test set with every organ labelled, to judge all prompts on one image.",
    ),
)


def _mr_spec(dataset_id: int, name: str, prefix: str, weighting: str, label_values: dict, labels: dict,
             num_training: int, num_test: int, description: str, **geometry) -> PhantomDatasetSpec:
    fields = dict(spacing=(4.0, 2.0, 2.0), fov_mm=(200.0, 300.0), z_centre_mm=10.0, flip_x=False, noise_std=12.0,
                  enhancement_hu=0.0)
    fields.update(geometry)
    return PhantomDatasetSpec(
        dataset_id=dataset_id, name=name, case_prefix=prefix, label_values=label_values, labels=labels,
        regions_class_order=None, synonyms={}, modality=weighting,
        num_training={"full": num_training, "default": num_training, "small": min(num_training, 4)},
        num_test={"full": num_test, "default": num_test, "small": min(num_test, 1)},
        labelled_test=num_test > 0, description=description, **fields)


_MR_TEST_LABELS = dict(label_values={"liver": 1, "liver_tumor": 1, "spleen": 2, "kidney": 3, "kidney_tumor": 3},
                       labels={"background": 0, "liver": 1, "spleen": 2, "kidney": 3})
# Beyond the demo's four (generated only when asked for by id): a CT dataset labelling the kidneys by side (as
# TotalSegmentator, BTCV and AMOS do), and MR datasets for a joint CT + MR plan (like CHAOS / AMOS-MR).
EXTRA_PHANTOM_DATASETS: tuple[PhantomDatasetSpec, ...] = (
    PhantomDatasetSpec(
        dataset_id=5, name="Dataset005_KidneySides", case_prefix="kidneys",
        label_values={"kidney_left": 1, "kidney_right": 2}, labels={"background": 0, "left_kidney": 1, "right_kidney": 2},
        regions_class_order=None, synonyms={}, spacing=(2.5, 2.4, 2.4), fov_mm=(170.0, 280.0), z_centre_mm=-10.0,
        flip_x=False, noise_std=14.0, enhancement_hu=8.0,
        num_training={"full": 10, "default": 10, "small": 4}, num_test={"full": 3, "default": 3, "small": 1},
        labelled_test=True,
        description="Synthetic CT, left and right kidney labelled separately (each with its tumour), like "
                    "TotalSegmentator/BTCV; other organs unlabelled."),
    _mr_spec(11, "Dataset011_LiverT1", "livert1", "T1", {"liver": 1, "liver_tumor": 1},
             {"background": 0, "liver": 1}, 10, 0,
             "Synthetic T1-weighted MR (bias field, Rician noise), liver labelled with its lesions (like CHAOS T1)."),
    _mr_spec(12, "Dataset012_SpleenKidneyT2", "abdt2", "T2", {"spleen": 1, "kidney": 2, "kidney_tumor": 2},
             {"background": 0, "spleen": 1, "kidney": 2}, 10, 0,
             "Synthetic T2-weighted MR, spleen and kidneys labelled (like CHAOS T2 / AMOS-MR), liver unlabelled.",
             spacing=(5.0, 1.8, 1.8), z_centre_mm=0.0),
    _mr_spec(13, "Dataset013_AbdomenT1", "testt1", "T1", num_training=0, num_test=4,
             description="Synthetic T1-weighted MR test set, liver, spleen and kidneys labelled.", **_MR_TEST_LABELS),
    _mr_spec(14, "Dataset014_AbdomenT2", "testt2", "T2", num_training=0, num_test=4,
             description="Synthetic T2-weighted MR test set, liver, spleen and kidneys labelled.",
             spacing=(5.0, 1.8, 1.8), **_MR_TEST_LABELS),
)

# THE SEALED TEST SET (documentation/benchmarks.md, "The sealed test set"). Dataset004 is the development test set:
# defaults were chosen on it. Dataset010 was made after them, with a generator seed (SEALED_SEED) and a contrast phase
# that no other dataset has and no tuning decision has seen: the delayed (excretory) phase, renal medulla brighter than
# the cortex, vessels washed out (the arterial phase was the first choice, but the eight-dataset pool, Dataset023/024/
# 029, trains and tests on it). Report it once per change of default; never choose anything by its numbers. Its
# labels are Dataset004's.
SEALED_SEED = 90_417
SEALED_TEST_DATASET = PhantomDatasetSpec(
    dataset_id=10, name="Dataset010_AbdomenSealed", case_prefix="sealed",
    label_values=dict(PHANTOM_DATASETS[3].label_values), labels=dict(PHANTOM_DATASETS[3].labels),
    regions_class_order=PHANTOM_DATASETS[3].regions_class_order, synonyms=dict(PHANTOM_DATASETS[3].synonyms),
    spacing=(3.0, 2.4, 2.4), fov_mm=(190.0, 285.0), z_centre_mm=3.0, flip_x=False,
    noise_std=16.0, enhancement_hu=0.0, phase="delayed", fixed_seed=SEALED_SEED,
    num_training={"full": 0, "default": 0, "small": 0}, num_test={"full": 10, "default": 10, "small": 2},
    labelled_test=True,
    description=f"THE SEALED TEST SET: synthetic CT in the delayed (excretory) phase, every organ labelled, "
                f"generator seed {SEALED_SEED} (fixed). No default was tuned on it: report it once per change of "
                "default, never tune on it.",
)
EXTRA_PHANTOM_DATASETS += (SEALED_TEST_DATASET,)

# THE MATRIX'S SEALED TEST SET (session 13): each generalization-matrix row's Dataset004 chose the demo's budget
# (session 12), so those test sets are development sets. This one is Dataset004 drawn with its own fixed seed; a
# variant stores it with the variant's acquisition (spacing, field of view, orientation, phase, noise), so each row
# has a test set no decision has seen. Report it once, when issue 10 is judged; never choose anything by it.
MATRIX_SEALED_SEED = 27_183
MATRIX_SEALED_TEST_DATASET = replace(
    PHANTOM_DATASETS[3], dataset_id=19, name="Dataset019_MatrixSealed", case_prefix="msealed",
    fixed_seed=MATRIX_SEALED_SEED,
    description=f"THE MATRIX'S SEALED TEST SET: Dataset004's anatomy and labels drawn with generator seed "
                f"{MATRIX_SEALED_SEED} (fixed), stored with a matrix variant's acquisition. No default was chosen on "
                "it: report it once, never tune on it.",
)
EXTRA_PHANTOM_DATASETS += (MATRIX_SEALED_TEST_DATASET,)
# Heterogeneous (arcuate) enhancement of the spleen in the arterial phase: the amplitude (HU) of its texture.
SPLEEN_TEXTURE_HU: dict[str, float] = {"arterial": 14.0}


# ------------------------------------------------------------------------------------ the eight-dataset pool
def _pool_ct_spec(dataset_id: int, name: str, prefix: str, phase: str, label_values: dict, labels: dict,
                  num_training: int, num_test: int, description: str, **fields) -> PhantomDatasetSpec:
    geometry = dict(spacing=(2.5, 2.5, 2.5), fov_mm=(180.0, 280.0), z_centre_mm=5.0, flip_x=False, noise_std=14.0,
                    enhancement_hu=0.0, regions_class_order=None, synonyms={})
    geometry.update(fields)
    return PhantomDatasetSpec(
        dataset_id=dataset_id, name=name, case_prefix=prefix, label_values=label_values, labels=labels, phase=phase,
        num_training={"full": num_training, "default": num_training, "small": min(num_training, 4)},
        num_test={"full": num_test, "default": num_test, "small": min(num_test, 1)},
        labelled_test=num_test > 0, description=description, **geometry)


# Label sets of the pool, each like the public dataset named in its description (values as that dataset orders them).
_AMOS_LIKE = dict(
    label_values={"liver": 1, "liver_tumor": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4, "pancreas": 5,
                  "stomach": 6, "aorta": 7, "inferior_vena_cava": 8},
    labels={"background": 0, "liver": 1, "spleen": 2, "left_kidney": 3, "right_kidney": 4, "pancreas": 5,
            "stomach": 6, "aorta": 7, "inferior_vena_cava": 8})
_TOTALSEG_LIKE = dict(
    label_values={"vertebrae": 1, "ribs": 2, "spinal_cord": 3, "autochthon_left": 4, "autochthon_right": 5,
                  "iliopsoas_left": 6, "iliopsoas_right": 7, "aorta": 8, "inferior_vena_cava": 9, "small_bowel": 10,
                  "colon": 11},
    labels={"background": 0, "vertebrae": 1, "ribs": 2, "spinal_cord": 3, "left_autochthon": 4,
            "right_autochthon": 5, "left_iliopsoas": 6, "right_iliopsoas": 7, "aorta": 8, "inferior_vena_cava": 9,
            "small_bowel": 10, "colon": 11})
_CHAOS_T1_LIKE = dict(label_values={"liver": 1, "liver_tumor": 1, "kidney_right": 2, "kidney_left": 3, "spleen": 4},
                      labels={"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4})
_ORGANS_TEST = dict(
    label_values={"liver": 1, "liver_tumor": 2, "liver_vessel": 3, "spleen": 4, "kidney": 5, "kidney_tumor": 6,
                  "pancreas": 7, "stomach": 8},
    labels={"background": 0, "liver": [1, 2, 3], "liver_tumor": 2, "liver_vessel": 3, "spleen": 4, "kidney": [5, 6],
            "kidney_tumor": 6, "pancreas": 7, "stomach": 8},
    regions_class_order=(1, 2, 3, 4, 5, 6, 7, 8))

# Eight partially labelled training datasets (CT in three contrast phases, T1 and T2 MR; 5 to 40 cases; label sets
# that overlap and nest: kidney / left and right kidney / kidney tumour, liver / liver tumour / liver vessels) pooling
# to 21 classes, and five labelled test sets (with Dataset014) so that every class is scored in the modality and phase
# it was labelled in. Generated only when asked for by id; perf/pooled_run.py -r eight_datasets trains on them.
POOL_TRAIN_IDS: tuple[int, ...] = (20, 21, 22, 23, 24, 25, 26, 27)
POOL_TEST_IDS: tuple[int, ...] = (28, 29, 30, 31, 14)
POOL_PHANTOM_DATASETS: tuple[PhantomDatasetSpec, ...] = (
    _pool_ct_spec(20, "Dataset020_LiverTumourPV", "livpv", "portal_venous", {"liver": 1, "liver_tumor": 2},
                  {"background": 0, "liver": [1, 2], "liver_tumor": 2}, 24, 0,
                  "Synthetic portal-venous CT, liver (with its vessels) and liver tumours labelled (like LiTS).",
                  regions_class_order=(1, 2), spacing=(2.5, 2.4, 2.4), fov_mm=(170.0, 270.0), z_centre_mm=14.0,
                  noise_std=12.0, enhancement_hu=3.0),
    _pool_ct_spec(21, "Dataset021_PancreasPV", "pancpv", "portal_venous", {"pancreas": 1},
                  {"background": 0, "pancreas": 1}, 10, 0,
                  "Synthetic portal-venous CT, pancreas labelled (like MSD Task07 without its tumour class).",
                  spacing=(2.5, 2.2, 2.2), fov_mm=(150.0, 250.0), z_centre_mm=5.0, noise_std=16.0,
                  enhancement_hu=-5.0),
    _pool_ct_spec(22, "Dataset022_HepaticVesselPV", "hepvpv", "portal_venous", {"liver_vessel": 1, "liver_tumor": 2},
                  {"background": 0, "liver_vessel": 1, "liver_tumor": 2}, 16, 0,
                  "Synthetic portal-venous CT with 5 mm slices stored with a flipped x axis, liver vessels and liver "
                  "tumours labelled, the liver itself not (like MSD Task08 HepaticVessel).",
                  spacing=(5.0, 2.4, 2.4), fov_mm=(180.0, 280.0), z_centre_mm=20.0, flip_x=True, noise_std=15.0,
                  enhancement_hu=10.0),
    _pool_ct_spec(23, "Dataset023_KidneyTumourArterial", "kidart", "arterial", {"kidney": 1, "kidney_tumor": 2},
                  {"background": 0, "kidney": [1, 2], "kidney_tumor": 2}, 20, 0,
                  "Synthetic late-arterial CT, kidneys (with their tumours) and kidney tumours labelled (like KiTS).",
                  regions_class_order=(1, 2), spacing=(3.0, 2.6, 2.6), fov_mm=(170.0, 290.0), z_centre_mm=-12.0),
    _pool_ct_spec(24, "Dataset024_MultiOrganArterial", "amosart", "arterial", num_training=8, num_test=0,
                  description="Synthetic late-arterial CT, eight structures labelled: liver, spleen, left and right "
                              "kidney, pancreas, stomach, aorta, inferior vena cava (like AMOS / BTCV).",
                  spacing=(2.5, 2.6, 2.6), fov_mm=(190.0, 285.0), z_centre_mm=8.0, **_AMOS_LIKE),
    _pool_ct_spec(25, "Dataset025_TotalSegNC", "totalnc", "noncontrast", num_training=40, num_test=0,
                  description="Synthetic non-contrast CT stored RAS, bones, back muscles by side, great vessels and "
                              "bowel labelled, organs not (like a TotalSegmentator subset).",
                  spacing=(3.0, 2.5, 2.5), fov_mm=(220.0, 290.0), z_centre_mm=-10.0, noise_std=18.0,
                  orientation="RAS", **_TOTALSEG_LIKE),
    _mr_spec(26, "Dataset026_AbdomenT1", "chaost1", "T1", num_training=5, num_test=0,
             description="Synthetic T1-weighted MR, liver, left and right kidney and spleen labelled (like CHAOS T1).",
             **_CHAOS_T1_LIKE),
    _mr_spec(27, "Dataset027_AbdomenT2", "amost2", "T2", num_training=12, num_test=0,
             description="Synthetic T2-weighted MR, liver, spleen and kidneys labelled (like AMOS-MR).",
             spacing=(5.0, 1.9, 1.9), z_centre_mm=5.0, **_MR_TEST_LABELS),
    # Test sets.
    _pool_ct_spec(28, "Dataset028_PoolTestPV", "pooltestpv", "portal_venous", num_training=0, num_test=4,
                  description="Synthetic portal-venous CT test set: liver, liver tumour, liver vessels, spleen, "
                              "kidney, kidney tumour, pancreas, stomach.",
                  spacing=(2.5, 2.5, 2.5), fov_mm=(185.0, 280.0), z_centre_mm=8.0, **_ORGANS_TEST),
    _pool_ct_spec(29, "Dataset029_PoolTestArterial", "pooltestart", "arterial", num_training=0, num_test=3,
                  description="Synthetic late-arterial CT test set with the multi-organ labels of Dataset024.",
                  spacing=(2.8, 2.5, 2.5), fov_mm=(185.0, 285.0), z_centre_mm=4.0, **_AMOS_LIKE),
    _pool_ct_spec(30, "Dataset030_PoolTestNC", "pooltestnc", "noncontrast", num_training=0, num_test=3,
                  description="Synthetic non-contrast CT test set with the labels of Dataset025.",
                  spacing=(3.0, 2.5, 2.5), fov_mm=(220.0, 290.0), z_centre_mm=-10.0, noise_std=18.0,
                  **_TOTALSEG_LIKE),
    _mr_spec(31, "Dataset031_PoolTestT1", "pooltestt1", "T1", num_training=0, num_test=3,
             description="Synthetic T1-weighted MR test set with the labels of Dataset026.", **_CHAOS_T1_LIKE),
)
EXTRA_PHANTOM_DATASETS += POOL_PHANTOM_DATASETS


def phantom_spec(identifier: int | str) -> PhantomDatasetSpec:
    for spec in PHANTOM_DATASETS + EXTRA_PHANTOM_DATASETS:
        if identifier in (spec.dataset_id, spec.name):
            return spec
    known = ", ".join(spec.name for spec in PHANTOM_DATASETS + EXTRA_PHANTOM_DATASETS)
    raise UserError(f"phantom dataset {identifier!r}: unknown (choose from {known})")


# ----------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Grid:
    """Patient-frame coordinates (mm) of the voxel centres along each array axis.

    The direction matrix is diagonal (+-1), so the three axes stay separable and a structure only needs
    to be evaluated inside its bounding block.
    """
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.z), len(self.y), len(self.x))

    def block(self, centre: np.ndarray, half_widths: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices (z, y, x) of the voxels within `half_widths` (x, y, z mm) of `centre`."""
        slices = []
        for coords, axis in ((self.z, 2), (self.y, 1), (self.x, 0)):
            idx = np.nonzero(np.abs(coords - centre[axis]) <= half_widths[axis])[0]
            if idx.size == 0:
                return None
            slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
        return tuple(slices)

    def coords(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable (X, Y, Z) patient coordinates of a block."""
        return (self.x[sl[2]][None, None, :], self.y[sl[1]][None, :, None], self.z[sl[0]][:, None, None])


def case_geometry(spec: PhantomDatasetSpec, size: str, rng: np.random.Generator) -> tuple[ImageGeometry, Grid]:
    """Scanner geometry of one case (jittered spacing, field of view, table position) and its patient grid."""
    scale = SIZES[size]
    s_z = spec.spacing[0] * scale.z_factor
    s_xy = spec.spacing[1] * scale.inplane_factor * rng.uniform(0.96, 1.04)
    nz = max(8, int(round(spec.fov_mm[0] * rng.uniform(0.95, 1.05) / s_z)))
    nxy = max(16, int(round(spec.fov_mm[1] / s_xy)))
    patient = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-500, -300)])
    fov_offset = np.array([rng.uniform(-8, 8), rng.uniform(-8, 8), spec.z_centre_mm + rng.uniform(-8, 8)])
    sign_x = -1.0 if spec.flip_x else 1.0
    steps = {"x": (nxy, s_xy, sign_x), "y": (nxy, s_xy, 1.0), "z": (nz, s_z, 1.0)}
    origin, axes = [], {}
    for i, (axis, (n, s, sign)) in enumerate(steps.items()):
        centred = (np.arange(n) - (n - 1) / 2.0) * s * sign
        axes[axis] = (fov_offset[i] + centred).astype(np.float32)
        origin.append(float(patient[i] + fov_offset[i] + centred[0]))
    geometry = ImageGeometry(
        spacing=(float(s_z), float(s_xy), float(s_xy)), origin=tuple(origin),
        direction=(sign_x, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), shape=(nz, nxy, nxy),
    )
    return geometry, Grid(z=axes["z"], y=axes["y"], x=axes["x"])


# ----------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class Blob:
    """A smoothly deformed ellipsoid.

    With q the point in the blob's frame divided by its radii, rho = |q| * (1 + sum_k a_k sin(w_k.q + phi_k));
    the blob is rho < 1. Low-frequency waves keep the surface smooth and organ-like at any resolution.
    """
    centre: np.ndarray  # (3,) patient x, y, z in mm
    radii: np.ndarray  # (3,)
    rotation: np.ndarray  # (3, 3), columns are the blob axes in the patient frame
    waves: np.ndarray  # (K, 3)
    phases: np.ndarray  # (K,)
    amplitudes: np.ndarray  # (K,)

    def half_widths(self, max_rho: float = 1.0) -> np.ndarray:
        """Extent (x, y, z mm) of the box holding rho < max_rho: the rotated ellipsoid's box, grown by the
        largest inward reach of the deformation."""
        reach = max_rho / max(1.0 - float(np.abs(self.amplitudes).sum()), 0.3)
        return np.sqrt(((self.rotation * self.radii[None, :]) ** 2).sum(axis=1)) * reach

    def rho(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        # Python floats keep the float32 grid in float32 (numpy scalars would promote to float64).
        c, R, r = self.centre.tolist(), self.rotation.tolist(), self.radii.tolist()
        d = (X - c[0], Y - c[1], Z - c[2])
        q = [(R[0][i] / r[i]) * d[0] + (R[1][i] / r[i]) * d[1] + (R[2][i] / r[i]) * d[2] for i in range(3)]
        radius = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
        perturbation = np.zeros_like(radius)
        for w, phi, a in zip(self.waves.tolist(), self.phases.tolist(), self.amplitudes.tolist()):
            perturbation += a * np.sin(w[0] * q[0] + w[1] * q[1] + w[2] * q[2] + phi)
        return radius * (1.0 + perturbation)

    def point(self, q: np.ndarray) -> np.ndarray:
        """Patient coordinates of a point given in the blob's normalised frame."""
        return self.centre + self.rotation @ (np.asarray(q) * self.radii)


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rz(yaw) @ Ry(pitch) @ Rx(roll): yaw turns a structure within the axial plane."""
    (cz, sz), (cy, sy), (cx, sx) = ((np.cos(a), np.sin(a)) for a in np.deg2rad([yaw_deg, pitch_deg, roll_deg]))
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return rz @ ry @ rx


def axis_to_direction(direction: np.ndarray) -> np.ndarray:
    """A rotation whose third column is `direction` (for tubes along an arbitrary axis)."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    helper = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(d, u), d], axis=1)


class ShapeFactory:
    """Draws blobs with random deformation; the patient's global yaw is applied to every blob."""

    def __init__(self, rng: np.random.Generator, patient_yaw_deg: float):
        self.rng = rng
        self.global_rotation = rotation_matrix(patient_yaw_deg)

    def canonical(self, patient_point: np.ndarray) -> np.ndarray:
        """Undo the global yaw, for centres derived from an existing (already rotated) blob."""
        return self.global_rotation.T @ np.asarray(patient_point, float)

    def blob(self, centre, radii, rotation: np.ndarray | None = None, deform: float = 0.1, n_waves: int = 4,
             planar: bool = False) -> Blob:
        rng = self.rng
        directions = rng.normal(size=(n_waves, 3))
        if planar:  # cylinders along z deform only in-plane
            directions[:, 2] = 0.0
        directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-6)
        waves = directions * rng.uniform(1.5, 3.5, size=(n_waves, 1))
        amplitudes = rng.normal(size=n_waves)
        amplitudes *= deform / max(np.abs(amplitudes).sum(), 1e-6) * rng.uniform(0.7, 1.0)
        rot = self.global_rotation @ (np.eye(3) if rotation is None else rotation)
        return Blob(centre=self.global_rotation @ np.asarray(centre, float), radii=np.asarray(radii, float),
                    rotation=rot, waves=waves, phases=rng.uniform(0, 2 * np.pi, n_waves), amplitudes=amplitudes)


# ----------------------------------------------------------------------------------------------- painting
class Canvas:
    """The clean HU image and the anatomy code map of one case, painted structure by structure."""

    def __init__(self, grid: Grid, texture: np.ndarray, fine_texture: np.ndarray,
                 background: float = BASE_HU["air"]):
        self.grid = grid
        self.hu = np.full(grid.shape, background, np.float32)
        self.code = np.zeros(grid.shape, np.uint8)
        self.body = np.zeros(grid.shape, bool)
        self.interior = np.zeros(grid.shape, bool)
        self.texture = texture
        self.fine_texture = fine_texture
        self._cached: tuple | None = None

    def _rho(self, blob: Blob, max_rho: float) -> tuple[tuple[slice, ...] | None, np.ndarray | None]:
        """rho over the blob's block; cached because layered structures paint the same blob repeatedly."""
        if self._cached is not None and self._cached[0] is blob and self._cached[1] >= max_rho:
            return self._cached[2], self._cached[3]
        reach = max(1.0, max_rho)
        sl = self.grid.block(blob.centre, blob.half_widths(reach))
        rho = None if sl is None else blob.rho(*self.grid.coords(sl))
        self._cached = (blob, reach, sl, rho)
        return sl, rho

    def paint(self, blob: Blob, hu: float, code: int, *, max_rho: float = 1.0, region: str = "interior",
              within_codes: Iterable[int] | None = None, where: Callable | None = None, texture: float = 0.0,
              fine_texture: float = 0.0) -> tuple[tuple[slice, ...], np.ndarray] | None:
        """Paint `blob` (rho < max_rho) with `hu` and `code`; returns its block and the painted voxels in it.

        region: "interior" (inside the abdominal wall), "body" (anywhere in the body) or "all".
        """
        sl, rho = self._rho(blob, max_rho)
        if sl is None:
            return None
        mask = rho < max_rho
        if region == "interior":
            mask &= self.interior[sl]
        elif region == "body":
            mask &= self.body[sl]
        if within_codes is not None:
            codes = list(within_codes)
            mask &= (self.code[sl] == codes[0]) if len(codes) == 1 else np.isin(self.code[sl], codes)
        if where is not None:
            mask &= np.broadcast_to(where(*self.grid.coords(sl)), mask.shape)
        values = np.float32(hu)
        if texture or fine_texture:
            values = hu + texture * self.texture[sl][mask] + fine_texture * self.fine_texture[sl][mask]
        self.hu[sl][mask] = values
        self.code[sl][mask] = code
        return sl, mask


def smooth_noise(shape: tuple[int, ...], sigma_vox: Iterable[float], rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (texture and correlated CT noise)."""
    field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma=tuple(sigma_vox), mode="wrap")
    return field / max(float(field.std()), 1e-6)


# ----------------------------------------------------------------------------------------------- anatomy
def _tissue_hu(spec: PhantomDatasetSpec, rng: np.random.Generator) -> dict[str, float]:
    """Per-case attenuation: dataset phase offset plus a small per-patient jitter on enhancing tissues.
    For an MR dataset the same in the weighting's signal units (no contrast phase)."""
    if spec.modality != "CT":
        signal = dict(MR_BASE[spec.modality])
        scale = rng.uniform(0.8, 1.25)  # MR has no absolute scale: the receiver gain differs per scan
        jitter = rng.normal(0.0, 10.0)
        for name in ENHANCING:
            signal[name] += jitter + rng.normal(0.0, 5.0)
        return {k: v * scale for k, v in signal.items()}
    hu = dict(BASE_HU)
    for tissue, delta in PHASE_HU_DELTA[spec.phase].items():
        hu[tissue] += delta
    jitter = rng.normal(0.0, 4.0)
    for name in ENHANCING:
        hu[name] += spec.enhancement_hu + jitter + rng.normal(0.0, 2.0)
    return hu


def _paint_body(canvas: Canvas, shapes: ShapeFactory, hu: dict, rng: np.random.Generator) -> dict:
    """Skin/subcutaneous fat, the muscular abdominal wall and the visceral fat inside it."""
    ax, ay = rng.uniform(120, 135), rng.uniform(88, 100)
    body = shapes.blob((0, 0, 0), (ax, ay, 700.0), deform=0.04, n_waves=5, planar=True)
    fat_mm, muscle_mm = rng.uniform(12, 24), rng.uniform(8, 12)
    mean_r = (ax + ay) / 2
    s_muscle = 1.0 - fat_mm / mean_r
    s_interior = s_muscle - muscle_mm / mean_r
    sl, mask = canvas.paint(body, hu["fat"], A["fat"], region="all", texture=6.0)
    canvas.body[sl] = mask
    canvas.paint(body, hu["muscle"], A["muscle"], max_rho=s_muscle, region="all", fine_texture=4.0)
    sl, mask = canvas.paint(body, hu["visceral_fat"], A["fat"], max_rho=s_interior, region="all", texture=10.0)
    canvas.interior[sl] = mask
    return {"ax": ax, "ay": ay, "s_muscle": s_muscle, "s_interior": s_interior, "body": body}


def _paint_back_muscles(canvas: Canvas, shapes: ShapeFactory, hu: dict, body: dict,
                             rng: np.random.Generator) -> float:
    """Paraspinal (autochthonous) and psoas muscles, early so organs may abut them; returns where the vertebral body sits (y)."""
    y_vertebra = body["ay"] * body["s_interior"] - rng.uniform(38, 44)
    for side in (-1, 1):
        canvas.paint(shapes.blob((side * 27, y_vertebra + 40, 0), (21, 16, 700), deform=0.05, planar=True),
                     hu["muscle"], A["autochthon"], region="body", fine_texture=4.0)
        canvas.paint(shapes.blob((side * 31, y_vertebra + 2, -70), (15, 14, 75), rotation_matrix(0, 0, side * 6),
                                 deform=0.05), hu["muscle"], A["iliopsoas"], fine_texture=4.0)
    return y_vertebra


def _paint_bones(canvas: Canvas, shapes: ShapeFactory, hu: dict, body: dict, y_vertebra: float,
                 rng: np.random.Generator) -> None:
    """Vertebral column (with discs) and rib cross-sections; painted last, bone wins over soft tissue."""
    vertebra = shapes.blob((0, y_vertebra, 0), (18, 15, 700), deform=0.02, planar=True)
    canvas.paint(vertebra, hu["bone_cortex"], A["vertebrae"], region="body")
    disc_phase, disc_period = rng.uniform(0, 32), rng.uniform(28, 34)

    def in_disc(X, Y, Z):
        return np.abs(np.mod(Z - disc_phase, disc_period) - disc_period / 2) > disc_period / 2 - 3.5

    def not_in_disc(X, Y, Z):
        return ~in_disc(X, Y, Z)

    canvas.paint(vertebra, hu["bone_cancellous"], A["vertebrae"], max_rho=0.78, region="body", where=not_in_disc,
                 fine_texture=25.0)
    canvas.paint(vertebra, hu["disc"], A["vertebrae"], max_rho=0.95, region="body", where=in_disc)
    arch = shapes.blob((0, y_vertebra + 24, 0), (15, 12, 700), deform=0.02, planar=True)
    canvas.paint(arch, hu["bone_cortex"] - 150, A["vertebrae"], region="body")
    # The spinal canal (CSF around the cord) stands for TotalSegmentator's spinal cord.
    canvas.paint(shapes.blob((0, y_vertebra + 24, 0), (7.5, 6.5, 700), planar=True, deform=0.02),
                 hu["csf"], A["spinal_cord"], region="body")
    canvas.paint(shapes.blob((0, y_vertebra + 44, 0), (5, 13, 700), planar=True, deform=0.02),
                 hu["bone_cortex"] - 150, A["vertebrae"], region="body")
    # Ribs: short oblique bands inside the abdominal wall, only over the upper abdomen.
    s_rib = (body["s_muscle"] + body["s_interior"]) / 2
    z = rng.uniform(5, 20)
    while z < 150:
        for left_angle in (-35.0, 0.0, 35.0):
            for angle in (left_angle, 180.0 - left_angle):
                theta = np.deg2rad(angle + rng.uniform(-6, 6))
                centre = (body["ax"] * s_rib * np.cos(theta), body["ay"] * s_rib * np.sin(theta),
                          z + rng.uniform(-4, 4))
                rib = shapes.blob(centre, (4.5, 13.0, 6.0), rotation_matrix(np.rad2deg(theta)), deform=0.05)
                canvas.paint(rib, hu["bone_cortex"] - 100, A["ribs"], region="body")
        z += rng.uniform(28, 36)


def _paint_bowel_and_stomach(canvas: Canvas, shapes: ShapeFactory, hu: dict, rng: np.random.Generator) -> None:
    """Gas/fluid-filled loops (colon, small bowel) and the stomach: distractors in the demo, labelled only in the
    eight-dataset pool."""
    loops = [((-88, 0, -35), (20, 20, 60)), ((88, 5, -40), (18, 18, 55))]  # ascending/descending colon
    for _ in range(int(rng.integers(6, 11))):
        centre = (rng.uniform(-65, 65), rng.uniform(-60, -5), rng.uniform(-85, 0))
        loops.append((centre, tuple(rng.uniform(12, 22, size=3))))
    bowel = [A["colon"], A["small_bowel"]]
    for index, (centre, radii) in enumerate(loops):
        loop = shapes.blob(centre, radii, rotation_matrix(*rng.uniform(-90, 90, 3)), deform=0.15)
        code = A["colon"] if index < 2 else A["small_bowel"]
        canvas.paint(loop, hu["bowel_wall"], code, fine_texture=5.0)
        content = rng.choice([hu["gas"], hu["water"], hu["water"] + 25.0, -60.0])
        canvas.paint(loop, content, code, max_rho=0.72, within_codes=bowel, fine_texture=8.0)
    stomach = shapes.blob((rng.uniform(35, 48), rng.uniform(-42, -30), rng.uniform(48, 60)),
                          (rng.uniform(38, 48), rng.uniform(26, 32), rng.uniform(30, 38)),
                          rotation_matrix(rng.uniform(10, 35)), deform=0.1)
    canvas.paint(stomach, hu["stomach_wall"], A["stomach"], fine_texture=4.0)
    canvas.paint(stomach, hu["water"], A["stomach"], max_rho=0.85, within_codes=[A["stomach"]], fine_texture=5.0)
    gas_level = stomach.centre[1] - rng.uniform(0.2, 0.5) * stomach.radii[1]  # gas rises anteriorly (supine)
    canvas.paint(stomach, hu["gas"], A["stomach"], max_rho=0.85, within_codes=[A["stomach"]],
                 where=lambda X, Y, Z: Y < gas_level)


def _paint_pancreas_and_vessels(canvas: Canvas, shapes: ShapeFactory, hu: dict, y_vertebra: float,
                                rng: np.random.Generator) -> None:
    z0 = rng.uniform(2, 14)
    parts = [((-28, -22, z0 - 4), (20, 16, 18), 0.0), ((4, -28, z0 + 4), (24, 12, 12), -8.0),
             ((34, -16, z0 + 10), (20, 11, 11), 30.0)]
    for centre, radii, yaw in parts:
        jitter = rng.uniform(-4, 4, size=3)
        canvas.paint(shapes.blob(np.add(centre, jitter), radii, rotation_matrix(yaw + rng.uniform(-8, 8)),
                                 deform=0.15, n_waves=6),
                     hu["pancreas"], A["pancreas"], fine_texture=10.0)
    aorta = shapes.blob((rng.uniform(5, 12), y_vertebra - 27, 0), (11, 11, 700), deform=0.03, planar=True)
    canvas.paint(aorta, hu["aorta"], A["aorta"], fine_texture=3.0)
    ivc = shapes.blob((rng.uniform(-26, -20), y_vertebra - 25, 0), (12, 9, 700), deform=0.05, planar=True)
    canvas.paint(ivc, hu["ivc"], A["inferior_vena_cava"], fine_texture=3.0)


def _tumour_count(case_index: int, rng: np.random.Generator, p_any: float, max_count: int) -> int:
    """How many tumours an organ carries; the first case of a dataset always has one, so every dataset,
    however small, shows each tumour class it declares."""
    if case_index == 0:
        return int(rng.integers(1, max_count + 1))
    return int(rng.integers(1, max_count + 1)) if rng.random() < p_any else 0


def _random_point_in_ball(rng: np.random.Generator, radius: float) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v) * radius * rng.random() ** (1 / 3)


def _paint_liver(canvas: Canvas, shapes: ShapeFactory, hu: dict, case_index: int, rng: np.random.Generator) -> None:
    right_lobe = shapes.blob((rng.uniform(-52, -42), rng.uniform(-10, 2), rng.uniform(36, 46)),
                             (rng.uniform(58, 68), rng.uniform(56, 64), rng.uniform(48, 58)),
                             rotation_matrix(rng.uniform(-12, 12), rng.uniform(-8, 8)), deform=0.1)
    left_lobe = shapes.blob((rng.uniform(5, 20), rng.uniform(-42, -32), rng.uniform(44, 56)),
                            (rng.uniform(40, 50), rng.uniform(24, 30), rng.uniform(30, 38)),
                            rotation_matrix(rng.uniform(-25, 0)), deform=0.1)
    for lobe in (right_lobe, left_lobe):
        canvas.paint(lobe, hu["liver"], A["liver"], texture=3.0, fine_texture=2.0)
    # Portal/hepatic vessel branches: bright tubes inside the liver, part of the liver label (PART_OF).
    liver = [A["liver"], A["liver_vessel"]]
    hilum = shapes.canonical(right_lobe.point((0.45, 0.2, -0.25)))
    for _ in range(int(rng.integers(3, 6))):
        direction = np.array([rng.uniform(-1, 0.4), rng.uniform(-0.6, 0.6), rng.uniform(0.1, 1.0)])
        direction /= np.linalg.norm(direction)
        length = rng.uniform(30, 55)
        radii = (rng.uniform(2.5, 4.5), rng.uniform(2.5, 4.5), length / 2)
        tube = shapes.blob(hilum + direction * length / 2, radii, axis_to_direction(direction), deform=0.05)
        canvas.paint(tube, hu["liver_vessel"], A["liver_vessel"], within_codes=liver, fine_texture=3.0)
    for _ in range(_tumour_count(case_index, rng, p_any=0.6, max_count=3)):
        centre = shapes.canonical(right_lobe.point(_random_point_in_ball(rng, 0.65)))
        tumour = shapes.blob(centre, rng.uniform(7, 22) * rng.uniform(0.8, 1.2, size=3),
                             rotation_matrix(*rng.uniform(-90, 90, 3)), deform=0.12)
        canvas.paint(tumour, hu["liver"] - rng.uniform(30, 55), A["liver_tumor"], within_codes=liver,
                     fine_texture=5.0)


def _paint_spleen(canvas: Canvas, shapes: ShapeFactory, hu: dict, rng: np.random.Generator,
                  texture: float = 3.0) -> None:
    # Left upper quadrant, long axis turned to lie along the posterolateral abdominal wall.
    spleen = shapes.blob((rng.uniform(66, 76), rng.uniform(18, 30), rng.uniform(38, 50)),
                         (rng.uniform(24, 28), rng.uniform(48, 56), rng.uniform(42, 50)),
                         rotation_matrix(rng.uniform(-45, -30), rng.uniform(-8, 8)), deform=0.1)
    canvas.paint(spleen, hu["spleen"], A["spleen"], texture=texture, fine_texture=2.0)


def _paint_kidneys(canvas: Canvas, shapes: ShapeFactory, hu: dict, y_vertebra: float, case_index: int,
                   rng: np.random.Generator) -> None:
    kidneys = []
    for side in (-1, 1):  # right kidney (x < 0) sits lower, under the liver
        centre = (side * rng.uniform(58, 66), y_vertebra - rng.uniform(2, 8),
                  (-30.0 if side < 0 else -18.0) + rng.uniform(-6, 6))
        orientation = rotation_matrix(side * rng.uniform(25, 40), side * rng.uniform(-10, 0))
        kidney = shapes.blob(centre, (rng.uniform(23, 27), rng.uniform(19, 23), rng.uniform(44, 52)), orientation,
                             deform=0.07)
        canvas.paint(kidney, hu["kidney_cortex"], A["kidney"], fine_texture=4.0)
        canvas.paint(kidney, hu["kidney_medulla"], A["kidney"], max_rho=0.62, within_codes=[A["kidney"]],
                     fine_texture=6.0)
        # Renal sinus fat at the medial hilum gives the bean shape; it is not kidney.
        sinus = shapes.blob(shapes.canonical(kidney.point((-side * 0.75, 0.0, 0.0))), (9, 9, 18), orientation,
                            deform=0.1)
        canvas.paint(sinus, hu["visceral_fat"], A["fat"], within_codes=[A["kidney"]], texture=5.0)
        kidneys.append(kidney)
    for _ in range(_tumour_count(case_index, rng, p_any=0.6, max_count=2)):
        kidney = kidneys[int(rng.integers(0, 2))]
        centre = shapes.canonical(kidney.point(_random_point_in_ball(rng, 0.6)))
        tumour = shapes.blob(centre, rng.uniform(8, 18) * rng.uniform(0.85, 1.15, size=3),
                             rotation_matrix(*rng.uniform(-90, 90, 3)), deform=0.12)
        canvas.paint(tumour, hu["kidney_cortex"] - rng.uniform(50, 85), A["kidney_tumor"],
                     within_codes=[A["kidney"]], fine_texture=8.0)


# ----------------------------------------------------------------------------------------------- one case
@dataclass(frozen=True)
class PhantomCase:
    case_id: str
    image: np.ndarray  # int16 HU (z, y, x)
    anatomy: np.ndarray  # uint8 (z, y, x), codes of ANATOMY_CODES: every structure, labelled or not
    labels: np.ndarray  # uint8 (z, y, x), this dataset's partial label map
    geometry: ImageGeometry


def case_rng(seed: int, spec: PhantomDatasetSpec, case_index: int) -> np.random.Generator:
    """Each case owns its random stream, so cases can be generated in any order, in parallel or resumed."""
    return np.random.default_rng([int(seed), spec.dataset_id, int(case_index)])


def generate_case(spec: PhantomDatasetSpec, case_index: int, size: str = "default", seed: int = 0) -> PhantomCase:
    """One synthetic patient sampled on this dataset's scanner grid: image, full anatomy and partial labels."""
    if size not in SIZES:
        raise UserError(f"phantom size '{size}': unknown (choose from {', '.join(SIZES)})")
    rng = case_rng(spec.fixed_seed if spec.fixed_seed is not None else seed, spec, case_index)
    geometry, grid = case_geometry(spec, size, rng)
    spacing = np.array(geometry.spacing)
    # Textures live in mm so organs look alike at both sizes; at least a fraction of a voxel to stay smooth.
    texture = smooth_noise(grid.shape, np.maximum(6.0 / spacing, 0.5), rng)
    fine_texture = smooth_noise(grid.shape, np.maximum(2.0 / spacing, 0.5), rng)
    shapes = ShapeFactory(rng, patient_yaw_deg=rng.uniform(-5, 5))
    hu = _tissue_hu(spec, rng)
    canvas = Canvas(grid, texture, fine_texture, background=hu["air"])

    body = _paint_body(canvas, shapes, hu, rng)
    y_vertebra = _paint_back_muscles(canvas, shapes, hu, body, rng)
    _paint_bowel_and_stomach(canvas, shapes, hu, rng)
    _paint_pancreas_and_vessels(canvas, shapes, hu, y_vertebra, rng)
    _paint_liver(canvas, shapes, hu, case_index, rng)
    _paint_spleen(canvas, shapes, hu, rng, texture=SPLEEN_TEXTURE_HU.get(spec.phase, 3.0))
    _paint_kidneys(canvas, shapes, hu, y_vertebra, case_index, rng)
    _paint_bones(canvas, shapes, hu, body, y_vertebra, rng)

    noise = spec.noise_std * rng.uniform(0.85, 1.15)
    image = _acquire(canvas.hu, noise, rng) if spec.modality == "CT" else _acquire_mr(canvas.hu, noise, spacing, rng)
    return PhantomCase(case_id=spec.case_id(case_index), image=image, anatomy=canvas.code,
                       labels=spec.labels_from_anatomy(canvas.code, grid.x), geometry=geometry)


def _acquire(clean_hu: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    """Scanner model: slight blur (partial volume), spatially correlated Gaussian noise, int16 HU."""
    blurred = gaussian_filter(clean_hu, sigma=(0.35, 0.5, 0.5), mode="nearest")
    noisy = blurred + noise_std * smooth_noise(clean_hu.shape, (0.3, 0.6, 0.6), rng)
    return np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)


def _acquire_mr(clean: np.ndarray, noise_std: float, spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """MR model: blur, a smooth multiplicative coil bias field (+-15% over ~10 cm), Rician noise, int16 >= 0."""
    blurred = gaussian_filter(clean, sigma=(0.35, 0.5, 0.5), mode="nearest")
    bias = 1.0 + 0.15 * smooth_noise(clean.shape, np.maximum(100.0 / spacing, 1.0), rng)
    real = blurred * bias + noise_std * rng.standard_normal(clean.shape, dtype=np.float32)
    imaginary = noise_std * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.clip(np.rint(np.sqrt(real * real + imaginary * imaginary)), 0, 4095).astype(np.int16)


# ----------------------------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class _CaseJob:
    spec_index: int
    case_index: int
    test: bool
    size: str
    seed: int
    folder: str
    variant: str = ""


def _case_files(spec: PhantomDatasetSpec, job: _CaseJob) -> tuple[Path, Path | None]:
    folder = Path(job.folder)
    case_id = spec.case_id(job.case_index)
    images = folder / ("imagesTs" if job.test else "imagesTr")
    image = images / f"{case_id}_0000{FILE_ENDING}"
    if job.test and not spec.labelled_test:
        return image, None
    return image, folder / ("labelsTs" if job.test else "labelsTr") / f"{case_id}{FILE_ENDING}"


def dataset_specs(variant: str = "") -> tuple[PhantomDatasetSpec, ...]:
    """The four dataset specs, as the demo has them or changed by a variant of the generalization matrix."""
    if not variant:
        return PHANTOM_DATASETS + EXTRA_PHANTOM_DATASETS
    from textnnunet.demo.phantom_variants import variant_specs

    return variant_specs(variant)


def _write_case(job: _CaseJob) -> str:
    spec = dataset_specs(job.variant)[job.spec_index]
    image_file, label_file = _case_files(spec, job)
    if image_file.exists() and (label_file is None or label_file.exists()):
        return "skipped"  # finished by an earlier, interrupted run (files are written atomically)
    case = generate_case(spec, job.case_index, job.size, job.seed)
    image, labels, geometry = stored_in_orientation(case, spec.orientation)
    if label_file is not None:
        write_image(labels, geometry, label_file)
    write_image(image, geometry, image_file)  # image last: its presence marks the case done
    return "written"


def stored_in_orientation(case: "PhantomCase", code: str) -> tuple[np.ndarray, np.ndarray, ImageGeometry]:
    """Image and labels re-stored with another axis order/direction (a DICOM code such as "RAS" or "RSA", the
    latter a coronal stack); the same voxels in the same physical place, as a scanner exporting otherwise."""
    if not code:
        return case.image, case.labels, case.geometry
    import SimpleITK as sitk

    from textnnunet.imageio.sitk_io import array_to_sitk, geometry_of

    image = sitk.DICOMOrient(array_to_sitk(case.image, case.geometry), code)
    labels = sitk.DICOMOrient(array_to_sitk(case.labels, case.geometry), code)
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels), geometry_of(image)


def dataset_json(spec: PhantomDatasetSpec, size: str, seed: int, variant: str = "") -> dict:
    meta = {
        "channel_names": {"0": spec.modality},
        "labels": spec.labels,
        "numTraining": spec.num_training[size],
        "file_ending": FILE_ENDING,
        "name": spec.name.split("_", 1)[1],
        "description": spec.description,
        "reference": "textnnunet synthetic phantom generator (textnnunet.demo.phantoms)",
        "licence": "CC0 (synthetic data)",
        "synonyms": spec.synonyms,
        "textnnunet_phantom": {"generator_version": GENERATOR_VERSION, "size": size, "seed": int(seed)},
    }
    if variant:
        meta["textnnunet_phantom"]["variant"] = variant
    if spec.fixed_seed is not None:
        meta["textnnunet_phantom"]["sealed"] = True  # the sealed test set: report, never tune on it
        meta["textnnunet_phantom"]["phase"] = spec.phase
    if spec.regions_class_order is not None:
        meta["regions_class_order"] = list(spec.regions_class_order)
    return meta


def _recorded_settings(folder: Path) -> dict | None:
    """The generator settings a finished dataset's dataset.json records (None: no finished phantom dataset here)."""
    meta = folder / "dataset.json"
    if not meta.is_file():
        return None
    recorded = load_json(meta).get("textnnunet_phantom")
    return recorded if isinstance(recorded, dict) else None


def _already_generated(raw_root: Path, spec: PhantomDatasetSpec, marker: dict) -> bool:
    """True when the folder holds this dataset, finished, made with these settings (deterministic: nothing to redo)."""
    recorded = _recorded_settings(raw_root / spec.name)
    return recorded is not None and {k: recorded.get(k) for k in marker} == marker


def _check_folder(raw_root: Path, spec: PhantomDatasetSpec, marker: dict, overwrite: bool) -> None:
    """Refuse to clobber a finished dataset or someone else's folder; an unfinished generation may resume."""
    check_dataset_id_free(raw_root, spec.name, spec.dataset_id, f"move it away to generate {spec.name}")
    if overwrite:
        return
    recorded = _recorded_settings(raw_root / spec.name)
    if recorded is not None:
        raise UserError(f"{raw_root / spec.name}: dataset already exists, generated with other settings ({recorded}); "
                        f"pass --overwrite to replace it")
    check_resumable(raw_root / spec.name, IN_PROGRESS_MARKER, marker, "the phantom generator", "generation")


def _prepare_folder(raw_root: Path, spec: PhantomDatasetSpec, marker: dict, overwrite: bool) -> Path:
    folder = raw_root / spec.name
    if overwrite and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / IN_PROGRESS_MARKER, marker)
    return folder


def generate_phantom_datasets(raw_root: Path, size: str = "default", seed: int = 0, overwrite: bool = False,
                              num_processes: int = 1, progress: bool = False,
                              datasets: Iterable[int] | None = None, variant: str = "") -> list[Path]:
    """Write the phantom datasets (all four unless `datasets` lists ids) into `raw_root`; returns their folders.

    `variant` names a row of the generalization matrix (textnnunet.demo.phantom_variants: other spacings,
    fields of view, orientations, contrast phase, noise); its spacings are absolute, so `size` is ignored.
    Deterministic for (size, seed, variant). dataset.json is written last, so a folder without it is an unfinished run
    that a second call with the same settings resumes; a finished one with the same settings is kept as it is, one
    with other settings is refused unless `overwrite`.
    """
    if size not in SIZES:
        raise UserError(f"phantom size '{size}': unknown (choose from {', '.join(SIZES)})")
    if int(seed) < 0:
        raise UserError(f"seed {seed}: must be a non-negative integer")
    raw_root = Path(raw_root)
    raw_root.mkdir(parents=True, exist_ok=True)
    specs = dataset_specs(variant)
    if variant:
        size = "full"  # a variant's spacings are absolute
    if datasets is None:  # the demo's four
        wanted = {s.dataset_id for s in PHANTOM_DATASETS}
    else:
        wanted = {phantom_spec(d).dataset_id for d in datasets}
    chosen = [(i, s) for i, s in enumerate(specs) if s.dataset_id in wanted]
    missing = sorted(wanted - {s.dataset_id for _, s in chosen})
    if missing:
        raise UserError(f"phantom variant '{variant}': has no dataset {', '.join(map(str, missing))}")

    def marker_of(spec: PhantomDatasetSpec) -> dict:
        marker = {"generator_version": GENERATOR_VERSION, "size": size, "seed": _seed_of(spec, seed)}
        if variant:
            marker["variant"] = variant
        return marker

    # A finished dataset with the same settings is kept as it is (re-running a command resumes, as nnU-Net's do).
    todo = [(i, s) for i, s in chosen if overwrite or not _already_generated(raw_root, s, marker_of(s))]
    for _, spec in todo:  # check every folder before touching any
        _check_folder(raw_root, spec, marker_of(spec), overwrite)
    folders, jobs = [], []
    for spec_index, spec in todo:
        folder = _prepare_folder(raw_root, spec, marker_of(spec), overwrite)
        folders.append(folder)
        n_train, n_test = spec.num_training[size], spec.num_test[size]
        jobs += [_CaseJob(spec_index, i, False, size, int(seed), str(folder), variant) for i in range(n_train)]
        jobs += [_CaseJob(spec_index, i, True, size, int(seed), str(folder), variant)
                 for i in range(n_train, n_train + n_test)]
    _run_jobs(jobs, num_processes, progress)
    for (_, spec), folder in zip(todo, folders):
        atomic_write_json(folder / "dataset.json", dataset_json(spec, size, _seed_of(spec, seed), variant))
        (folder / IN_PROGRESS_MARKER).unlink()
    return [raw_root / spec.name for _, spec in chosen]


def _seed_of(spec: PhantomDatasetSpec, seed: int) -> int:
    """The seed a dataset is generated with: its own fixed seed (the sealed test set) or the caller's."""
    return int(spec.fixed_seed if spec.fixed_seed is not None else seed)


def _run_jobs(jobs: list[_CaseJob], num_processes: int, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="phantom cases", unit="case", disable=not progress)
    if num_processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            _write_case(job)
            bar.update()
    else:
        # spawn: workers must not inherit the parent's threads (torch, tqdm's monitor) through fork.
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_write_case, jobs):
                bar.update()
    bar.close()
