"""TextPredictor: prompts in words -> masks in the input's geometry, with fold ensembling and mirroring TTA.

The backbone runs once per window for all prompts; only the tiny heads are per prompt.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from textnnunet.errors import UserError
from textnnunet.imageio.sitk_io import ImageGeometry
from textnnunet.inference.sliding_window import sliding_window_predict
from textnnunet.network.universal import TextPromptedUNet
from textnnunet.preprocessing.preprocessor import preprocess_case, restore_masks, restore_to_original
from textnnunet.inference.laterality import apply_laterality
from textnnunet.text.prompts import CALIBRATED_SIMILARITY_THRESHOLDS
from textnnunet.text.vocabulary import Resolution, Vocabulary
# Only the network-defining fields of a checkpoint's training_config are read here (network/settings.py).
from textnnunet.network.settings import NetworkSettings
from textnnunet.network.settings import memory_format_for
from textnnunet.paths import CHECKPOINT_FINAL, CHECKPOINT_NAMES, ModelFolder  # noqa: F401 - CHECKPOINT_NAMES as before
from textnnunet.utils.plans import Plans
# Cosine similarities live on different scales per encoder; each bar is calibrated on the prompt set
# (textnnunet.text.prompts, documentation/prompts.md).
DEFAULT_SIMILARITY_THRESHOLDS = CALIBRATED_SIMILARITY_THRESHOLDS


@dataclass
class PredictionSettings:
    step_size: float = 0.5
    use_mirroring: bool = True
    device: str = "auto"
    threshold: float = 0.5
    similarity_threshold: float = 0.5
    allow_unknown_prompts: bool = False
    batch_windows: int = 0  # windows per forward pass; 0: auto (windows_per_batch)
    progress: bool = False
    modality: str | None = None  # intensity group of the inputs, for models trained on several (CT and MR)


def resolve_inference_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"--device {requested}: expected auto, cpu or cuda")
    return torch.device(requested)




def configuration_of_model_folder(model_folder: Path) -> str:
    return ModelFolder(Path(model_folder)).configuration


def available_folds(model_folder: Path, checkpoint: str) -> list[str]:
    return ModelFolder(Path(model_folder)).available_folds(checkpoint)


def build_network_for_checkpoint(plans: Plans | dict, configuration: str, ckpt: dict,
                                 embed_dim: int) -> TextPromptedUNet:
    plans = Plans.of(plans)
    config_plan = plans.configuration(configuration)
    config = NetworkSettings.from_json(ckpt["training_config"])
    net = TextPromptedUNet(config_plan.architecture, in_channels=plans.num_channels, embed_dim=embed_dim,
                           conditioning=config.conditioning, deep_supervision=False, backbone=config.backbone)
    net.load_state_dict(ckpt["network"])
    # Test-time mirroring uses the axes the network was trained with (nnU-Net keeps them in its plans).
    net.mirror_axes = tuple(config.resolved_mirror_axes(config_plan.dims))
    return net.eval()


# Windows per forward pass in auto mode: up to 8, at most this many input voxels. On the CPU, PyTorch sends a 3D
# convolution of batch 1 with few channels to its single-threaded reference kernel (slow_conv3d; its oneDNN
# heuristic counts N*C*D*H only); batches of windows go to oneDNN: 3-6x faster for the demo model's patch.
AUTO_BATCH_VOXELS = 1 << 20
AUTO_BATCH_MAX_WINDOWS = 8


def windows_per_batch(batch_windows: int, patch_size: Sequence[int]) -> int:
    """`batch_windows` when positive, else as many windows as the auto budget allows (at least 1)."""
    if batch_windows > 0:
        return int(batch_windows)
    return max(1, min(AUTO_BATCH_MAX_WINDOWS, AUTO_BATCH_VOXELS // max(1, int(np.prod(patch_size)))))


def predict_probabilities(networks: Sequence[torch.nn.Module], data: np.ndarray, embeddings: torch.Tensor,
                          patch_size: Sequence[int], settings: PredictionSettings,
                          device: torch.device) -> np.ndarray:
    """Average of the folds' sigmoid probabilities (K, z, y, x) for one preprocessed image."""
    image = torch.from_numpy(np.ascontiguousarray(data))
    embeddings = embeddings.to(device)
    layout = memory_format_for(device.type, len(patch_size))  # channels-last on the CPU, as in training
    total = None
    for net in networks:
        net.to(device, memory_format=layout)
        mirror = getattr(net, "mirror_axes", tuple(range(len(patch_size)))) if settings.use_mirroring else None

        def predict_patch(x, net=net):
            return net(x.contiguous(memory_format=layout), embeddings)

        probs = sliding_window_predict(predict_patch, image, patch_size, num_outputs=embeddings.shape[0],
                                       step_size=settings.step_size, mirror_axes=mirror, device=device,
                                       batch_windows=windows_per_batch(settings.batch_windows, patch_size),
                                       progress=settings.progress)
        total = probs if total is None else total + probs
    return (total / len(networks)).numpy()


