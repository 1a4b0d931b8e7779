"""nnU-Net-style patch sampling across several partially labelled datasets.

For each batch item: pick a dataset by weight, a case uniformly within it, then a patch location.
The last items of a batch (nnU-Net's rule: item i is forced if i >= round(B * (1 - p))) are centred
on a foreground voxel of a random annotated class present in the case; the others are random.
Targets are the K classes of the plan's union vocabulary: a class the case's dataset annotates is
`np.isin(seg, its label values)` (so regions work: "liver" includes the tumour), any other class is
all zeros and marked not annotated - unless the plan's label hierarchy says more (DatasetKnowledge): a class
whose sides the dataset labels is their union (annotated), and the batch's `known_outside_of` /
`known_where_positive` tell the loss which voxels of other unannotated classes are known.

Patches are drawn at the *initial* patch size (larger than the network patch when spatial
augmentation will crop it back). Only `rng` drives randomness, so a sampler is reproducible from
its seed and resumable from `state()`.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd

from textnnunet.errors import UserError
from textnnunet.training.unpacking import load_unpacked
from textnnunet.utils.files import load_json
from textnnunet.utils.plans import Plans

WEIGHTING_MODES = ("uniform", "sqrt", "proportional")


class CaseRef(NamedTuple):
    dataset: str
    case_id: str
    npz_path: Path
    json_path: Path


def list_case_refs(dataset_folder: str | Path, case_ids: Iterable[str] | None = None) -> list[CaseRef]:
    """CaseRefs for the finished cases (the .json exists) in preprocessed/<plans>/<config>/<Dataset>/.

    `case_ids` restricts (and orders) the selection, e.g. to a fold's training cases; a requested
    case that is missing raises UserError.
    """
    folder = Path(dataset_folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: preprocessed dataset folder not found (run preprocessing first)")
    if case_ids is None:
        case_ids = sorted(p.stem for p in folder.glob("*.json"))
    refs = []
    for case_id in case_ids:
        npz, js = folder / f"{case_id}.npz", folder / f"{case_id}.json"
        if not (npz.is_file() and js.is_file()):
            raise UserError(f"{folder}: preprocessed case '{case_id}' is missing or unfinished")
        refs.append(CaseRef(folder.name, case_id, npz, js))
    return refs


def dataset_sampling_weights(case_counts: Mapping[str, int], mode: str = "uniform",
                             multipliers: Mapping[str, float] | None = None) -> dict[str, float]:
    """Probability of drawing each dataset: equal ("uniform"), ~sqrt(n) or ~n ("proportional"), each times its
    multiplier (`multipliers`: dataset name or number -> factor, 1 for datasets not named)."""
    if mode not in WEIGHTING_MODES:
        raise UserError(f"dataset_weighting '{mode}': unknown (choose from {', '.join(WEIGHTING_MODES)})")
    counts = {ds: int(n) for ds, n in case_counts.items() if int(n) > 0}
    if not counts:
        raise UserError("dataset sampling: no dataset has any training case")
    factors = resolve_dataset_multipliers(multipliers or {}, list(case_counts))
    raw = {
        ds: (1.0 if mode == "uniform" else (math.sqrt(n) if mode == "sqrt" else float(n))) * factors.get(ds, 1.0)
        for ds, n in counts.items()
    }
    total = sum(raw.values())
    return {ds: raw.get(ds, 0.0) / total for ds in case_counts}


def resolve_dataset_multipliers(multipliers: Mapping[str, float], datasets: Sequence[str]) -> dict[str, float]:
    """{dataset name: factor} from keys that are names ("Dataset012_SpleenKidneyT2") or numbers ("12")."""
    resolved: dict[str, float] = {}
    for key, factor in multipliers.items():
        key = str(key).strip()
        matches = [d for d in datasets if d == key or (key.isdigit() and d[7:10].isdigit() and int(d[7:10]) == int(key))]
        if not matches:
            raise UserError(f"dataset weight '{key}': not a training dataset of this plan ({', '.join(datasets)})")
        try:
            value = float(factor)
        except (TypeError, ValueError):
            raise UserError(f"dataset weight '{key}': {factor!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise UserError(f"dataset weight '{key}': {factor!r} must be a positive number")
        resolved[matches[0]] = value
    return resolved


class _DatasetOnly(NamedTuple):
    """What `_targets` reads of a case: its dataset."""
    dataset: str


class _CaseArrays(NamedTuple):
    data: np.ndarray  # (C, Z, Y, X) float32
    seg: np.ndarray  # (Z, Y, X) int
    pad_values: np.ndarray  # (C,) what lies beyond the image: each channel's minimum (air, not tissue)


def crop_and_pad_channels(data: np.ndarray, bbox: list[list[int]], pad_values: np.ndarray) -> np.ndarray:
    """crop_and_pad_nd per channel, padding each channel with its own value.

    Zero, nnU-Net's padding, is the foreground mean after CT normalisation: a slab of liver-like intensity
    beyond the image edge. The channel minimum (air / the lower clip) is what the edge of a scan looks like.
    The sliding window pads the same way (inference.sliding_window.pad_with_channel_minimum).
    """
    return np.stack([crop_and_pad_nd(data[c], bbox, pad_value=float(pad_values[c])) for c in range(data.shape[0])])


class PatchSampler:
    """Draws training batches (before augmentation) per the batch contract.

    cases: the training cases of every dataset. plans: the plan (`Plans`, or its JSON dict; its `label_space`).
    configuration: one of the plan's configurations; its patch size decides 2D (2 values) or 3D.
    patch_size / batch_size: default to the configuration's. initial_patch_size: the larger patch
    the augmentation needs (see AugmentationConfig.initial_patch_size); default = patch_size.
    cache_size: how many decompressed cases to keep in memory (LRU); 0 disables caching.
    use_unpacked: read cases that training.unpacking has unpacked as memory-mapped .npy (a crop reads only its
        pages) instead of decompressing the npz; cases not unpacked (or stale) are read from the npz. Same batches.
    defer_targets: batches carry the label map as "seg" (B, 1, ...) instead of "target" (B, K, ...); the training
        transforms build the targets after their spatial transform (`targets_for`, augmentation.TargetsFromLabelMap),
        so that transform moves one channel whatever K. The same batches.
    use_hierarchy: derive targets and voxel-wise knowledge from label_space.hierarchy (DatasetKnowledge).
    use_exclusion: with the hierarchy, voxels a dataset labels as a structure are known negatives of every class
        that is neither that structure's ancestor nor its part (distinct organs do not overlap).
    max_excluded_classes: an item whose dataset excludes more classes than this gets a random subset of them (drawn
        per item), so that exclusion does not make every step compute all K heads (at K = 117, 4.7x the softmax
        step). Draws no random number when the cap is not reached (the demo's five classes never reach it).
    """

    def __init__(
        self,
        cases: Sequence[CaseRef],
        plans: Plans | Mapping,
        configuration: str,
        batch_size: int | None = None,
        patch_size: Sequence[int] | None = None,
        oversample_foreground_percent: float = 0.33,
        dataset_weighting: str = "uniform",
        dataset_weights: Mapping[str, float] | None = None,
        rng: np.random.Generator | None = None,
        initial_patch_size: Sequence[int] | None = None,
        cache_size: int = 8,
        use_hierarchy: bool = True,
        use_exclusion: bool = False,
        max_excluded_classes: int = 8,
        use_unpacked: bool = False,
        defer_targets: bool = False,
    ):
        plans = Plans.of(plans)
        if not plans.has_configuration(configuration):
            raise UserError(f"plans '{plans.display_name}': no configuration '{configuration}'")
        config = plans.configuration(configuration)
        self.patch_size = tuple(int(p) for p in (patch_size if patch_size is not None else config.patch_size))
        self.batch_size = int(batch_size if batch_size is not None else config.batch_size)
        self.initial_patch_size = tuple(
            int(p) for p in (initial_patch_size if initial_patch_size is not None else self.patch_size)
        )
        self._validate_sizes(oversample_foreground_percent)
        self.oversample_foreground_percent = float(oversample_foreground_percent)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.cache_size = int(cache_size)
        self.use_unpacked = bool(use_unpacked)
        self.defer_targets = bool(defer_targets)

        self.class_names, self.class_values = _parse_label_space(plans)
        hierarchy = plans.label_space.hierarchy if use_hierarchy else {}
        # Exclusion needs the hierarchy (plans made with the lexicon carry one, possibly empty): without it "kidney"
        # would exclude "left kidney".
        has_hierarchy = use_hierarchy and plans.label_space.has_hierarchy
        self.knowledge = hierarchy_knowledge(self.class_names, self.class_values, hierarchy,
                                             exclusion=use_exclusion and has_hierarchy)
        self.max_excluded_classes = int(max_excluded_classes)
        self.cases_by_dataset = _group_cases(cases, self.class_values)
        self.datasets = sorted(self.cases_by_dataset)
        weights = dataset_sampling_weights({ds: len(c) for ds, c in self.cases_by_dataset.items()}, dataset_weighting,
                                           dataset_weights)
        self.dataset_probabilities = np.array([weights[ds] for ds in self.datasets])
        self._cache: OrderedDict[Path, _CaseArrays] = OrderedDict()
        self._locations: dict[Path, dict[str, np.ndarray]] = {}

    # ---------------------------------------------------------------- configuration checks
    def _validate_sizes(self, oversample: float) -> None:
        if len(self.patch_size) not in (2, 3):
            raise UserError(f"patch size {list(self.patch_size)}: must have 2 (2d) or 3 (3d) entries")
        if len(self.initial_patch_size) != len(self.patch_size) or any(
            i < p for i, p in zip(self.initial_patch_size, self.patch_size)
        ):
            raise UserError(
                f"initial patch size {list(self.initial_patch_size)}: must be >= patch size {list(self.patch_size)}"
            )
        if self.batch_size < 1:
            raise UserError(f"batch size {self.batch_size}: must be at least 1")
        if not 0.0 <= oversample <= 1.0:
            raise UserError(f"oversample_foreground_percent {oversample}: must lie in [0, 1]")

    @property
    def is_2d(self) -> bool:
        return len(self.patch_size) == 2

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ---------------------------------------------------------------- resumability
    def state(self) -> dict:
        """The random state; with `set_state` training resumes with exactly the same batches."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def reseed(self, seed: int | Sequence[int]) -> None:
        """Replace the generator (background workers each get their own stream)."""
        self.rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------- loading
    def _load(self, case: CaseRef) -> _CaseArrays:
        cached = self._cache.get(case.npz_path)
        if cached is not None:
            self._cache.move_to_end(case.npz_path)
            return cached
        arrays = _load_case_arrays(case, self.use_unpacked)
        if self.cache_size > 0:
            self._cache[case.npz_path] = arrays
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return arrays

    def _class_locations(self, case: CaseRef) -> dict[str, np.ndarray]:
        """Foreground voxels per annotated class of the case's dataset (small: kept for all cases)."""
        if case.json_path not in self._locations:
            props = load_json(case.json_path)
            raw = props.get("class_locations", {}) or {}
            locs = {}
            for name in self.class_values[case.dataset]:
                arr = np.asarray(raw.get(name, []), dtype=np.int64).reshape(-1, 3)
                if len(arr):
                    locs[name] = arr
            self._locations[case.json_path] = locs
        return self._locations[case.json_path]

    # ---------------------------------------------------------------- sampling
    def _is_forced_foreground(self, index: int) -> bool:
        return index >= round(self.batch_size * (1.0 - self.oversample_foreground_percent))

    def _choose_case(self) -> CaseRef:
        ds = self.datasets[int(self.rng.choice(len(self.datasets), p=self.dataset_probabilities))]
        cases = self.cases_by_dataset[ds]
        return cases[int(self.rng.integers(len(cases)))]

    def _choose_foreground_voxel(self, case: CaseRef) -> np.ndarray | None:
        locations = self._class_locations(case)
        if not locations:
            return None  # nothing annotated in this case: nnU-Net falls back to a random patch
        names = sorted(locations)
        voxels = locations[names[int(self.rng.integers(len(names)))]]
        return voxels[int(self.rng.integers(len(voxels)))]

    def _patch_start(self, shape: Sequence[int], centre: Sequence[int] | None) -> list[int]:
        """Lower corner of the patch along each axis of `shape` (nnU-Net's bounds).

        The patch may extend beyond the image by half the augmentation margin (initial - final patch),
        or further where the image is smaller than the patch. A foreground centre is clamped into the
        same bounds, which still keeps the voxel inside the patch.
        """
        patch, final = self.initial_patch_size[-len(shape):], self.patch_size[-len(shape):]
        starts = []
        for d, size in enumerate(shape):
            need = max(patch[d] - final[d], patch[d] - size)
            low = -(need // 2)
            high = size + need // 2 + need % 2 - patch[d]
            if centre is None:
                starts.append(int(self.rng.integers(low, high + 1)))
            else:
                starts.append(int(min(high, max(low, int(centre[d]) - patch[d] // 2))))
        return starts

    def _targets(self, case: CaseRef, seg_patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        target = np.zeros((self.num_classes, *seg_patch.shape), dtype=np.float32)
        annotated = np.zeros(self.num_classes, dtype=bool)
        for name, values in self.class_values[case.dataset].items():
            k = self.class_names.index(name)
            target[k] = np.isin(seg_patch, values)
            annotated[k] = True
        knowledge = self.knowledge.get(case.dataset)
        if knowledge is not None:
            knowledge.derive_targets(target, annotated)
        return target, annotated

    def sample_item(self, case: CaseRef, force_foreground: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(data (C, *patch), target (K, *patch), annotated (K,)) for one case."""
        arrays = self._load(case)
        voxel = self._choose_foreground_voxel(case) if force_foreground else None
        if self.is_2d:
            z = int(voxel[0]) if voxel is not None else int(self.rng.integers(arrays.data.shape[1]))
            data_img, seg_img = arrays.data[:, z], arrays.seg[z]
            centre = voxel[1:] if voxel is not None else None
        else:
            data_img, seg_img = arrays.data, arrays.seg
            centre = voxel
        start = self._patch_start(seg_img.shape, centre)
        bbox = [[s, s + p] for s, p in zip(start, self.initial_patch_size)]
        data = crop_and_pad_channels(data_img, bbox, arrays.pad_values)
        seg = crop_and_pad_nd(seg_img, bbox, pad_value=0)
        if self.defer_targets:  # the label map now, the targets after the spatial augmentation
            return data.astype(np.float32, copy=False), seg[None], self._annotated(case)
        target, annotated = self._targets(case, seg)
        return data.astype(np.float32, copy=False), target, annotated

    def _annotated(self, case: CaseRef) -> np.ndarray:
        """The (K,) annotated flags `_targets` gives this case's dataset (they do not depend on the voxels)."""
        return self._targets(case, np.zeros((1,) * (len(self.patch_size)), dtype=np.int16))[1]

    def targets_for(self, datasets: Sequence[str], seg: np.ndarray) -> np.ndarray:
        """Class targets (B, K, ...) float32 of a batch of label maps (B, 1, ...) from the datasets named."""
        return np.stack([self._targets(_DatasetOnly(ds), item[0])[0] for ds, item in zip(datasets, seg)])

    def next_batch(self) -> dict:
        """{"data" (B, C, *patch) float32, "target" (B, K, *patch) float32, "annotated" (B, K) bool, "keys"}; with
        defer_targets "seg" (B, 1, *patch), the label map, in place of "target"."""
        data, target, annotated, keys = [], [], [], []
        for i in range(self.batch_size):
            case = self._choose_case()
            d, t, a = self.sample_item(case, self._is_forced_foreground(i))
            data.append(d)
            target.append(t)
            annotated.append(a)
            keys.append((case.dataset, case.case_id))
        batch = {"data": np.stack(data), "target": np.stack(target), "annotated": np.stack(annotated), "keys": keys}
        if self.defer_targets:
            batch["seg"] = batch.pop("target")
        if self.knowledge:  # the label hierarchy makes some unannotated pairs known voxel by voxel
            batch["known_outside_of"] = np.stack([self.knowledge[ds].outside_of if ds in self.knowledge
                                                  else np.full(self.num_classes, -1, np.int64) for ds, _ in keys])
            batch["known_where_positive"] = np.stack([self.knowledge[ds].where_positive if ds in self.knowledge
                                                      else np.zeros(self.num_classes, bool) for ds, _ in keys])
            batch["known_excluded_by"] = np.stack([self._excluded_for_item(ds) for ds, _ in keys])
        return batch

    def _excluded_for_item(self, dataset: str) -> np.ndarray:
        """(K, K) exclusion of one item: its dataset's, limited to `max_excluded_classes` random excluded classes."""
        if dataset not in self.knowledge:
            return np.zeros((self.num_classes,) * 2, bool)
        excluded = self.knowledge[dataset].excluded_by
        classes = np.flatnonzero(excluded.any(axis=1))
        if len(classes) <= self.max_excluded_classes:
            return excluded
        keep = self.rng.choice(classes, self.max_excluded_classes, replace=False)
        limited = np.zeros_like(excluded)
        limited[keep] = excluded[keep]
        return limited

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self.next_batch()


@dataclass
class DatasetKnowledge:
    """What the label hierarchy adds to one dataset's annotation (see loss.PartialAnnotation).

    union_of[k]      side children whose union is class k (the dataset labels all of them): k becomes annotated
    positives_of[k]  labelled parts of class k: its target is their union, known where positive
    outside_of       (K,) the labelled class containing class k (its nearest labelled ancestor), or -1
    where_positive   (K,) whether k's target holds derived positives
    excluded_by      (K, K) bool: [k, j] when class j is labelled here (or a derived union) and is neither k, an
                     ancestor nor a part of k: voxels of j are known negatives of k (exclusion)
    """

    union_of: dict[int, list[int]]
    positives_of: dict[int, list[int]]
    outside_of: np.ndarray
    where_positive: np.ndarray
    excluded_by: np.ndarray

    def derive_targets(self, target: np.ndarray, annotated: np.ndarray) -> None:
        """Fill the derived targets of one item in place (annotated: (K,) bool, target: (K, *patch))."""
        for k, children in self.union_of.items():
            target[k] = target[children].max(axis=0)
            annotated[k] = True
        for k, parts in self.positives_of.items():
            target[k] = target[parts].max(axis=0)


def hierarchy_knowledge(class_names: list[str], class_values: Mapping[str, Mapping[str, list[int]]],
                        hierarchy: Mapping[str, Mapping[str, str]], exclusion: bool = False
                        ) -> dict[str, DatasetKnowledge]:
    """Per dataset, the voxel-wise knowledge its labels give about the classes it does not label (only datasets
    where there is some)."""
    index = {name: k for k, name in enumerate(class_names)}
    parent = {c: link["parent"] for c, link in hierarchy.items() if c in index and link.get("parent") in index}
    side_children: dict[str, list[str]] = {}
    for child, link in hierarchy.items():
        if child in parent and link.get("relation") == "side":
            side_children.setdefault(link["parent"], []).append(child)
    result = {}
    for dataset, labelled in class_values.items():
        knowledge = _dataset_knowledge(class_names, set(labelled), parent, side_children, index, exclusion)
        if knowledge is not None:
            result[dataset] = knowledge
    return result


def _dataset_knowledge(class_names: list[str], labelled: set[str], parent: Mapping[str, str],
                       side_children: Mapping[str, list[str]], index: Mapping[str, int],
                       exclusion: bool = False) -> DatasetKnowledge | None:
    union_of = {index[cls]: [index[s] for s in sides] for cls, sides in side_children.items()
                if cls not in labelled and len(sides) >= 2 and all(s in labelled for s in sides)}
    known = labelled | {class_names[k] for k in union_of}  # a union is labelled everywhere, like a label
    positives_of = {}
    outside_of = np.full(len(class_names), -1, dtype=np.int64)
    where_positive = np.zeros(len(class_names), dtype=bool)
    for cls in class_names:
        if cls in known:
            continue
        k = index[cls]
        ancestor = _nearest_labelled_ancestor(cls, parent, known)
        if ancestor is not None:
            outside_of[k] = index[ancestor]
        parts = [c for c in labelled if _is_ancestor(cls, c, parent)]
        if parts:
            positives_of[k] = sorted(index[p] for p in parts)
            where_positive[k] = True
    excluded_by = np.zeros((len(class_names),) * 2, dtype=bool)
    if exclusion:
        for cls in class_names:
            if cls in known:
                continue
            for other in known:
                related = _is_ancestor(cls, other, parent) or _is_ancestor(other, cls, parent)
                excluded_by[index[cls], index[other]] = not related
    if not union_of and not positives_of and not (outside_of >= 0).any() and not excluded_by.any():
        return None
    return DatasetKnowledge(union_of, positives_of, outside_of, where_positive, excluded_by)


def _nearest_labelled_ancestor(cls: str, parent: Mapping[str, str], labelled: set[str]) -> str | None:
    seen = {cls}
    while cls in parent and parent[cls] not in seen:
        cls = parent[cls]
        if cls in labelled:
            return cls
        seen.add(cls)
    return None


def _is_ancestor(ancestor: str, cls: str, parent: Mapping[str, str]) -> bool:
    seen = {cls}
    while cls in parent and parent[cls] not in seen:
        cls = parent[cls]
        if cls == ancestor:
            return True
        seen.add(cls)
    return False


def _parse_label_space(plans: Plans | Mapping) -> tuple[list[str], dict[str, dict[str, list[int]]]]:
    """Class names in vocabulary order, and per dataset {annotated class: label values}."""
    plans = Plans.of(plans)
    name, label_space = plans.display_name, plans.label_space
    if not label_space.is_complete:
        raise UserError(f"plans '{name}': missing label_space.classes / label_space.datasets")
    class_names = label_space.class_names
    if len(set(class_names)) != len(class_names):
        raise UserError(f"plans '{name}': label_space.classes has duplicate names")
    class_values: dict[str, dict[str, list[int]]] = {}
    for ds, classes in label_space.datasets.items():
        for cls, values in classes.items():
            if cls not in class_names:
                raise UserError(f"plans '{name}': dataset {ds} annotates '{cls}', which is not in label_space.classes")
            if not values:
                raise UserError(f"plans '{name}': dataset {ds} class '{cls}' has no label values")
        class_values[ds] = {cls: [int(v) for v in values] for cls, values in classes.items()}
    return class_names, class_values


def _group_cases(cases: Sequence[CaseRef], class_values: Mapping[str, object]) -> dict[str, list[CaseRef]]:
    if len(cases) == 0:
        raise UserError("patch sampler: no training cases given")
    grouped: dict[str, list[CaseRef]] = {}
    for case in cases:
        if case.dataset not in class_values:
            raise UserError(f"case {case.case_id}: dataset '{case.dataset}' is not in the plans' label_space")
        grouped.setdefault(case.dataset, []).append(case)
    return grouped


def _load_case_arrays(case: CaseRef, use_unpacked: bool = False) -> _CaseArrays:
    unpacked = load_unpacked(case.npz_path) if use_unpacked else None
    if unpacked is not None:  # memory-mapped: the padding values come from the unpacking, not a read of every voxel
        data, seg, pad_values = unpacked
    else:
        try:
            with np.load(case.npz_path) as npz:
                if "seg" not in npz.files:
                    raise UserError(f"{case.npz_path}: no 'seg' array (a training case needs labels)")
                data, seg = npz["data"], npz["seg"]
        except (OSError, ValueError) as e:
            raise UserError(f"{case.npz_path}: cannot read preprocessed case ({e})") from None
        pad_values = None
    if data.ndim != 4 or seg.ndim != 4 or seg.shape[0] != 1 or data.shape[1:] != seg.shape[1:]:
        raise UserError(f"{case.npz_path}: expected data (c,z,y,x) and seg (1,z,y,x), got {data.shape}, {seg.shape}")
    data = data.astype(np.float32, copy=False)
    if pad_values is None:
        pad_values = data.reshape(data.shape[0], -1).min(axis=1)
    return _CaseArrays(data, seg[0], pad_values)
