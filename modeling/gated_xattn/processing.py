# Copied from modeling.common.processing: edit modeling/common/processing.py, then run `make fix-copies`.
"""The processor of the retrieval families: one call turns text, audio and images (any subset) into model inputs,
with errors that name the bad item."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

logger = logging.get_logger(__name__)

# One 25 ms analysis window at 16 kHz: the fewest samples the filter-bank / log-mel features are defined on.
MIN_SAMPLES = 400
#: Tokenizer settings `__call__` passes on (for `text=` and `transcripts=`).
TEXT_KWARGS = ("padding", "truncation", "max_length", "pad_to_multiple_of")


def whisper_window_feature_extractor(feature_extractor, window_seconds: float):
    """A copy of a Whisper feature extractor whose fixed window (pad / truncate length) is `window_seconds`."""
    if not hasattr(feature_extractor, "chunk_length"):
        raise ValueError("`audio_window_seconds` applies to a Whisper feature extractor.")
    return type(feature_extractor)(
        feature_size=feature_extractor.feature_size,
        sampling_rate=feature_extractor.sampling_rate,
        hop_length=feature_extractor.hop_length,
        chunk_length=int(round(window_seconds)),
        n_fft=feature_extractor.n_fft,
        padding_value=feature_extractor.padding_value,
    )


class CrossModalProcessor(ProcessorMixin):
    r"""
    Wraps the text tower's tokenizer, the audio tower's feature extractor (AST filter banks or Whisper log-mel) and
    the image tower's image processor. Any subset of `text=`, `audio=` (with `sampling_rate=`) and `images=` may be
    passed, with any number of items each (as CLIP's processor: e.g. candidate captions for one image); the model
    refuses different batch sizes where it needs pairs (a fused query, the loss).

    Args:
        tokenizer: a tokenizer (e.g. `RobertaTokenizer`).
        feature_extractor: an audio feature extractor (`ASTFeatureExtractor` or `WhisperFeatureExtractor`).
        image_processor: an image processor (`ViTImageProcessor` or `TimmWrapperImageProcessor`).
        max_audio_seconds (`float`, defaults to 60.0): longer clips are refused (trim or split them). Clips longer
            than the audio tower's window but below this limit are truncated to the window, with a warning.
        text_max_length (`int`, *optional*, defaults to 64): text is truncated to this many tokens.
    """

    def __init__(
        self,
        tokenizer=None,
        feature_extractor=None,
        image_processor=None,
        max_audio_seconds: float = 60.0,
        text_max_length: int = 64,
        **kwargs,
    ):
        self.max_audio_seconds = max_audio_seconds
        self.text_max_length = text_max_length
        if type(image_processor).__name__ == "TimmWrapperImageProcessor" and not hasattr(
            image_processor, "pretrained_cfg"
        ):
            # A timm image processor keeps its settings in the model's config.json and serialises without its
            # `pretrained_cfg` init argument; keep it so the processor saved inside a CMAN folder reloads.
            image_processor.pretrained_cfg = dict(image_processor.data_config)
        super().__init__(tokenizer, feature_extractor, image_processor, **kwargs)

    @classmethod
    def from_towers(
        cls,
        text: str | os.PathLike,
        audio: str | os.PathLike,
        image: str | os.PathLike,
        *,
        audio_window_seconds: float | None = None,
        **kwargs,
    ):
        """Assemble the processor from the three towers' own preprocessing (Hub ids or folders)."""
        from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

        feature_extractor = AutoFeatureExtractor.from_pretrained(audio)
        if audio_window_seconds is not None:
            feature_extractor = whisper_window_feature_extractor(feature_extractor, audio_window_seconds)
        return cls(
            tokenizer=AutoTokenizer.from_pretrained(text),
            feature_extractor=feature_extractor,
            image_processor=AutoImageProcessor.from_pretrained(image),
            **kwargs,
        )

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    @property
    def audio_window_seconds(self) -> float:
        """Seconds of audio one clip contributes before truncation."""
        if hasattr(self.feature_extractor, "n_samples"):  # Whisper
            return self.feature_extractor.n_samples / self.feature_extractor.sampling_rate
        return self.feature_extractor.max_length * 0.01  # AST: 10 ms frames

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "input_features",
            "input_values",
            "audio_attention_mask",
            "transcript_input_ids",
            "transcript_attention_mask",
            "pixel_values",
        ]

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        audio=None,
        images=None,
        sampling_rate: int | None = None,
        transcripts: str | Sequence[str] | None = None,
        return_tensors: str = "pt",
        **text_kwargs,
    ) -> BatchFeature:
        """
        Args:
            text: a string or a list of strings.
            audio: a waveform or a list of waveforms (1-D, or 2-D with channels, which are averaged), as numpy arrays,
                torch tensors or lists of floats, all at `sampling_rate` Hz; resampled to the feature extractor's rate.
            images: an image or a list of images (PIL images, numpy arrays `(H, W[, C])`, torch tensors or file paths).
            sampling_rate: sampling rate of `audio` in Hz (required with audio).
            transcripts: what is said in each clip of `audio`, for a model that reads it next to the sound (see its
                `transcribe`; without `transcripts=` such a model transcribes by itself). Tokenized like `text`; an
                empty transcript (no speech) is allowed.
            padding, truncation, max_length, pad_to_multiple_of: tokenizer settings for `text` and `transcripts`
                (default: pad to the longest, truncate to `text_max_length`).
        Returns:
            `BatchFeature` with `input_ids`/`attention_mask`, `input_features` (+`audio_attention_mask`) or
            `input_values`, `transcript_input_ids`/`transcript_attention_mask` and `pixel_values`, for the inputs
            passed.
        """
        if text is None and audio is None and images is None:
            raise ValueError(f"{type(self).__name__} needs at least one of `text=`, `audio=` or `images=`.")
        unknown = sorted(set(text_kwargs) - set(TEXT_KWARGS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {unknown}; it takes text=, audio=, "
                f"images=, sampling_rate=, transcripts=, return_tensors= and the tokenizer settings {TEXT_KWARGS}."
            )
        tokenizer_kwargs = {
            "padding": True,
            "truncation": True,
            "max_length": self.text_max_length,
            **text_kwargs,
        }
        data: dict[str, torch.Tensor] = {}
        if text is not None:
            texts = self._check_text(text)
            data.update(self.tokenizer(texts, return_tensors=return_tensors, **tokenizer_kwargs))
            data.pop("token_type_ids", None)
        if audio is not None:
            waves = self._check_audio(audio, sampling_rate)
            data.update(self._audio_features(waves, return_tensors))
        if transcripts is not None:
            if audio is None:
                raise ValueError("`transcripts=` describe audio clips: pass the clips as `audio=` too.")
            said = [transcripts] if isinstance(transcripts, str) else list(transcripts)
            for index, item in enumerate(said):
                if not isinstance(item, str):
                    raise TypeError(f"transcripts[{index}] is a {type(item).__name__}, expected a string.")
            if len(said) != len(waves):
                raise ValueError(
                    f"Got {len(said)} transcripts for {len(waves)} audio clips; give one per clip."
                )
            tokens = self.tokenizer(said, return_tensors=return_tensors, **tokenizer_kwargs)
            data["transcript_input_ids"] = tokens["input_ids"]
            data["transcript_attention_mask"] = tokens["attention_mask"]
        if images is not None:
            pictures = self._check_images(images)
            data.update(self.image_processor(pictures, return_tensors=return_tensors))
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ------------------------------------------------------------------ validation
    @staticmethod
    def _check_text(text) -> list[str]:
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ValueError("`text=` is an empty list.")
        for index, item in enumerate(texts):
            if not isinstance(item, str):
                raise TypeError(f"text[{index}] is a {type(item).__name__}, expected a string.")
            if not item.strip():
                raise ValueError(f"text[{index}] is empty; every item needs a caption.")
        return texts

    def _check_audio(self, audio, sampling_rate: int | None) -> list[np.ndarray]:
        if sampling_rate is None:
            raise ValueError(
                f"Pass `sampling_rate=` (Hz) with `audio=`; the model expects {self.sampling_rate} Hz and resamples."
            )
        if (
            isinstance(sampling_rate, bool)
            or not isinstance(sampling_rate, int | np.integer)
            or sampling_rate <= 0
        ):
            raise ValueError(
                f"`sampling_rate` must be a positive integer number of Hz, got {sampling_rate!r}."
            )
        if sampling_rate < 4000:
            raise ValueError(
                f"`sampling_rate={sampling_rate}` Hz is too low for speech or sound; it is the rate of the waveform "
                "in samples per second (e.g. 16000 or 44100)."
            )
        single = isinstance(audio, np.ndarray | torch.Tensor) and audio.ndim == 1
        if single or (isinstance(audio, list) and audio and isinstance(audio[0], float | int)):
            audio = [audio]
        waves = []
        for index, wave in enumerate(audio):
            wave = torch.as_tensor(
                np.asarray(wave, dtype=np.float32) if not torch.is_tensor(wave) else wave
            ).float()
            if wave.ndim == 2:  # (channels, samples) or (samples, channels) -> mono
                wave = wave.mean(dim=0 if wave.shape[0] <= wave.shape[1] else 1)
            if wave.ndim != 1:
                raise ValueError(
                    f"audio[{index}] has shape {tuple(wave.shape)}; pass a 1-D (or channels x samples) wave."
                )
            if wave.numel() == 0:
                raise ValueError(f"audio[{index}] is empty (0 samples); drop the item or record it again.")
            if not torch.isfinite(wave).all():
                raise ValueError(f"audio[{index}] contains NaN or infinite samples.")
            seconds = wave.numel() / sampling_rate
            if seconds > self.max_audio_seconds:
                raise ValueError(
                    f"audio[{index}] lasts {seconds:.1f} s, above max_audio_seconds={self.max_audio_seconds}; the audio "
                    f"tower sees {self.audio_window_seconds:g} s. Trim or split the clip (or raise max_audio_seconds)."
                )
            if sampling_rate != self.sampling_rate:
                import torchaudio.functional

                wave = torchaudio.functional.resample(wave, sampling_rate, self.sampling_rate)
            if wave.numel() < MIN_SAMPLES:  # shorter than one analysis window (25 ms): pad with silence
                wave = torch.nn.functional.pad(wave, (0, MIN_SAMPLES - wave.numel()))
            waves.append(wave.numpy())
        if not waves:
            raise ValueError("`audio=` is an empty list.")
        window = self.audio_window_seconds * self.sampling_rate
        truncated = [index for index, wave in enumerate(waves) if len(wave) > window]
        if truncated:
            logger.warning_once(
                f"Audio clips longer than the audio tower's {self.audio_window_seconds:g} s window are truncated to it "
                "(each call logs which ones at INFO level)."
            )
            logger.info(
                f"Truncated {len(truncated)} audio clip(s) to {self.audio_window_seconds:g} s: {truncated[:10]}"
            )
        return waves

    @staticmethod
    def _check_images(images) -> list:
        from PIL import Image, UnidentifiedImageError

        single = isinstance(images, Image.Image | str | Path) or (
            isinstance(images, np.ndarray | torch.Tensor) and images.ndim == 3
        )
        items = [images] if single else list(images)
        if not items:
            raise ValueError("`images=` is an empty list.")
        checked = []
        for index, item in enumerate(items):
            if isinstance(item, str | Path):
                try:
                    with Image.open(item) as opened:
                        item = opened.convert("RGB")
                except (OSError, UnidentifiedImageError) as error:
                    raise ValueError(
                        f"images[{index}] ({item}) cannot be decoded as an image: {error}"
                    ) from error
            elif isinstance(item, Image.Image):
                item = item.convert("RGB")
            elif isinstance(item, np.ndarray | torch.Tensor):
                if item.ndim not in (2, 3) or min(item.shape[:2] if item.ndim == 3 else item.shape) < 1:
                    raise ValueError(
                        f"images[{index}] has shape {tuple(item.shape)}; expected (H, W) or (H, W, C)."
                    )
            else:
                raise TypeError(
                    f"images[{index}] is a {type(item).__name__}, not an image; pass PIL images, numpy arrays, "
                    "tensors or file paths."
                )
            checked.append(item)
        return checked

    def _audio_features(self, waves: list[np.ndarray], return_tensors: str) -> dict[str, torch.Tensor]:
        if hasattr(self.feature_extractor, "n_samples"):  # Whisper log-mel over a fixed window
            features = self.feature_extractor(
                waves,
                sampling_rate=self.sampling_rate,
                return_tensors=return_tensors,
                return_attention_mask=True,
            )
            return {
                "input_features": features["input_features"],
                "audio_attention_mask": features["attention_mask"],
            }
        features = self.feature_extractor(
            waves, sampling_rate=self.sampling_rate, return_tensors=return_tensors
        )
        return {"input_values": features["input_values"]}
