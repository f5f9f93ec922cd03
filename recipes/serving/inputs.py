"""Reading what a person uploads: images and audio files checked before a model sees them, with errors that name the
file and say what to do (a Space shows them in the page)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

#: Largest image accepted, in pixels (a 40 MP photo; PIL's decompression-bomb limit is ~89 MP).
MAX_IMAGE_PIXELS = 40_000_000
#: Largest upload read at all, in bytes.
MAX_FILE_BYTES = 100 * 1024 * 1024


class QueryError(ValueError):
    """An input that cannot be used as a query; the message is meant for the person who gave it."""


def _name(path: str | os.PathLike) -> str:
    return Path(path).name


def _check_size(path: str | os.PathLike, what: str) -> None:
    if not Path(path).is_file():
        raise QueryError(f"The {what} file {_name(path)!r} was not received; upload it again.")
    size = Path(path).stat().st_size
    if size == 0:
        raise QueryError(f"The {what} file {_name(path)!r} is empty (0 bytes); upload another file.")
    if size > MAX_FILE_BYTES:
        raise QueryError(
            f"The {what} file {_name(path)!r} is {size / 2**20:.0f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB."
        )


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB image from an uploaded file; `QueryError` for a file that is not an image or is too large."""
    _check_size(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            width, height = image.size  # read from the header, before any pixel is decoded
            if width * height > max_pixels:
                raise QueryError(
                    f"The image {_name(path)!r} is {width}×{height} ({width * height / 1e6:.0f} MP); the limit is "
                    f"{max_pixels / 1e6:.0f} MP: scale it down and upload it again."
                )
            image.load()
    except QueryError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise QueryError(f"The image {_name(path)!r} is too large to decode safely ({error}).") from error
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError... for a bad file
        logger.info("Unreadable image %s: %s: %s", path, type(error).__name__, error)
        raise QueryError(
            f"The file {_name(path)!r} is not an image that can be read: upload a PNG, JPEG, WebP, GIF or BMP file."
        ) from error
    return image.convert("RGB")


def load_audio(path: str | os.PathLike, max_seconds: float) -> tuple[np.ndarray, int]:
    """A mono float32 waveform and its sampling rate from an uploaded file (WAV, FLAC, Ogg, MP3...); `QueryError`
    for a file that is not audio, is empty or silent, or is longer than `max_seconds`."""
    import soundfile

    _check_size(path, "audio")
    try:
        info = soundfile.info(str(path))
        frames, rate = info.frames, info.samplerate
    except Exception:
        frames, rate = None, None  # not a format libsndfile reads: decode with FFmpeg below
    if frames is not None and rate and frames / rate > max_seconds:
        raise QueryError(
            f"The audio {_name(path)!r} is {frames / rate:.1f} s long; the limit is {max_seconds:g} s: trim it to "
            "the part to search with."
        )
    try:
        if frames is not None:
            wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            wave = wave.mean(axis=1)
        else:
            from torchcodec.decoders import AudioDecoder

            decoder = AudioDecoder(str(path))
            # A compressed file can hold hours in a few MB: stop at the limit instead of decoding it all.
            samples = decoder.get_samples_played_in_range(0.0, max_seconds + 1.0)
            wave, rate = samples.data.mean(dim=0).numpy().astype(np.float32), samples.sample_rate
            header = decoder.metadata.duration_seconds_from_header
            if header is not None and header > max_seconds:
                raise QueryError(
                    f"The audio {_name(path)!r} is {header:.1f} s long; the limit is {max_seconds:g} s: trim it."
                )
    except QueryError:
        raise
    except Exception as error:
        logger.info("Undecodable audio %s: %s: %s", path, type(error).__name__, error)
        raise QueryError(
            f"The file {_name(path)!r} is not audio that can be decoded: upload a WAV, FLAC, Ogg, MP3 or M4A file, "
            "or record one."
        ) from error
    if wave.size == 0:
        raise QueryError(
            f"The audio {_name(path)!r} holds no samples; record or upload a clip with sound in it."
        )
    if wave.size / rate > max_seconds:
        raise QueryError(
            f"The audio {_name(path)!r} is {wave.size / rate:.1f} s long; the limit is {max_seconds:g} s: trim it."
        )
    if not np.isfinite(wave).all():
        raise QueryError(f"The audio {_name(path)!r} contains invalid samples (NaN or infinity).")
    if np.abs(wave).max() < 1e-4:
        raise QueryError(f"The audio {_name(path)!r} is silent; record or upload a clip with sound in it.")
    return wave, int(rate)
