"""Text side of textnnunet: encoders (clip, minilm, onehot), the embedding cache and the trained vocabulary.

Importing this package is cheap: torch/transformers load only when an encoder first encodes.
"""
from textnnunet.text.cache import EmbeddingCache
from textnnunet.text.encoders import TextEncoder, build_encoder, encoder_from_identity
from textnnunet.text.vocabulary import Resolution, Vocabulary

__all__ = ["EmbeddingCache", "TextEncoder", "build_encoder", "encoder_from_identity", "Resolution", "Vocabulary"]
