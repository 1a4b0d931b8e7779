"""Moved to textnnunet.postprocessing (its own stage); this name stays until inference/run.py imports from there."""
from textnnunet.postprocessing.rules import postprocess_masks, skipped_constraints  # noqa: F401
