"""Converters from public datasets' own layouts to nnU-Net v2 raw folders (textnnunet_convert_dataset).

The registry maps each --from choice to its converter class; documentation/datasets.md describes every source
layout and label mapping.
"""
from __future__ import annotations

from textnnunet.dataset.converters.amos22 import AMOS22Converter
from textnnunet.dataset.converters.base import DatasetConverter, LabelMapping, SourceCase
from textnnunet.dataset.converters.btcv import BTCVConverter
from textnnunet.dataset.converters.flare22 import FLARE22Converter
from textnnunet.dataset.converters.kits23 import KiTS23Converter
from textnnunet.dataset.converters.msd import MSDConverter
from textnnunet.dataset.converters.totalsegmentator import TotalSegmentatorConverter
from textnnunet.dataset.converters.word import WORDConverter
from textnnunet.dataset.converters.writer import ConversionResult, convert_dataset
from textnnunet.errors import UserError

CONVERTERS: dict[str, type[DatasetConverter]] = {cls.name: cls for cls in (
    MSDConverter, KiTS23Converter, BTCVConverter, AMOS22Converter, WORDConverter, FLARE22Converter,
    TotalSegmentatorConverter,
)}


def get_converter(source: str, modality: str | None = None) -> DatasetConverter:
    if source not in CONVERTERS:
        raise UserError(f"--from {source}: unknown source (choose from {', '.join(CONVERTERS)})")
    return CONVERTERS[source](modality)


__all__ = ["CONVERTERS", "ConversionResult", "DatasetConverter", "LabelMapping", "SourceCase", "convert_dataset",
           "get_converter"]
