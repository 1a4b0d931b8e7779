"""Reading and writing images with their geometry (SimpleITK), in (c, z, y, x) array order."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from textnnunet.errors import UserError
from textnnunet.utils.files import atomic_path


@dataclass(frozen=True)
class ImageGeometry:
    spacing: tuple[float, float, float]  # (z, y, x)
    origin: tuple[float, float, float]  # as SimpleITK: (x, y, z)
    direction: tuple[float, ...]  # 9 floats, SimpleITK order
    shape: tuple[int, int, int]  # (z, y, x)

    def to_json(self) -> dict:
        return {"spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction),
                "shape": list(self.shape)}

    @classmethod
    def from_json(cls, d: dict) -> "ImageGeometry":
        return cls(tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]), tuple(d["shape"]))

    def matches(self, other: "ImageGeometry", tol: float = 1e-3) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, rtol=tol, atol=tol)
            and np.allclose(self.origin, other.origin, rtol=tol, atol=tol)
            and np.allclose(self.direction, other.direction, atol=tol)
        )


def read_sitk(path: str | Path) -> sitk.Image:
    """Read a file with SimpleITK; a missing or unreadable file is a one-line UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:  # SimpleITK's message ends with the reason; keep that line only
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1][:160] if lines else "unreadable"
        raise UserError(f"{path}: cannot be read as an image ({reason})") from None


def geometry_of(img: sitk.Image | sitk.ImageFileReader, path: str | Path = "") -> ImageGeometry:
    """Geometry (numpy axis order) of an image, or of a reader that has read only the file's header."""
    components = (img.GetNumberOfComponentsPerPixel() if isinstance(img, sitk.Image)
                  else img.GetNumberOfComponents())
    if img.GetDimension() != 3:
        raise UserError(f"{path}: expected a 3D image, found {img.GetDimension()}D")
    if components != 1:
        raise UserError(f"{path}: expected one component per voxel, found {components}")
    return ImageGeometry(
        spacing=tuple(float(s) for s in img.GetSpacing()[::-1]),
        origin=tuple(float(o) for o in img.GetOrigin()),
        direction=tuple(float(d) for d in img.GetDirection()),
        shape=tuple(int(s) for s in img.GetSize()[::-1]),
    )


