"""textnnunet: self-configuring, text-prompted universal 3D segmentation across partially labelled datasets."""

__version__ = "0.1.0"
