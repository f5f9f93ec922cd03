"""The retrieval service behind the Space: a model and its processor, an index of a dataset split, queries made of any
subset of text, audio and an image, and zero-shot classification of an image or a sound against typed labels."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recipes.serving.index import Hit, RetrievalIndex
from recipes.serving.inputs import QueryError, load_audio, load_image

logger = logging.getLogger(__name__)

#: Prompts the labels of the zero-shot tab are embedded in, per modality of the item.
ZERO_SHOT_TEMPLATES = {"image": "This is a picture of {}.", "audio": "This is a sound of {}."}
MAX_LABELS = 50


@dataclass
class SearchResult:
    parts: tuple[str, ...]  # the modalities of the query
    transcript: str | None  # what the model heard in the query's audio (when it transcribes)
    hits: dict[str, list[Hit]]  # per gallery modality
    seconds: float
    encoder: str = "pytorch"  # or "onnx"
    notes: list[str] = field(default_factory=list)


class RetrievalService:
    """Load a retrieval model (folder or Hub id), index a dataset split, answer queries. Thread-safe: one query runs
    at a time on the model (the web server queues the rest)."""

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        dataset_path: str | os.PathLike,
        split: str = "test",
        cache_dir: str | os.PathLike | None = None,
        *,
        max_items: int | None = None,
        zero_shot_model: str | os.PathLike | None = None,
        onnx_dir: str | os.PathLike | None = None,
    ):
        from recipes.data.retrieval import load_retrieval_dataset
        from recipes.evaluation.retrieval import load_model_and_processor
        from recipes.training.trainer import default_cache_dir

        started = time.perf_counter()
        self.model_name_or_path = str(model_name_or_path)
        try:
            self.model, self.processor = load_model_and_processor(self.model_name_or_path, device="cpu")
        except OSError as error:
            raise FileNotFoundError(
                f"Cannot load a model from {model_name_or_path!r}: {error}. Train one first (make demo writes "
                "outputs/demo) or pass --model with a saved folder or Hub id."
            ) from error
        self.model.eval()
        dataset = load_retrieval_dataset(str(dataset_path))
        if split not in dataset:
            raise ValueError(f"Split {split!r} is not in {dataset_path}; it has {sorted(dataset)}.")
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "spaces"
        self.index = RetrievalIndex.load_or_build(
            self.model, self.processor, dataset[split], self.cache_dir, max_items=max_items, name=f"{split}"
        )
        self.max_audio_seconds = float(getattr(self.processor, "max_audio_seconds", 60.0))
        self.zero_shot_model = str(zero_shot_model) if zero_shot_model else None
        self._pipelines: dict[str, object] = {}
        self.onnx = None
        if onnx_dir:
            from recipes.export.onnx import OnnxEncoders

            self.onnx = OnnxEncoders(onnx_dir, model=self.model)  # refuses an export of other weights
        self._lock = threading.Lock()
        self.ready_seconds = time.perf_counter() - started
        logger.info("Ready in %.0f s: %d rows indexed", self.ready_seconds, len(self.index))

    @property
    def modalities(self) -> list[str]:
        """The modalities the model embeds (a query may use any subset of them)."""
        return [
            m
            for m in ("text", "audio", "image")
            if getattr(self.model.config, f"{m}_config", None) is not None
        ]

    @property
    def transcribes(self) -> bool:
        from recipes.utils.models import transcribes_audio

        return transcribes_audio(self.model)

    # -------------------------------------------------------------------------------------------------- search
    def search(
        self,
        text: str | None = None,
        audio_path: str | None = None,
        image_path: str | None = None,
        k: int = 5,
        use_onnx: bool = True,
    ) -> SearchResult:
        """Rank the index's images, descriptions and audio against a query of any subset of `text`, the audio file
        and the image file. Raises `QueryError` for an unusable input or an empty query."""
        text = (text or "").strip() or None
        if text is None and not audio_path and not image_path:
            raise QueryError(
                "Give a query: type some text, record or upload audio, or upload an image (any mix)."
            )
        if not 1 <= int(k) <= 50:
            raise QueryError(f"Ask for 1 to 50 results, not {k}.")
        given = [m for m, v in (("text", text), ("audio", audio_path), ("image", image_path)) if v]
        missing = [m for m in given if m not in self.modalities]
        if missing:
            raise QueryError(
                f"This model does not embed {' or '.join(missing)}; it takes {', '.join(self.modalities)}."
            )
        wave = load_audio(audio_path, self.max_audio_seconds) if audio_path else None
        image = load_image(image_path) if image_path else None
        parts = tuple(m for m, v in (("text", text), ("audio", wave), ("image", image)) if v is not None)
        started = time.perf_counter()
        with self._lock:
            embedding, transcript, encoder = self._encode(parts, text, wave, image, use_onnx)
        hits = {m: self.index.search(embedding, m, int(k)) for m in self.index.modalities}
        return SearchResult(parts, transcript, hits, time.perf_counter() - started, encoder)

    @torch.no_grad()
    def _encode(self, parts, text, wave, image, use_onnx: bool) -> tuple[torch.Tensor, str | None, str]:
        kwargs: dict = {}
        if text is not None:
            kwargs["text"] = [text]
        if wave is not None:
            kwargs["audio"], kwargs["sampling_rate"] = [wave[0]], wave[1]
        if image is not None:
            kwargs["images"] = [image]
        transcript = None
        if wave is not None and self.transcribes:
            features = self.processor(audio=[wave[0]], sampling_rate=wave[1], return_tensors="pt")
            transcript = self.model.transcribe(features["input_features"])[0]
            kwargs["transcripts"] = [transcript]
        inputs = self.processor(**kwargs, return_tensors="pt")
        if use_onnx and self.onnx is not None and len(parts) == 1 and self.onnx.has(parts[0]):
            return torch.from_numpy(self.onnx.encode(parts[0], inputs)[0]), transcript, "onnx"
        embedding = self.model.encode([parts], **inputs)[parts][0]
        return embedding.float(), transcript, "pytorch"

    # ---------------------------------------------------------------------------------------------- zero-shot
    def zero_shot(
        self, labels: str, image_path: str | None = None, audio_path: str | None = None
    ) -> tuple[str, list[tuple[str, float]]]:
        """Rank comma-separated `labels` for an image or a sound: `(modality, [(label, probability), ...])`."""
        names = list(dict.fromkeys(label.strip() for label in (labels or "").split(",") if label.strip()))
        if len(names) < 2:
            raise QueryError("Type two or more candidate labels, separated by commas (e.g. cat, dog, bus).")
        if len(names) > MAX_LABELS:
            raise QueryError(f"Type at most {MAX_LABELS} labels, not {len(names)}.")
        if bool(image_path) == bool(audio_path):
            raise QueryError("Give either an image or a sound to classify (one of them).")
        modality = "image" if image_path else "audio"
        if modality not in self.modalities:
            raise QueryError(f"This model does not embed {modality}; it takes {', '.join(self.modalities)}.")
        item = load_image(image_path) if image_path else load_audio(audio_path, self.max_audio_seconds)
        with self._lock:
            if self.zero_shot_model:
                ranked = self._zero_shot_pipeline(modality, item, names)
            else:
                ranked = self._zero_shot_embeddings(modality, item, names)
        return modality, ranked

    def _zero_shot_pipeline(self, modality: str, item, names: list[str]) -> list[tuple[str, float]]:
        """The stock transformers pipeline on the zero-shot model (the late-fusion family supports it)."""
        from recipes.evaluation.zero_shot import zero_shot_pipeline

        if modality not in self._pipelines:
            self._pipelines[modality] = zero_shot_pipeline(self.zero_shot_model, modality, device="cpu")
        classifier = self._pipelines[modality]
        if modality == "audio":
            wave, rate = item
            target = classifier.feature_extractor.sampling_rate
            if rate != target:
                import torchaudio

                wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, target).numpy()
            item = wave
        ranked = classifier(item, candidate_labels=names, hypothesis_template=ZERO_SHOT_TEMPLATES[modality])
        return [(r["label"], float(r["score"])) for r in ranked]

    @torch.no_grad()
    def _zero_shot_embeddings(self, modality: str, item, names: list[str]) -> list[tuple[str, float]]:
        """The retrieval model itself: the item's embedding against the labels' prompts, softmax over the scaled
        cosine similarities."""
        prompts = [ZERO_SHOT_TEMPLATES[modality].format(name) for name in names]
        labels = self.model.get_text_features(
            **self.processor(text=prompts, return_tensors="pt")
        ).pooler_output
        if modality == "image":
            inputs = self.processor(images=[item], return_tensors="pt")
            embedding = self.model.get_image_features(**inputs).pooler_output
        else:
            embedding = self.model.encode([("audio",)], **self.processor(audio=[item[0]], sampling_rate=item[1], return_tensors="pt"))[("audio",)]  # fmt: skip
        scale = self.model.inverse_temperature() if hasattr(self.model, "inverse_temperature") else 1.0
        probabilities = (scale * embedding.float() @ labels.float().T).softmax(dim=-1)[0]
        order = torch.argsort(probabilities, descending=True).tolist()
        return [(names[i], float(probabilities[i])) for i in order]

    # ------------------------------------------------------------------------------------------------ examples
    def examples(self, count: int = 3) -> list[list]:
        """Queries from the index to try with one click: `[text, audio file, image file]` rows (one modality each,
        then a composed one)."""
        rows = [item for item in self.index.items if item.get("text")]
        if not rows:
            return []
        picks = [rows[(i * 7) % len(rows)] for i in range(count)]
        folder = self.index.folder
        examples = [[picks[0]["text"], None, None]]
        if len(picks) > 1 and picks[1].get("audio"):
            examples.append([None, str(folder / picks[1]["audio"]), None])
        if len(picks) > 2 and picks[2].get("image"):
            examples.append([None, None, str(folder / picks[2]["image"])])
        if picks[0].get("audio"):  # composed: a typed and a spoken description together
            examples.append([picks[0]["text"], str(folder / picks[0]["audio"]), None])
        return examples