def read_geometry(path: str | Path) -> ImageGeometry:
    """The geometry in an image file's header, without reading its voxels."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise UserError(f"{path}: cannot be read as an image") from None
    return geometry_of(reader, path)


def read_image(files: Sequence[str | Path]) -> tuple[np.ndarray, ImageGeometry]:
    """Read the channel files of one case into a float32 (c, z, y, x) array plus its geometry."""
    out, geometry = None, None
    for c, f in enumerate(files):
        img = read_sitk(f)
        geo = geometry_of(img, f)
        if geometry is None:
            geometry = geo
            out = np.empty((len(files), *geo.shape), dtype=np.float32)
        elif not geo.matches(geometry):
            raise UserError(f"{f}: geometry differs from channel 0 ({files[0]})")
        out[c] = sitk.GetArrayViewFromImage(img)  # converted straight into the float32 array, no extra copies
        del img
    if geometry is None:
        raise UserError("no image files given")
    return out, geometry


def read_label(path: str | Path) -> tuple[np.ndarray, ImageGeometry]:
    img = read_sitk(path)
    geo = geometry_of(img, path)
    arr = sitk.GetArrayFromImage(img)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(np.equal(np.mod(arr, 1), 0)):
            raise UserError(f"{path}: label map holds non-integer values")
        arr = arr.astype(np.int32)
    return arr, geo


def array_to_sitk(array: np.ndarray, geometry: ImageGeometry) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in geometry.spacing[::-1]))
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    return img


def write_image(array: np.ndarray, geometry: ImageGeometry, path: str | Path, compress: bool = True) -> None:
    """Write a (z, y, x) array with the given geometry, atomically; the format follows the file name."""
    path = Path(path)
    if tuple(array.shape) != tuple(geometry.shape):
        raise ValueError(f"array shape {array.shape} does not match geometry shape {geometry.shape}")
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        sitk.WriteImage(array_to_sitk(array, geometry), str(tmp), useCompression=compress)


# ------------------------------------------------------------------------------------------ orientation
# Networks see arrays, not patients: the same anatomy stored with another direction matrix is a mirrored or
# transposed array. Preprocessing therefore works in one canonical orientation and prediction goes back.
CANONICAL_ORIENTATION = "LPS"  # identity direction for axis-aligned images


def orientation_code(direction: Sequence[float]) -> str:
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(tuple(float(d) for d in direction))


_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


def reorientation(geometry: ImageGeometry, code: str) -> tuple[list[int], list[bool], ImageGeometry]:
    """What `sitk.DICOMOrient(image, code)` does to an image of this geometry: for each new (x, y, z) axis the
    old axis it takes and whether it is flipped, and the new geometry (permutations and flips only)."""
    current = orientation_code(geometry.direction)
    if sorted(_OPPOSITE[c] if c in "RAI" else c for c in current) != sorted("LPS") or len(code) != 3:
        raise ValueError(f"cannot reorient {current} to {code}")
    permutation, flips = [], []
    for letter in code:
        j = next(j for j, c in enumerate(current) if c in (letter, _OPPOSITE[letter]))
        permutation.append(j)
        flips.append(current[j] != letter)
    size = list(geometry.shape[::-1])  # (x, y, z)
    spacing = list(geometry.spacing[::-1])
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)  # columns: axis directions
    corner = np.array([size[j] - 1 if flip else 0 for j, flip in zip(permutation, flips)], dtype=np.float64)
    old_index = np.zeros(3)
    for i, j in enumerate(permutation):
        old_index[j] = corner[i]
    origin = np.asarray(geometry.origin, dtype=np.float64) + direction @ (old_index * np.asarray(spacing))
    new_direction = np.stack([direction[:, j] * (-1.0 if flip else 1.0) for j, flip in zip(permutation, flips)],
                             axis=1)
    new_geometry = ImageGeometry(
        spacing=tuple(float(spacing[j]) for j in permutation)[::-1],
        origin=tuple(float(o) for o in origin),
        direction=tuple(float(d) for d in new_direction.reshape(-1)),
        shape=tuple(int(size[j]) for j in permutation)[::-1],
    )
    return permutation, flips, new_geometry


def _reorient(array: np.ndarray, geometry: ImageGeometry, code: str) -> tuple[np.ndarray, ImageGeometry]:
    """Reorient a (k, z, y, x) array with its geometry to `code` (permutations and flips only, no resampling).

    The same voxels and geometry as `sitk.DICOMOrient` per channel, done with one numpy transpose/flip copy.
    """
    try:
        permutation, flips, new_geometry = reorientation(geometry, code)
    except ValueError:  # a direction whose axes do not map to distinct patient axes: SimpleITK decides
        return _reorient_sitk(array, geometry, code)
    # numpy spatial axis of sitk axis k is 3 - k in a (k, z, y, x) array.
    axes = [0] + [3 - permutation[2 - a] for a in range(3)]
    out = np.transpose(array, axes)
    flip_axes = tuple(3 - i for i, flip in enumerate(flips) if flip)
    if flip_axes:
        out = np.flip(out, flip_axes)
    return np.ascontiguousarray(out), new_geometry


def _reorient_sitk(array: np.ndarray, geometry: ImageGeometry, code: str) -> tuple[np.ndarray, ImageGeometry]:
    out, out_geometry = [], geometry
    for channel in array:
        img = sitk.DICOMOrient(array_to_sitk(np.ascontiguousarray(channel), geometry), code)
        out.append(sitk.GetArrayFromImage(img))
        out_geometry = geometry_of(img)
    return np.stack(out), out_geometry


def to_canonical(array: np.ndarray, geometry: ImageGeometry) -> tuple[np.ndarray, ImageGeometry]:
    if orientation_code(geometry.direction) == CANONICAL_ORIENTATION:
        return array, geometry
    return _reorient(array, geometry, CANONICAL_ORIENTATION)


def from_canonical(array: np.ndarray, canonical_geometry: ImageGeometry, original: ImageGeometry) -> np.ndarray:
    """Undo `to_canonical` for a (k, z, y, x) array on the canonical grid; returns the original array layout."""
    code = orientation_code(original.direction)
    if code == orientation_code(canonical_geometry.direction):
        return array
    restored, geometry = _reorient(array, canonical_geometry, code)
    if tuple(geometry.shape) != tuple(original.shape):
        raise ValueError(f"reorientation gave shape {geometry.shape}, expected {original.shape}")
    return restored
