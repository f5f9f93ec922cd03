"""An on-disk index of a dataset split for a retrieval model: the embeddings of every row's image, description and
audio, and the media as files a web page can show. Built once per (model weights, dataset split) and read back from
the cache afterwards."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from recipes.utils.models import model_digest

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1


@dataclass
class Hit:
    rank: int
    score: float
    row: int
    id: str
    text: str | None
    image: str | None  # a PNG file
    audio: str | None  # a WAV file


class RetrievalIndex:
    """Embeddings `{modality: (N, d)}` of one split and its rows' `id`, `text` and media files."""

    def __init__(self, folder: Path, embeddings: dict[str, torch.Tensor], items: list[dict]):
        self.folder = Path(folder)
        self.embeddings = embeddings
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    @property
    def modalities(self) -> list[str]:
        return list(self.embeddings)

    def search(self, query: torch.Tensor, modality: str, k: int = 5) -> list[Hit]:
        """The `k` rows whose `modality` embedding is most similar (cosine) to `query` `(d,)`; rows that share a
        description are one answer (the first of them is shown)."""
        if modality not in self.embeddings:
            raise ValueError(f"The index has no {modality} embeddings; it has {self.modalities}.")
        scores = self.embeddings[modality] @ query.float().reshape(-1)
        order = torch.argsort(scores, descending=True).tolist()
        hits, seen = [], set()
        for row in order:
            item = self.items[row]
            key = item.get(f"{modality}_key", row)
            if key in seen:
                continue
            seen.add(key)
            hits.append(
                Hit(
                    rank=len(hits) + 1,
                    score=float(scores[row]),
                    row=row,
                    id=item["id"],
                    text=item.get("text"),
                    image=str(self.folder / item["image"]) if item.get("image") else None,
                    audio=str(self.folder / item["audio"]) if item.get("audio") else None,
                )
            )
            if len(hits) == k:
                break
        return hits

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def load_or_build(
        cls,
        model,
        processor,
        dataset,
        cache_dir: str | os.PathLike,
        *,
        columns=None,
        max_items: int | None = None,
        batch_size: int = 32,
        name: str = "index",
    ) -> RetrievalIndex:
        """The index of `dataset` (one split, a `datasets.Dataset`) under `cache_dir`, built if missing."""
        from safetensors.torch import load_file

        from recipes.data.retrieval import RetrievalColumns

        columns = columns or RetrievalColumns()
        if max_items is not None:
            dataset = dataset.select(range(min(max_items, len(dataset))))
        key = hashlib.sha256(
            json.dumps([INDEX_FORMAT, model_digest(model), dataset._fingerprint, len(dataset)]).encode()
        ).hexdigest()[:20]
        folder = Path(cache_dir) / f"{name}-{key}"
        if (folder / "items.json").exists() and (folder / "embeddings.safetensors").exists():
            items = json.loads((folder / "items.json").read_text())
            logger.info("Read the index of %d rows from %s", len(items), folder)
            return cls(folder, load_file(folder / "embeddings.safetensors"), items)
        return cls._build(model, processor, dataset, folder, columns, batch_size, cache_dir)

    @classmethod
    def _build(
        cls, model, processor, dataset, folder: Path, columns, batch_size: int, cache_dir
    ) -> RetrievalIndex:
        from safetensors.torch import save_file

        from recipes.data.retrieval import (
            RetrievalCollator,
            add_transcripts,
            normalise_caption,
            prepare_for_lazy_decoding,
            resolve_columns,
        )
        from recipes.evaluation.retrieval import embed_dataset
        from recipes.utils.models import transcribes_audio

        started = time.perf_counter()
        staging = folder.with_name(folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "media").mkdir(parents=True)
        modalities = resolve_columns(dataset, columns, None)
        lazy = prepare_for_lazy_decoding(dataset, columns)
        if transcribes_audio(model) and "audio" in modalities:
            lazy = add_transcripts(
                lazy,
                model,
                processor,
                columns,
                batch_size,
                description="transcribing the index",
                cache_dir=cache_dir,
            )
        collator = RetrievalCollator(processor, columns=columns)
        embeds, _ = embed_dataset(
            model, collator, lazy, [(m,) for m in modalities], batch_size, description="embedding the index"
        )
        items = cls._write_media(dataset, lazy, columns, modalities, staging / "media", normalise_caption)
        save_file({m: embeds[(m,)].contiguous() for m in modalities}, staging / "embeddings.safetensors")
        (staging / "items.json").write_text(json.dumps(items, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)  # a crash while building never leaves a half index behind
        logger.info(
            "Built the index of %d rows in %.0f s: %s", len(items), time.perf_counter() - started, folder
        )
        return cls(folder, {m: embeds[(m,)] for m in modalities}, items)

    @staticmethod
    def _write_media(dataset, lazy, columns, modalities, media: Path, normalise_caption) -> list[dict]:
        import soundfile

        from recipes.data.retrieval import BadRowError, _decode_audio, _load_image

        def bad(column: str, cause: str) -> BadRowError:
            return BadRowError(f"Cannot index row {row} ({column}): {cause}.", row=row, column=column)

        items = []
        for row, record in enumerate(lazy):
            item = {"id": str(record.get(columns.id, row)) if columns.id else str(row)}
            if "text" in modalities:
                item["text"] = record[columns.text]
                item["text_key"] = item["audio_key"] = item["image_key"] = normalise_caption(
                    record[columns.text]
                )
            if "image" in modalities:
                _load_image(record[columns.image], columns.image, bad).save(media / f"{row}.png")
                item["image"] = f"media/{row}.png"
            if "audio" in modalities:
                wave, rate = _decode_audio(record[columns.audio], columns.audio, bad)
                soundfile.write(media / f"{row}.wav", wave, rate)
                item["audio"] = f"media/{row}.wav"
                if columns.transcript in record:
                    item["transcript"] = record[columns.transcript]
            items.append(item)
        return items
