# Copied from modeling.common.speech: edit modeling/common/speech.py, then run `make fix-copies`.
"""A frozen pretrained Whisper that transcribes the audio tower's clips, so a model can read what is said next to
the sound. The transcript goes through the model's text tower; the model transcribes by itself when no transcript is
passed, and the recipes transcribe each split once (the recogniser never trains)."""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import GenerationConfig, PreTrainedConfig
from transformers.utils import logging

from .towers import check_whisper_features, copy_matching_state, update_with_weights

logger = logging.get_logger(__name__)

#: Where a model that transcribes saves the two tokenizers it needs (inside its own folder).
TRANSCRIPTION_FOLDER = "transcription"


@strict
class SpeechRecognizerConfig(PreTrainedConfig):
    r"""
    Settings of the speech recogniser: a frozen copy of the pretrained Whisper (encoder and decoder) on the audio
    tower's window, decoding greedily.

    Args:
        max_new_tokens (`int`, defaults to 24): longest transcript, in Whisper tokens.
        repetition_penalty (`float`, defaults to 1.5): stops Whisper's repetition loops on a short window.
        generation_config (`dict`, *optional*): the Whisper checkpoint's generation config (special and suppressed
            tokens), recorded by `from_towers`.
        text_max_length (`int`, defaults to 64): the transcript is truncated to this many text-tower tokens, as the
            processor truncates `transcripts=`.
    """

    model_type = "speech_recognizer"

    max_new_tokens: int = 24
    repetition_penalty: float = 1.5
    generation_config: dict | None = None
    text_max_length: int = 64

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.max_new_tokens < 1:
            raise ValueError(
                f"SpeechRecognizerConfig.max_new_tokens must be >= 1, got {self.max_new_tokens}."
            )
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"SpeechRecognizerConfig.repetition_penalty must be > 0, got {self.repetition_penalty}."
            )
        if self.text_max_length < 1:
            raise ValueError(
                f"SpeechRecognizerConfig.text_max_length must be >= 1, got {self.text_max_length}."
            )


def whisper_generation_config(name_or_path: str | os.PathLike) -> dict:
    """The generation config of a full Whisper checkpoint, which the recogniser decodes with."""
    try:
        return GenerationConfig.from_pretrained(name_or_path).to_dict()
    except OSError as error:
        raise ValueError(
            f"Transcribing needs the Whisper checkpoint's generation_config.json, which {name_or_path} lacks; save the "
            "full WhisperForConditionalGeneration checkpoint there."
        ) from error


def build_speech_recognizer(audio_config: PreTrainedConfig, config: SpeechRecognizerConfig) -> nn.Module:
    """A `WhisperForConditionalGeneration` with the audio tower's config (same window), random weights, frozen."""
    from transformers import WhisperForConditionalGeneration

    if audio_config.model_type != "whisper":
        raise ValueError(
            "A speech recogniser needs a Whisper audio tower (its decoder transcribes the clips); the audio tower is "
            f"{audio_config.model_type!r}. Drop speech_recognizer_config."
        )
    whisper_config = copy.deepcopy(audio_config)
    whisper_config.is_encoder_decoder = True
    recognizer = WhisperForConditionalGeneration(whisper_config)
    if config.generation_config:
        recognizer.generation_config = GenerationConfig.from_dict(config.generation_config)
    recognizer.requires_grad_(False)
    return recognizer.eval()


def load_pretrained_recognizer_state(recognizer: nn.Module, name_or_path: str, **kwargs) -> None:
    """Load a full Whisper checkpoint (encoder and decoder) into the recogniser, strictly, slicing the encoder
    positions to the recogniser's window."""
    from transformers import WhisperForConditionalGeneration

    pretrained = WhisperForConditionalGeneration.from_pretrained(name_or_path, **kwargs)
    copy_matching_state(recognizer, pretrained.state_dict(), name_or_path, "audio")


@contextlib.contextmanager
def quiet_generation_logs():
    """Whisper's `generate` logs, on every call, notes about settings it fills in itself (suppressed tokens, its
    `max_length` next to `max_new_tokens`, the decoder's attention mask); silence them for one call."""
    loggers = [
        logging.get_logger(name)
        for name in ("transformers.generation.utils", "transformers.models.whisper.generation_whisper")
    ]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


