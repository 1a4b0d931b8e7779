"""The reference a prediction is judged against: the raw label file, or the cached label mapped back to it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from textnnunet.dataset.description import load_dataset
from textnnunet.imageio.sitk_io import read_label
from textnnunet.preprocessing.preprocessor import restore_to_original


def reference_label_map(raw_root: Path | None, dataset: str, case_id: str, seg: np.ndarray, properties: dict
                        ) -> np.ndarray:
    """The raw label file when the raw data is at hand (the honest reference), else the cached label mapped back."""
    if raw_root is not None:
        try:
            desc = load_dataset(raw_root, dataset)
            path = desc.folder / "labelsTr" / f"{case_id}{desc.file_ending}"
            if path.is_file():
                return read_label(path)[0]
        except Exception:  # noqa: BLE001 - fall back to the cache, which is what training saw
            pass
    values = np.unique(seg)
    onehot = np.stack([(seg[0] == v).astype(np.float32) for v in values])
    restored = restore_to_original(onehot, properties)
    return values[np.argmax(restored, axis=0)].astype(np.int16)
