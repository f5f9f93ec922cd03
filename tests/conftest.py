import os

# The suite never reaches the Hub: everything it loads is built in code or saved to a temp folder first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Recipe runs (and their subprocesses) keep transcripts and frozen-tower states in a cache of this session only,
# never in the user's ~/.cache/cross-modal-zoo.
if "CROSS_MODAL_ZOO_CACHE" not in os.environ:
    import tempfile

    os.environ["CROSS_MODAL_ZOO_CACHE"] = tempfile.mkdtemp(prefix="cross-modal-zoo-test-cache-")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """`RUN_SLOW=1` runs the tests marked slow too (like transformers' `@slow`)."""
    if os.environ.get("RUN_SLOW", "0").lower() in ("1", "true", "yes"):
        for item in items:
            item.own_markers = [m for m in item.own_markers if m.name != "slow"]
        config.option.markexpr = ""


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tower_dirs(tmp_path_factory):
    """The three offline pretrained towers, converted once per test session from their PyPI packages."""
    from recipes.towers import ensure_towers

    return ensure_towers(tmp_path_factory.mktemp("towers"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """A tiny CMAN trained for one epoch by the recipe (see tests/runs.py), shared by the whole session."""
    from tests.runs import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"))
