import os
from pathlib import Path

import pytest

# Tests never touch the network or a user's folders.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REAL_CT = Path(__file__).resolve().parents[2] / "shared" / "realct"


@pytest.fixture
def real_ct_folder() -> Path:
    if not REAL_CT.is_dir():
        pytest.skip("../shared/realct is not available")
    return REAL_CT
