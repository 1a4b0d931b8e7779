"""The generalization matrix: the four phantom datasets changed the way real data differs from the demo's.

The demo's phantoms sit at about 4.5 mm, the spacing the cpu planning preset was first tuned on. Each variant
here keeps the same synthetic anatomy (millimetres in the patient frame) and changes how it is acquired and
stored: clinical in-plane spacing (0.7-0.9 mm, 280-430 voxels) with 1.25-5 mm slices, a field of view that cuts
organs, other storage orientations (a coronal stack among them), another contrast phase with more noise.
Spacings are absolute (the generator's `size` does not apply). A variant used to check a default is a
development set (documentation/results.md says which were looked at).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from textnnunet.errors import UserError


@dataclass(frozen=True)
class PhantomVariant:
    name: str
    description: str
    # dataset id -> PhantomDatasetSpec fields to replace (spacing is (z, y, x) mm, fov_mm (z extent, in-plane extent))
    overrides: dict[int, dict]
    num_test: int = 3  # fewer test cases than the demo's six: clinical-size volumes are slow to predict on 2 cores


def _same_for_all(**fields) -> dict[int, dict]:
    return {i: dict(fields) for i in (1, 2, 3, 4)}


def _merge(*parts: dict[int, dict]) -> dict[int, dict]:
    out: dict[int, dict] = {i: {} for i in (1, 2, 3, 4)}
    for part in parts:
        for i, fields in part.items():
            out[i].update(fields)
    return out


# Clinical spacings per dataset: thin-slice liver CT, thick-slice spleen CT, kidney CT in between.
_CLINICAL_SPACING = {1: {"spacing": (1.25, 0.78, 0.78)}, 2: {"spacing": (5.0, 0.7, 0.7)},
                     3: {"spacing": (3.0, 0.9, 0.9)}, 4: {"spacing": (2.0, 0.8, 0.8)}}
_NEAR_CLINICAL_SPACING = {1: {"spacing": (2.0, 0.9, 0.9)}, 2: {"spacing": (5.0, 0.8, 0.8)},
                          3: {"spacing": (3.0, 1.0, 1.0)}, 4: {"spacing": (2.5, 0.95, 0.95)}}

VARIANTS: dict[str, PhantomVariant] = {v.name: v for v in (
    PhantomVariant(
        "clinical", "in-plane 0.7-0.9 mm (280-430 voxels), slices 1.25 / 5 / 3 / 2 mm, the demo's fields of view",
        _CLINICAL_SPACING),
    PhantomVariant(
        "partial_fov", "fields of view that cut organs: 110-125 mm along z centred off the organs (liver dome, kidney "
        "poles, spleen tip outside), 200-230 mm in-plane (the body's flanks outside); 0.8-1 mm in-plane",
        _merge(_NEAR_CLINICAL_SPACING,
               {1: {"fov_mm": (120.0, 220.0), "z_centre_mm": 45.0}, 2: {"fov_mm": (125.0, 230.0), "z_centre_mm": 10.0},
                3: {"fov_mm": (110.0, 200.0), "z_centre_mm": -35.0}, 4: {"fov_mm": (120.0, 215.0), "z_centre_mm": 0.0}})),
    PhantomVariant(
        "orientation", "files stored RAS, as a coronal stack (RSA), LPI and RAI (same anatomy, other axis order and "
        "directions); 0.8-1 mm in-plane",
        _merge(_NEAR_CLINICAL_SPACING,
               {1: {"orientation": "RAS"}, 2: {"orientation": "RSA"}, 3: {"orientation": "LPI"},
                4: {"orientation": "RAI"}})),
    PhantomVariant(
        "noncontrast_noisy", "unenhanced CT (renal cortex 35 HU, spleen 45, liver 55: organs within ~25 HU of each "
        "other) at 2.5x the noise (low dose); 0.8-1 mm in-plane",
        _merge(_NEAR_CLINICAL_SPACING, _same_for_all(phase="noncontrast"),
               {1: {"noise_std": 30.0}, 2: {"noise_std": 50.0}, 3: {"noise_std": 37.5}, 4: {"noise_std": 35.0}})),
    # noncontrast_noisy keeps each dataset's enhancement offset (-12..+15 HU on the organs), which on unenhanced
    # scans stands for scanner/kVp differences; there it swaps the order of spleen and kidney HU between the spleen
    # dataset, the kidney dataset and the test set. This row has the datasets agree on HU, as unenhanced scans of
    # one protocol would.
    PhantomVariant(
        "noncontrast_uniform", "noncontrast_noisy with no per-dataset HU offset (every dataset the same unenhanced "
        "attenuation)",
        _merge(_NEAR_CLINICAL_SPACING, _same_for_all(phase="noncontrast", enhancement_hu=0.0),
               {1: {"noise_std": 30.0}, 2: {"noise_std": 50.0}, 3: {"noise_std": 37.5}, 4: {"noise_std": 35.0}})),
)}


def variant_specs(name: str):
    """The PhantomDatasetSpec of variant `name`: its four datasets (training counts as the demo's, `num_test` test
    cases) and the matrix's sealed test set, stored as the variant stores Dataset004."""
    from textnnunet.demo.phantoms import MATRIX_SEALED_TEST_DATASET, PHANTOM_DATASETS

    if name not in VARIANTS:
        raise UserError(f"phantom variant '{name}': unknown (choose from {', '.join(VARIANTS)})")
    variant = VARIANTS[name]
    specs = []
    for spec in (*PHANTOM_DATASETS, MATRIX_SEALED_TEST_DATASET):
        acquired_as = 4 if spec is MATRIX_SEALED_TEST_DATASET else spec.dataset_id
        fields = dict(variant.overrides.get(acquired_as, {}))
        fields["num_training"] = {"full": spec.num_training["default"]}
        fields["num_test"] = {"full": variant.num_test}
        fields["description"] = f"{spec.description} Variant '{name}': {variant.description}."
        specs.append(dataclasses.replace(spec, **fields))
    return tuple(specs)
