"""Processor of the gated cross-attention generator: prompts in the decoder's chat format (left-padded for
`generate()`), caption or answer targets for training, and the image or audio inputs of the towers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature

from .processing import TEXT_KWARGS, CrossModalProcessor

#: What a row is asked when no prompt is given, by media.
DEFAULT_PROMPTS = {"image": "Describe the image.", "audio": "Describe the sound.", "none": "Describe it."}


class GatedXAttnProcessor(CrossModalProcessor):
    r"""
    Wraps the decoder's tokenizer (with its chat template), the audio tower's feature extractor and the image tower's
    image processor.

    `processor(images=..., text=...)` puts each text (a question, or an instruction such as "Describe the image.")
    into one user turn of the tokenizer's chat template with the assistant's turn opened, and pads on the left, as
    `generate()` wants. Without `text=` every row gets the default prompt of its media (`image_prompt`,
    `audio_prompt`). With `targets=` (the captions or answers) each row is the prompt followed by its target and the
    end-of-turn token, and `labels` hold the target tokens (-100 elsewhere): what training needs.

    Args:
        tokenizer: the decoder's tokenizer; it must carry a chat template.
        feature_extractor / image_processor: as [`CrossModalProcessor`].
        max_audio_seconds (`float`, defaults to 60.0): longer clips are refused.
        text_max_length (`int`, defaults to 128): prompts are truncated (from the left) to this many tokens.
        target_max_length (`int`, defaults to 48): targets are truncated to this many tokens (before the end token).
        image_prompt / audio_prompt (`str`): the default prompts.
    """

    def __init__(
        self,
        tokenizer=None,
        feature_extractor=None,
        image_processor=None,
        max_audio_seconds: float = 60.0,
        text_max_length: int = 128,
        target_max_length: int = 48,
        image_prompt: str = DEFAULT_PROMPTS["image"],
        audio_prompt: str = DEFAULT_PROMPTS["audio"],
        **kwargs,
    ):
        self.target_max_length = target_max_length
        self.image_prompt = image_prompt
        self.audio_prompt = audio_prompt
        super().__init__(
            tokenizer,
            feature_extractor,
            image_processor,
            max_audio_seconds=max_audio_seconds,
            text_max_length=text_max_length,
            **kwargs,
        )
        if tokenizer is not None:
            tokenizer.padding_side = "left"
            tokenizer.truncation_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token

    @classmethod
    def from_pretrained_parts(
        cls, text, audio, image, *, audio_window_seconds: float | None = None, **kwargs
    ):
        """Assemble the processor from the decoder's tokenizer (`text`) and the two towers' preprocessing (Hub ids or
        folders), as [`CrossModalProcessor.from_towers`] does; `audio_window_seconds` as the config's."""
        return cls.from_towers(text, audio, image, audio_window_seconds=audio_window_seconds, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "input_features",
            "input_values",
            "audio_attention_mask",
            "pixel_values",
        ]

    # -------------------------------------------------------------------------------------------------- prompts
    def format_prompt(self, text: str) -> str:
        """`text` as one user turn of the decoder's chat template, the assistant's turn opened."""
        if not getattr(self.tokenizer, "chat_template", None):
            return text
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )

    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        audio=None,
        images=None,
        sampling_rate: int | None = None,
        targets: str | Sequence[str] | None = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        """
        Args:
            text: a prompt or a list of prompts (one per image or clip); default: the media's default prompt.
            audio, sampling_rate, images: as [`CrossModalProcessor`] (one image or one clip per row, not both).
            targets: the caption or answer of each row, for training (adds `labels`).
        Returns:
            `BatchFeature` with `input_ids` / `attention_mask` (left-padded), `labels` with `targets=`, and
            `pixel_values` or the audio features.
        """
        if audio is not None and images is not None:
            raise ValueError("Pass one image or one audio clip per row (`images=` or `audio=`), not both.")
        media: dict = {}
        rows = None
        if images is not None:
            media = super().__call__(images=images, return_tensors=return_tensors).data
            rows = len(media["pixel_values"])
        elif audio is not None:
            media = (
                super().__call__(audio=audio, sampling_rate=sampling_rate, return_tensors=return_tensors).data
            )
            rows = len(next(iter(media.values())))
        if text is None:
            if rows is None:
                raise ValueError(f"{type(self).__name__} needs `text=` (prompts), `images=` or `audio=`.")
            default = self.image_prompt if images is not None else self.audio_prompt
            prompts = [default] * rows
        else:
            prompts = self._check_text(text)
            if rows is not None and len(prompts) != rows:
                if len(prompts) == 1:
                    prompts = prompts * rows
                else:
                    raise ValueError(
                        f"Got {len(prompts)} prompts for {rows} images or clips; give one per row."
                    )
        unknown = sorted(set(kwargs) - set(TEXT_KWARGS))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}() got unexpected keyword argument(s) {unknown}; it takes text=, audio=, "
                "images=, sampling_rate=, targets= and return_tensors=."
            )
        data = self.encode_prompts(
            [self.format_prompt(p) for p in prompts], targets, kwargs.get("max_length")
        )
        data.update(media)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def encode_prompts(
        self, prompts: list[str], targets: str | Sequence[str] | None = None, max_length: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenize already formatted prompts (and targets), left-pad, and build `labels` for the targets."""
        max_length = max_length or self.text_max_length
        prompt_ids = [
            self.tokenizer(p, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
            for p in prompts
        ]
        label_rows = [[-100] * len(ids) for ids in prompt_ids]
        if targets is not None:
            answers = self._check_text(targets)
            if len(answers) != len(prompts):
                raise ValueError(
                    f"Got {len(answers)} targets for {len(prompts)} prompts; give one per prompt."
                )
            end = self.end_of_turn_id
            for row, answer in enumerate(answers):
                ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"][: self.target_max_length]
                prompt_ids[row] = prompt_ids[row] + ids + [end]
                label_rows[row] = label_rows[row] + ids + [end]
        length = max(len(ids) for ids in prompt_ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
        labels = torch.full((len(prompts), length), -100, dtype=torch.long)
        for row, ids in enumerate(prompt_ids):  # left padding
            input_ids[row, length - len(ids) :] = torch.tensor(ids)
            attention_mask[row, length - len(ids) :] = 1
            labels[row, length - len(ids) :] = torch.tensor(label_rows[row])
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if targets is not None:
            data["labels"] = labels
        return data

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends the assistant's turn (`generate()` stops on it): the tokenizer's end-of-sequence."""
        return self.tokenizer.eos_token_id

    # ----------------------------------------------------------------------------------------------- chat format
    def apply_chat_template(
        self,
        conversation,
        add_generation_prompt: bool = False,
        continue_final_message: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = None,
        processor_kwargs: dict | None = None,
        **kwargs,
    ):
        """
        Chat messages (one conversation or a list) whose user content may hold `{"type": "image", "image" | "url" |
        "path": ...}` or `{"type": "audio", "audio": waveform | path, "sampling_rate": ...}` items beside the text
        items, as the `image-text-to-text` pipeline passes them. The media are read by the towers (through the gated
        blocks, not as tokens); the text goes through the decoder's chat template.
        """
        conversations = [conversation] if isinstance(conversation[0], dict) else list(conversation)
        prompts, images, audios, rates = [], [], [], []
        for messages in conversations:
            plain = []
            for message in messages:
                content = message["content"]
                if isinstance(content, str):
                    plain.append({"role": message["role"], "content": content})
                    continue
                parts = []
                for item in content:
                    kind = item.get("type")
                    if kind == "text":
                        parts.append(item["text"])
                    elif kind == "image":
                        images.append(_first(item, ("image", "url", "path", "base64")))
                    elif kind == "audio":
                        audios.append(_first(item, ("audio", "url", "path")))
                        rates.append(item.get("sampling_rate"))
                    else:
                        raise ValueError(f"Unsupported content type {kind!r} in a chat message.")
                plain.append({"role": message["role"], "content": " ".join(parts)})
            prompts.append(
                self.tokenizer.apply_chat_template(
                    plain,
                    add_generation_prompt=add_generation_prompt,
                    continue_final_message=continue_final_message,
                    tokenize=False,
                )
            )
        if not tokenize:
            return prompts[0] if isinstance(conversation[0], dict) else prompts
        if images and audios:
            raise ValueError("A batch of chats must hold images or audio clips, not both.")
        for count, kind in ((len(images), "images"), (len(audios), "audio clips")):
            if count and count != len(prompts):
                raise ValueError(
                    f"Got {count} {kind} for {len(prompts)} conversations; give one per conversation."
                )
        data = self.encode_prompts(prompts)
        if images:
            from transformers.image_utils import load_image

            loaded = [load_image(image) if isinstance(image, str) else image for image in images]
            data.update(super().__call__(images=loaded, return_tensors="pt").data)
        if audios:
            waves, rate = _load_audios(audios, rates, self.sampling_rate)
            data.update(super().__call__(audio=waves, sampling_rate=rate, return_tensors="pt").data)
        batch = BatchFeature(data=data, tensor_type=return_tensors or "pt")
        return batch if return_dict else batch["input_ids"]

    def post_process_image_text_to_text(
        self, generated_outputs, skip_special_tokens=True, **kwargs
    ) -> list[str]:
        """Decode generated token ids (a batch, or one row) into text."""
        if isinstance(generated_outputs, torch.Tensor | np.ndarray) and generated_outputs.ndim == 1:
            generated_outputs = generated_outputs[None]
        return self.tokenizer.batch_decode(
            generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs
        )

    def batch_decode(self, *args, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        return self.tokenizer.decode(*args, **kwargs)


def _first(item: dict, keys: tuple[str, ...]):
    for key in keys:
        if item.get(key) is not None:
            return item[key]
    raise ValueError(f"A chat content item of type {item.get('type')!r} has none of the keys {keys}.")


def _load_audios(audios: list, rates: list, target_rate: int) -> tuple[list[np.ndarray], int]:
    """Waveforms at `target_rate`: arrays are taken as given (at their `sampling_rate`, default the target), paths
    are decoded and resampled."""
    from transformers.audio_utils import load_audio

    waves = []
    for audio, rate in zip(audios, rates):
        if isinstance(audio, str):
            waves.append(load_audio(audio, sampling_rate=target_rate))
        elif rate not in (None, target_rate):
            raise ValueError(
                f"An audio item at {rate} Hz: pass waveforms at {target_rate} Hz in a chat (or pass `audio=` and "
                "`sampling_rate=` to the processor, which resamples)."
            )
        else:
            waves.append(np.asarray(audio, dtype=np.float32))
    return waves, target_rate


__all__ = ["GatedXAttnProcessor"]
