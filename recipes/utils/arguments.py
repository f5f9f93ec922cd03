"""YAML + command-line argument parsing shared by every recipe (like TRL's `TrlParser`).

    python recipes/train_retrieval.py recipes/configs/cman_stamps.yaml --num_train_epochs 2 --model_config '{"margin": 0.1}'

The YAML file gives the values, flags on the command line override them. `dict` fields take JSON on the command line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from transformers import HfArgumentParser


def parse_recipe_arguments(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple:
    """Parse `dataclass_types` from an optional YAML file (first argument) overridden by `--flags`."""
    parser = HfArgumentParser(dataclass_types)
    for action in parser._actions:
        if action.type is dict:
            action.type = json.loads
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        path = Path(argv.pop(0))
        if not path.is_file():
            raise FileNotFoundError(f"Config file {path} does not exist.")
        values = yaml.safe_load(path.read_text()) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path} sets unknown arguments {unknown}; see `--help` for the accepted ones.")
        for action in parser._actions:
            if action.dest in values:
                action.default = values[action.dest]
                action.required = False
    return parser.parse_args_into_dataclasses(args=argv)
