"""Fingerprint, topology rules and planners (joint over datasets, and per dataset)."""
from textnnunet.experiment_planning.fingerprint import extract_fingerprint, load_fingerprint, save_fingerprint
from textnnunet.experiment_planning.planner import (
    PRESETS, PlannerPreset, default_preset_name, get_preset, load_plans, plan_datasets, plan_experiment,
    plan_single_dataset, save_plans,
)

__all__ = [
    "extract_fingerprint", "load_fingerprint", "save_fingerprint", "PRESETS", "PlannerPreset",
    "default_preset_name", "get_preset", "load_plans", "plan_datasets", "plan_experiment", "plan_single_dataset",
    "save_plans",
]
