"""Post-processing, its own stage as in nnU-Net: a probability threshold per class, then per-class rules on binary
masks (keep the largest component, keep a lesion inside its organ), stored in postprocessing.json.
textnnunet_find_best_configuration chooses the rules on validation (evaluation/best_configuration.py);
textnnunet_predict and textnnunet_ensemble apply them."""
from textnnunet.postprocessing.rules import (
    POSTPROCESSING_FILE,
    apply_postprocessing,
    class_thresholds,
    constrain_to,
    empty_rules,
    keep_largest_component,
    load_postprocessing,
    organ_of,
    organ_pairs,
    postprocess_masks,
    save_postprocessing,
    skipped_constraints,
    threshold_probabilities,
    validate_rules,
)

__all__ = [
    "POSTPROCESSING_FILE",
    "apply_postprocessing",
    "class_thresholds",
    "constrain_to",
    "empty_rules",
    "keep_largest_component",
    "load_postprocessing",
    "organ_of",
    "organ_pairs",
    "postprocess_masks",
    "save_postprocessing",
    "skipped_constraints",
    "threshold_probabilities",
    "validate_rules",
]
