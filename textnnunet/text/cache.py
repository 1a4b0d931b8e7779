"""Prompt embeddings computed once and kept on disk, keyed by (encoder identity, prompt).

One file pair per encoder identity (the identity includes the template):
    <folder>/<identity hash>.npz   prompts (unicode array) + vectors (n, dim) float32   <- the truth
    <folder>/<identity hash>.json  {"identity": ..., "prompts": [...]}                 <- for people
Both are replaced atomically; the .npz is self-contained, so a crash between the two writes leaves
at worst a stale index, never mismatched vectors.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from textnnunet.errors import UserError
from textnnunet.text.encoders import TextEncoder, identity_key
from textnnunet.utils.files import atomic_savez_compressed, atomic_write_json


class EmbeddingCache:
    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        # identity hash -> {prompt: vector}; avoids re-reading the file for every lookup
        self._memory: dict[str, dict[str, np.ndarray]] = {}

    def _files(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.npz", self.folder / f"{key}.json"

    def _load(self, key: str) -> dict[str, np.ndarray]:
        if key in self._memory:
            return self._memory[key]
        npz_file, _ = self._files(key)
        entries: dict[str, np.ndarray] = {}
        if npz_file.is_file():
            try:
                with np.load(npz_file, allow_pickle=False) as data:
                    prompts, vectors = data["prompts"], data["vectors"]
            except (OSError, ValueError, KeyError) as e:
                raise UserError(f"{npz_file}: unreadable embedding cache ({e}); delete it to recompute") from None
            entries = {str(p): np.asarray(v, dtype=np.float32) for p, v in zip(prompts, vectors)}
        self._memory[key] = entries
        return entries

    def _save(self, key: str, identity: dict, entries: dict[str, np.ndarray]) -> None:
        npz_file, index_file = self._files(key)
        prompts = list(entries)
        atomic_savez_compressed(npz_file, prompts=np.array(prompts, dtype=np.str_),
                                vectors=np.stack([entries[p] for p in prompts]).astype(np.float32))
        atomic_write_json(index_file, {"identity": identity, "prompts": prompts})

    def get(self, encoder: TextEncoder, prompts: list[str]) -> np.ndarray:
        """Vectors for `prompts` (n, dim); the encoder runs once, on the prompts not seen before."""
        prompts = list(prompts)
        identity = encoder.identity()
        key = identity_key(identity)
        entries = self._load(key)
        missing = list(dict.fromkeys(p for p in prompts if p not in entries))
        if missing:
            # Re-read from disk first: another process (e.g. another fold) may have added entries.
            self._memory.pop(key, None)
            entries = self._load(key)
            missing = [p for p in missing if p not in entries]
        if missing:
            for prompt, vector in zip(missing, encoder.encode(missing)):
                entries[prompt] = np.asarray(vector, dtype=np.float32)
            self._save(key, identity, entries)
        if not prompts:
            return np.zeros((0, encoder.dim), dtype=np.float32)
        return np.stack([entries[p] for p in prompts]).astype(np.float32)

    def known_prompts(self, encoder: TextEncoder) -> list[str]:
        return list(self._load(identity_key(encoder.identity())))