class TranscribingMixin:
    """
    For a `PreTrainedModel` with a frozen `speech_recognizer` (see [`build_speech_recognizer`]), its
    `config.speech_recognizer_config`, an `audio_config` and a text tower. Gives the model `transcribe(...)` (the
    text heard in each clip) and `transcript_inputs(...)` (that text as text-tower tokens), which the model uses when
    audio comes without transcripts.

    The two tokenizers involved (Whisper's, to read the recogniser's ids; the text tower's, to tokenize the text)
    are saved by `save_pretrained` under `transcription/` in the model's folder and found again from there, or from
    the towers the config names (`audio_model_name_or_path`, `text_model_name_or_path`), or set with
    [`set_transcription_tokenizers`].
    """

    _transcription_tokenizers: tuple | None = None

    def set_transcription_tokenizers(self, recognizer_tokenizer, text_tokenizer) -> None:
        """Set the Whisper tokenizer (decodes the recogniser's ids) and the text tower's tokenizer."""
        self._transcription_tokenizers = (recognizer_tokenizer, text_tokenizer)

    def transcription_tokenizers(self) -> tuple:
        """`(recognizer_tokenizer, text_tokenizer)`, loaded on first use."""
        if self._transcription_tokenizers is None:
            from transformers import AutoTokenizer

            candidates = []
            if self.config.name_or_path:  # the folder or Hub repo the model was loaded from
                candidates.append(
                    (
                        self.config.name_or_path,
                        f"{TRANSCRIPTION_FOLDER}/recognizer",
                        f"{TRANSCRIPTION_FOLDER}/text",
                    )
                )
            if self.config.audio_model_name_or_path and self.config.text_model_name_or_path:
                candidates.append(
                    (None, self.config.audio_model_name_or_path, self.config.text_model_name_or_path)
                )
            problems = []
            for root, recognizer, text in candidates:
                try:
                    if root is None:
                        loaded = (
                            AutoTokenizer.from_pretrained(recognizer),
                            AutoTokenizer.from_pretrained(text),
                        )
                    else:
                        loaded = (
                            AutoTokenizer.from_pretrained(root, subfolder=recognizer),
                            AutoTokenizer.from_pretrained(root, subfolder=text),
                        )
                except (OSError, ValueError) as error:
                    problems.append(f"{root or ''} {recognizer} / {text}: {error}")
                    continue
                self._transcription_tokenizers = loaded
                break
            else:
                raise ValueError(
                    "This model transcribes its audio but cannot find the Whisper and text tokenizers (tried: "
                    f"{problems or 'nothing: the model was neither loaded from a folder nor built from towers'}). "
                    "Call `model.set_transcription_tokenizers(whisper_tokenizer, text_tokenizer)`."
                )
        return self._transcription_tokenizers

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if getattr(self, "speech_recognizer", None) is None or not kwargs.get("is_main_process", True):
            return
        try:
            recognizer_tokenizer, text_tokenizer = self.transcription_tokenizers()
        except ValueError as error:
            logger.warning(
                f"Saved without the transcription tokenizers, so the reloaded model cannot transcribe: {error}"
            )
            return
        folder = Path(save_directory) / TRANSCRIPTION_FOLDER
        recognizer_tokenizer.save_pretrained(folder / "recognizer")
        text_tokenizer.save_pretrained(folder / "text")

    def recognizer_fingerprint(self) -> str:
        """A digest of what decides the transcripts: the recogniser's weights and its decoding settings."""
        if getattr(self, "_recognizer_fingerprint", None) is None:
            import hashlib

            digest = hashlib.sha256(self.config.speech_recognizer_config.to_json_string().encode())
            update_with_weights(digest, [self.speech_recognizer])
            self._recognizer_fingerprint = digest.hexdigest()[:24]
        return self._recognizer_fingerprint

    @torch.no_grad()
    def transcribe(
        self,
        input_features: torch.Tensor,
        audio_attention_mask: torch.Tensor | None = None,
        **generate_kwargs,
    ) -> list[str]:
        """
        What the frozen speech recogniser hears in each clip: greedy Whisper transcripts of the log-mel
        `input_features` (the processor's output; Whisper reads its fixed window whole, so `audio_attention_mask` is
        accepted and not needed).

        Example:
        ```python
        >>> model.transcribe(**processor(audio=waves, sampling_rate=16000))
        ['A cup of coffee.', 'Seven red apples.']
        ```"""
        ids = self.transcribe_ids(input_features, **generate_kwargs)
        recognizer_tokenizer, _ = self.transcription_tokenizers()
        return [text.strip() for text in recognizer_tokenizer.batch_decode(ids, skip_special_tokens=True)]

    @torch.no_grad()
    def transcribe_ids(self, input_features: torch.Tensor, **generate_kwargs) -> torch.LongTensor:
        """The recogniser's Whisper token ids `(batch_size, length)` (see [`transcribe`])."""
        if getattr(self, "speech_recognizer", None) is None:
            raise ValueError(
                "This model has no speech recogniser (config.speech_recognizer_config is None); its audio embedding "
                "does not use transcripts."
            )
        check_whisper_features(self.config.audio_config, input_features)
        settings = self.config.speech_recognizer_config
        generation_config = copy.deepcopy(self.speech_recognizer.generation_config)
        generation_config.update(
            max_new_tokens=settings.max_new_tokens,
            max_length=None,
            repetition_penalty=settings.repetition_penalty,
            do_sample=False,
            num_beams=1,
        )
        generation_config.update(**generate_kwargs)
        with quiet_generation_logs():
            return self.speech_recognizer.generate(
                input_features=input_features.to(self.speech_recognizer.dtype),
                generation_config=generation_config,
            )

    def transcript_inputs(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The transcripts of the clips as text-tower `(input_ids, attention_mask)`, tokenized as the processor
        tokenizes `transcripts=` (padded to the longest, truncated to `text_max_length`)."""
        _, text_tokenizer = self.transcription_tokenizers()
        tokens = text_tokenizer(
            self.transcribe(input_features),
            padding=True,
            truncation=True,
            max_length=self.config.speech_recognizer_config.text_max_length,
            return_tensors="pt",
        )
        device = input_features.device
        return tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