class TextPredictor:
    """Python API of textnnunet_predict.

    >>> predictor = TextPredictor.from_folder("results/TextPlans_001_002_003/3d_fullres", folds=[0])
    >>> masks, geometry, resolved = predictor.predict(["case_0000.nii.gz"], ["liver", "kidney tumor"])
    """

    def __init__(self, model_folder: Path, plans: Plans | dict, configuration: str, vocabulary: Vocabulary,
                 networks: list[torch.nn.Module], folds: list[str], settings: PredictionSettings):
        self.model_folder, self.plans, self.configuration = Path(model_folder), Plans.of(plans), configuration
        self.vocabulary, self.networks, self.folds, self.settings = vocabulary, networks, folds, settings
        self.config_plan = self.plans.configuration(configuration)
        self.device = resolve_inference_device(settings.device)

    @classmethod
    def from_folder(cls, model_folder: str | Path, folds: Sequence[str | int] | None = None,
                    checkpoint: str = CHECKPOINT_FINAL, settings: PredictionSettings | None = None
                    ) -> "TextPredictor":
        model = ModelFolder(Path(model_folder))
        if not model.path.is_dir():
            raise UserError(f"{model.path}: model folder not found")
        if checkpoint not in CHECKPOINT_NAMES:
            raise UserError(f"--checkpoint {checkpoint}: expected one of {', '.join(CHECKPOINT_NAMES)}")
        plans = Plans.load(model.plans_file)
        vocabulary = Vocabulary.load(model.vocabulary_file)
        configuration = model.configuration
        if not plans.has_configuration(configuration):
            raise UserError(f"{model.path}: configuration '{configuration}' is not in its {model.plans_file.name}")
        folds = [str(f) for f in folds] if folds else model.available_folds(checkpoint)
        if not folds:
            raise UserError(f"{model.path}: no fold_*/{checkpoint} found (train first, or choose --checkpoint)")
        embed_dim = int(np.asarray(vocabulary.class_embeddings).shape[1])
        networks = []
        for fold in folds:
            path = model.fold(fold).checkpoint(checkpoint)
            if not path.is_file():
                raise UserError(f"{path}: checkpoint not found")
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            networks.append(build_network_for_checkpoint(plans, configuration, ckpt, embed_dim))
        return cls(model.path, plans, configuration, vocabulary, networks, folds, settings or PredictionSettings())

    # ------------------------------------------------------------------------------------------ prompts
    def default_similarity_threshold(self) -> float:
        kind = (self.vocabulary.encoder_identity or {}).get("kind", "minilm")
        return DEFAULT_SIMILARITY_THRESHOLDS.get(kind, 0.5)

    def resolve_prompts(self, prompts: Sequence[str]) -> list[Resolution]:
        """Trained classes and synonyms resolve from stored vectors; only other prompts load the text encoder."""
        return self.vocabulary.resolve_prompts(list(prompts), self.settings.similarity_threshold,
                                               self.settings.allow_unknown_prompts)

    def heads_for(self, resolutions: Sequence[Resolution]) -> tuple[torch.Tensor, list[list[int]]]:
        """The text vectors of the heads to run, and per prompt the heads whose union is its output: one head, or
        the trained sides of a whole ('kidney' from 'left kidney' and 'right kidney')."""
        vectors: list[np.ndarray] = []
        groups: list[list[int]] = []
        for r in resolutions:
            own = [vector for _, vector in self.vocabulary.head_vectors(r, self.settings.modality)]
            groups.append(list(range(len(vectors), len(vectors) + len(own))))
            vectors += own
        return torch.from_numpy(np.stack(vectors)), groups

    # ----------------------------------------------------------------------------------------- predict
    def preprocess(self, image_files: Sequence[str | Path]) -> tuple[np.ndarray, dict]:
        data, _, properties = preprocess_case([Path(f) for f in image_files], None, self.plans, self.configuration,
                                              modality=self.settings.modality)
        return data, properties

    def predict_preprocessed(self, data: np.ndarray, embeddings: torch.Tensor) -> np.ndarray:
        return predict_probabilities(self.networks, data, embeddings, self.config_plan.patch_size, self.settings,
                                     self.device)

    def predict_prompts_preprocessed(self, data: np.ndarray, resolutions: Sequence[Resolution],
                                     heads: tuple[torch.Tensor, list[list[int]]] | None = None,
                                     thresholds: Sequence[float] | None = None) -> np.ndarray:
        """(prompts, z, y, x) probabilities on the preprocessed grid, one channel per prompt: unions joined
        (voxel-wise maximum), derived sides cut at the patient's midline. `thresholds`: per prompt, those that will
        make its mask (postprocessing.json's per-class ones; default: the settings' threshold for all)."""
        embeddings, groups = heads if heads is not None else self.heads_for(resolutions)
        probs = self.predict_preprocessed(data, embeddings)
        joined = np.stack([probs[group].max(axis=0) for group in groups])
        return apply_laterality(joined, data, [r.side for r in resolutions],
                                self.settings.threshold if thresholds is None else thresholds)

    def predict_case_probabilities(self, image_files: Sequence[str | Path], resolutions: Sequence[Resolution],
                                   thresholds: Sequence[float] | None = None) -> tuple[np.ndarray, ImageGeometry]:
        """Probabilities (K, z, y, x) on the input's own grid, one channel per resolved prompt."""
        probs, properties = self._preprocessed_probabilities(image_files, resolutions, thresholds)
        return restore_to_original(probs, properties), geometry_from_properties(properties)

    def _preprocessed_probabilities(self, image_files: Sequence[str | Path], resolutions: Sequence[Resolution],
                                    thresholds: Sequence[float] | None = None) -> tuple[np.ndarray, dict]:
        data, properties = self.preprocess(image_files)
        return self.predict_prompts_preprocessed(data, resolutions, thresholds=thresholds), properties

    def predict(self, image_files: Sequence[str | Path] | str | Path, prompts: Sequence[str]
                ) -> tuple[dict[str, np.ndarray], ImageGeometry, list[Resolution]]:
        """Binary masks {prompt: (z, y, x) uint8} in the input's geometry, plus how each prompt was resolved."""
        files = [image_files] if isinstance(image_files, (str, Path)) else list(image_files)
        resolutions = self.resolve_prompts(prompts)
        probs, properties = self._preprocessed_probabilities(files, resolutions)
        # Thresholded class by class while resampled back (no full-resolution float maps).
        restored = restore_masks(probs, properties, self.settings.threshold)
        masks = {r.prompt: m for r, m in zip(resolutions, restored)}
        return masks, geometry_from_properties(properties), resolutions


def geometry_from_properties(properties: dict) -> ImageGeometry:
    """The input image's own geometry (before canonical reorientation)."""
    if "original_geometry" in properties:
        return ImageGeometry.from_json(properties["original_geometry"])
    return ImageGeometry(spacing=tuple(properties["spacing_original"]), origin=tuple(properties["origin"]),
                         direction=tuple(properties["direction"]), shape=tuple(properties["shape_original"]))
