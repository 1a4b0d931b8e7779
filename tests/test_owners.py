"""The typed owners of the plan (utils/plans.py) and of the plan and model folders (paths.py): the plan is read only
through `Plans`, the folders' file names are spelled only in paths.py, and plans of the previous version round-trip."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import textnnunet
from textnnunet.errors import UserError
from textnnunet.paths import CHECKPOINT_FINAL, ModelFolder, PlanFolder
from textnnunet.utils.plans import Plans

PACKAGE = Path(textnnunet.__file__).parent
DATA = Path(__file__).parent / "data"
PLANS_MODULE = PACKAGE / "utils" / "plans.py"
FOLDERS_MODULE = PACKAGE / "paths.py"
FOLDER_FILE_NAMES = ("plans.json", "vocabulary.json", "training_config.json", "splits_final.json",
                     "checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth", "log.txt", "progress.png")
# nnU-Net v2's own model folder (plans.json, checkpoint_final.pth) is another program's format, read by the importer.
FILE_NAME_EXCEPTIONS = {PACKAGE / "benchmark" / "nnunet_import.py"}


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_the_plan_is_indexed_only_in_the_plans_module():
    found = [f"{path.relative_to(PACKAGE)}:{i}" for path in sources() if path != PLANS_MODULE
             for i, line in enumerate(path.read_text().splitlines(), 1) if 'plans["' in line]
    assert found == []


def _string_literals(path: Path) -> list[tuple[int, str]]:
    return [(node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_folder_file_names_are_spelled_only_in_paths():
    def names_a_file(text: str) -> bool:
        return any(text == name or text.endswith("/" + name) for name in FOLDER_FILE_NAMES)

    found = [f"{path.relative_to(PACKAGE)}:{line}: {text}" for path in sources()
             if path != FOLDERS_MODULE and path not in FILE_NAME_EXCEPTIONS
             for line, text in _string_literals(path) if names_a_file(text)]
    assert found == []


def test_a_plan_of_the_previous_version_round_trips_exactly(tmp_path):
    original = DATA / "previous_version_plans.json"
    plans = Plans.load(original)
    saved = plans.save(tmp_path / "plans.json")
    assert saved.read_text() == original.read_text()
    assert plans.plans_name == "TextPlans_001_002_003" and plans.num_channels == 1
    full = plans.configuration("3d_fullres")
    assert full.dims == 3 and full.data_identifier == "3d_fullres" and full.patch_size == [32, 56, 48]
    assert plans.label_space.class_names[:2] == ["liver", "liver tumor"]
    assert plans.intensity_groups == {} and plans.dataset_intensity_group == {}  # older plans: one group


def test_unknown_keys_are_kept(tmp_path):
    data = json.loads((DATA / "previous_version_plans.json").read_text())
    data["a_future_key"] = {"kept": True}
    data["configurations"]["3d_fullres"]["another"] = [1, 2]
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(data))
    assert Plans.load(path).save(tmp_path / "again.json").read_text() == json.dumps(data, indent=2) + "\n"


@pytest.mark.parametrize("content, message", [
    (None, "plans not found"),
    ("{", "not valid JSON"),
    ("[]", "not a textnnunet plans file"),
    ('{"configurations": []}', "'configurations' is not an object"),
    ('{"configurations": {"2d": 3}}', "configuration '2d' is not an object"),
])
def test_loading_a_bad_plan_is_one_user_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "plans.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as e:
        Plans.load(path)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_a_missing_configuration_names_the_available_ones():
    with pytest.raises(UserError, match=r"configuration '2d' not in the plan \(available: 3d_fullres\)"):
        Plans.of({"plans_name": "P", "configurations": {"3d_fullres": {}}}).configuration("2d")


def test_model_folder_find_and_its_files(tmp_path):
    model = ModelFolder.find(tmp_path, plans="TextPlans_001_002", configuration="3d_fullres", tag="film")
    assert model.path == tmp_path / "TextPlans_001_002" / "3d_fullres__film"
    assert model.configuration == "3d_fullres"
    assert model.plans_file.parent == model.vocabulary_file.parent == model.path
    assert model.fold(0).final_checkpoint == model.path / "fold_0" / CHECKPOINT_FINAL
    with pytest.raises(UserError, match="need exactly one plan with a 3d_fullres__film model"):
        ModelFolder.find(tmp_path, configuration="3d_fullres", tag="film")  # nothing trained yet
    model.fold(1).path.mkdir(parents=True)
    model.fold(1).final_checkpoint.write_bytes(b"")
    assert ModelFolder.find(tmp_path, configuration="3d_fullres", tag="film") == model  # the only one
    assert model.available_folds() == ["1"]


def test_plan_folder_find(tmp_path):
    with pytest.raises(UserError, match="no joint plan found"):
        PlanFolder.find(tmp_path)
    joint = PlanFolder(tmp_path / "TextPlans_001_002")
    joint.path.mkdir()
    joint.plans_file.write_text("{}")
    assert PlanFolder.find(tmp_path) == PlanFolder.find(tmp_path, dataset_ids=[2, 1]) == joint
    with pytest.raises(UserError, match="plan not found"):
        PlanFolder.find(tmp_path, dataset_ids=[3])
    single = PlanFolder(tmp_path / "Dataset002_Spleen")
    single.path.mkdir()
    single.plans_file.write_text("{}")
    assert PlanFolder.find_dataset(tmp_path, 2) == PlanFolder.find_dataset(tmp_path, "Dataset002_Spleen") == single
    with pytest.raises(UserError, match="per-dataset plan not found"):
        PlanFolder.find_dataset(tmp_path, 5)
