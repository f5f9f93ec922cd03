"""Behaviour every family of the zoo shares, checked by one mixin (`ModelTesterMixin`; retrieval families add
`RetrievalModelTesterMixin`), as transformers' `ModelTesterMixin`
(tests/test_modeling_common.py of the transformers repository) checks its models. Written for this project; the
checks mirror transformers' where they apply to a multi-tower retrieval model.

A family's test class inherits `ModelTesterMixin` (the matching families) or `RetrievalModelTesterMixin` and provides
`model_class`, `get_config()`, `get_inputs(config, batch_size, seed)` (tensors for every modality it reads) and
`batch_keys(config)` (the outputs compared row by row); `auto_class` names the auto class of the remote-code round
trip. A retrieval family also gives `expected_layers(config, modality)` (how many attention layers
`get_<modality>_features(output_attentions=True)` reports).

| transformers check | here |
|---|---|
| test_save_load, test_can_use_safetensors, test_load_save_without_tied_weights | `test_save_and_reload_gives_identical_outputs` (exact, safetensors only, strict reload) |
| remote-code tests | `test_saved_folder_carries_auto_map_and_code`, `test_remote_code_loads_in_a_clean_process` |
| test_determinism | `test_determinism` |
| test_batching_equivalence | `test_batching_equivalence` (every embedding row, 1e-5) |
| test_model_outputs_equivalence | `test_model_outputs_equivalence` (also with hidden states and attentions) |
| test_get_{text,image,audio}_features_output / _hidden_states / _attentions | `test_get_features_*` |
| test_attention_outputs, test_hidden_states_output, test_retain_grad_hidden_states_attentions | opted out, as CLIP opts out: a retrieval model makes one pass per modality, not one stack; the per-modality checks above cover them |
| test_eager_matches_sdpa_inference, test_can_set_attention_dynamically, test_config_attn_implementation_setter | `test_sdpa_matches_eager_attention` (counts the kernel calls, so both sides must really differ), `test_can_set_attention_dynamically` |
| test_internal_model_config_and_subconfig_are_same | `test_sub_models_share_the_config_objects` |
| test_can_init_all_missing_weights, test_init_weights_can_init_buffers | `test_init_weights_recreates_every_parameter_and_buffer` |
| test_training, test_training_gradient_checkpointing*, test_gradient_checkpointing_enable_disable | `test_loss_decreases_on_a_tiny_batch`, `test_gradient_checkpointing_gives_the_same_gradients`, `test_every_trainable_parameter_gets_a_gradient` |
| test_model_get_set_embeddings, test_model_main_input_name, test_model_is_small | the same names |
| (none: transformers ignores them) unknown keyword arguments | `test_unknown_keyword_arguments_are_refused` |
| PEFT | `test_lora_trains_only_adapters_and_new_modules_and_merges_exactly` |
| test_multi_gpu_data_parallel_forward | `test_ddp_gathers_negatives_like_one_process` (2 gloo processes vs 1) |
| test_resize_tokens_embeddings, test_inputs_embeds | opted out: the towers are frozen pretrained encoders whose vocabulary a retrieval model does not own; the text tower takes `input_ids` |
| test_feed_forward_chunking | opted out: no chunked feed-forward (`chunk_size_feed_forward` is not read) |
| torchscript, torch.fx, head masking and pruning | opted out: removed from transformers 5 |
| flash-attention, multi-GPU and disk-offload tests | opted out here (CPU machine, `_supports_flash_attn = False`); `gpu`-marked tests cover devices |
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers.utils import ModelOutput

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_INPUTS = {
    "text": ("input_ids", "attention_mask"),
    "audio": ("input_features", "input_values", "audio_attention_mask", "transcript_input_ids", "transcript_attention_mask"),
    "image": ("pixel_values",),
}  # fmt: skip


def tensor_outputs(output: ModelOutput) -> dict[str, torch.Tensor]:
    return {
        key: value.detach().contiguous() for key, value in output.items() if isinstance(value, torch.Tensor)
    }


def flatten(value) -> list[torch.Tensor]:
    """Every tensor of a (nested) output, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, ModelOutput):
        value = value.to_tuple()
    if isinstance(value, tuple | list):
        return [t for item in value for t in flatten(item)]
    return []


@contextlib.contextmanager
def counting_attention_calls():
    """Count the calls of transformers' SDPA attention kernel (every layer dispatching through
    `ALL_ATTENTION_FUNCTIONS`), so a test can tell which kernel really ran."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    original = ALL_ATTENTION_FUNCTIONS["sdpa"]
    calls = {"sdpa": 0}

    def counted(*args, **kwargs):
        calls["sdpa"] += 1
        return original(*args, **kwargs)

    ALL_ATTENTION_FUNCTIONS["sdpa"] = counted
    try:
        yield calls
    finally:
        del ALL_ATTENTION_FUNCTIONS["sdpa"]


@contextlib.contextmanager
def seeded_weight_init(seed: int = 42):
    """Seed the RNG before every module `_initialize_weights` initialises (as transformers' own init test does), so
    two constructions initialise each module alike whatever else drew random numbers in between."""
    from transformers import PreTrainedModel

    original = PreTrainedModel._initialize_weights

    def seeded(self, module, *args, **kwargs):
        torch.manual_seed(seed)
        return original(self, module, *args, **kwargs)

    PreTrainedModel._initialize_weights = seeded
    try:
        yield
    finally:
        PreTrainedModel._initialize_weights = original


class ModelTesterMixin:
    model_class: type
    #: The auto class that loads a saved folder of `model_class` (remote code).
    auto_class: str = "AutoModel"
    modalities: tuple[str, ...] = ("text", "audio", "image")
    forward_kwargs: dict = {}
    batch_size: int = 4
    #: Learning rate of `test_loss_decreases_on_a_tiny_batch`, and the share of the first loss that 20 AdamW steps
    #: on one batch must get below.
    training_learning_rate: float = 1e-3
    training_loss_ratio: float = 0.5
    #: Parameters that legitimately get no gradient from the loss (with the reason).
    parameters_without_gradient: dict[str, str] = {}

    def get_config(self):
        raise NotImplementedError

    def get_inputs(self, config, batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------- helpers
    def _model(self, config=None):
        torch.manual_seed(0)
        return self.model_class(config or self.get_config()).eval()

    def _outputs(self, model, inputs, **kwargs) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.comparable_outputs(
                tensor_outputs(model(**inputs, **self.forward_kwargs, **kwargs)), inputs
            )

    def comparable_outputs(self, outputs: dict[str, torch.Tensor], inputs) -> dict[str, torch.Tensor]:
        """The outputs the tests compare (a family whose outputs hold undefined positions masks them here)."""
        return outputs

    def _modality_inputs(self, inputs, modality) -> dict[str, torch.Tensor]:
        return {k: v for k, v in inputs.items() if k in FEATURE_INPUTS[modality]}

    # --------------------------------------------------------------------------------------------- outputs
    def test_determinism(self):
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        first, second = self._outputs(model, inputs), self._outputs(model, inputs)
        for key, value in first.items():
            torch.testing.assert_close(second[key], value, rtol=0, atol=1e-5, msg=key)

    def batch_keys(self, config) -> list[str]:
        """The outputs whose rows `test_batching_equivalence` compares one by one."""
        raise NotImplementedError

    def test_batching_equivalence(self):
        """Each row of a batch comes out as it does alone (padding and the batch do not leak into a row)."""
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        batched = self._outputs(model, inputs)
        for row in range(self.batch_size):
            single = self._outputs(model, {k: v[row : row + 1] for k, v in inputs.items()})
            for key in self.batch_keys(model.config):
                torch.testing.assert_close(
                    single[key][0], batched[key][row], rtol=0, atol=1e-5, msg=f"{key} row {row}"
                )

    def test_model_outputs_equivalence(self):
        """`return_dict=False` gives the tuple `to_tuple()` gives (nested outputs flattened the same way), also with
        hidden states and attentions."""
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        for flags in ({}, {"output_hidden_states": True}, {"output_attentions": True},
                      {"output_hidden_states": True, "output_attentions": True}):  # fmt: skip
            with torch.no_grad():
                as_dict = model(**inputs, **self.forward_kwargs, **flags, return_dict=True)
                as_tuple = model(**inputs, **self.forward_kwargs, **flags, return_dict=False)
            assert isinstance(as_tuple, tuple)
            expected, actual = flatten(as_dict.to_tuple()), flatten(as_tuple)
            assert len(expected) == len(actual), flags
            for a, b in zip(expected, actual, strict=True):
                torch.testing.assert_close(b, a, rtol=0, atol=1e-5)

    # ------------------------------------------------------------------------------- get_<modality>_features
    # -------------------------------------------------------------------------------------------- attention
    def test_sdpa_matches_eager_attention(self):
        """The same weights on the eager and the SDPA kernels: the kernel calls are counted (eager must make none,
        SDPA some), then every output is compared."""
        config = self.get_config()
        inputs = self.get_inputs(config, self.batch_size)
        eager = self._model(config)
        eager.set_attn_implementation("eager")
        sdpa = self._model(self.get_config())  # its own config objects: setting SDPA must not reach `eager`
        sdpa.load_state_dict(eager.state_dict())
        sdpa.set_attn_implementation("sdpa")
        with counting_attention_calls() as calls:
            expected = self._outputs(eager, inputs)
        assert calls["sdpa"] == 0, "the eager model ran SDPA kernels"
        with counting_attention_calls() as calls:
            actual = self._outputs(sdpa, inputs)
        assert calls["sdpa"] > 0, "the SDPA model never reached the SDPA kernel"
        assert actual.keys() == expected.keys()
        for key, value in actual.items():
            torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5, msg=key)

    def test_can_set_attention_dynamically(self):
        model = self._model()
        model.set_attn_implementation("eager")
        configs = [model.config] + [module.config for module in model.modules() if hasattr(module, "_can_set_attn_implementation") and module.config is not model.config]  # fmt: skip
        assert all(config._attn_implementation == "eager" for config in configs)
        model.set_attn_implementation("sdpa")
        assert all(config._attn_implementation == "sdpa" for config in configs)
        with pytest.raises(ValueError, match="foo"):
            model.set_attn_implementation("foo")
        assert model.config._attn_implementation == "sdpa"

    def test_sub_models_share_the_config_objects(self):
        """Every sub-model holds the very config object the top config holds (so a change reaches it)."""
        model = self._model()
        sub_configs = {
            id(getattr(model.config, key))
            for key in model.config.sub_configs
            if getattr(model.config, key) is not None
        } | {
            id(model.config)
        }  # a base model inside a head model holds the top config itself (as Llava's does)
        for name, module in model.named_modules():
            if (
                name
                and hasattr(module, "_can_set_attn_implementation")
                and type(module).__module__.startswith(("modeling.", "transformers_modules"))
            ):
                assert id(module.config) in sub_configs, name

    # ------------------------------------------------------------------------------------------------ saving
    def test_save_and_reload_gives_identical_outputs(self, tmp_path):
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        expected = self._outputs(model, inputs)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
        assert not list(tmp_path.glob("*.bin")), "weights must be saved as safetensors only"
        reloaded = self.model_class.from_pretrained(tmp_path).eval()
        for key, value in self._outputs(reloaded, inputs).items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)

    def test_saved_folder_carries_auto_map_and_code(self, tmp_path):
        model = self._model()
        model.save_pretrained(tmp_path)
        config = json.loads((tmp_path / "config.json").read_text())
        assert "AutoModel" in config["auto_map"] and "AutoConfig" in config["auto_map"]
        for reference in config["auto_map"].values():
            assert (tmp_path / f"{reference.split('.')[0]}.py").exists()

    def test_remote_code_loads_in_a_clean_process(self, tmp_path):
        """`<auto_class>.from_pretrained(dir, trust_remote_code=True)` from another directory, `modeling` unimportable:
        the same class, the same outputs."""
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        expected = self._outputs(model, inputs)
        model_dir = tmp_path / "saved"
        model.save_pretrained(model_dir)
        save_file({k: v.contiguous() for k, v in inputs.items()}, tmp_path / "in.st")
        script = textwrap.dedent(
            f"""
            import sys, json
            sys.modules["modeling"] = None  # the repository's package must not be importable
            sys.modules["recipes"] = None
            import torch
            from safetensors.torch import load_file, save_file
            import transformers
            auto_class = getattr(transformers, {self.auto_class!r})
            model = auto_class.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            assert type(model).__name__ == {self.model_class.__name__!r}, type(model).__name__
            with torch.no_grad():
                out = model(**load_file({str(tmp_path / "in.st")!r}), **json.loads({json.dumps(self.forward_kwargs)!r}))
            save_file({{k: v.contiguous() for k, v in out.items() if isinstance(v, torch.Tensor)}}, "out.st")
            """
        )
        env = {**os.environ, "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        reloaded = self.comparable_outputs(load_file(tmp_path / "out.st"), inputs)
        assert set(reloaded) == set(expected)
        for key, value in reloaded.items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)

    # ------------------------------------------------------------------------------------------ initialisation
    def test_init_weights_recreates_every_parameter_and_buffer(self):
        """`_init_weights` knows every parameter and buffer: a model built on the meta device, materialised with NaN
        and initialised with `init_weights()` equals one built normally (each module's init seeded alike)."""
        config = self.get_config()
        with seeded_weight_init():
            reference = self.model_class(config)
        with torch.device("meta"):
            model = self.model_class(config)
        model.to_empty(device="cpu")
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data.fill_(float("nan"))  # anything init_weights leaves alone stays NaN
        with seeded_weight_init():
            model.init_weights()
        expected = dict(reference.named_buffers()) | dict(reference.named_parameters())
        actual = dict(model.named_buffers()) | dict(model.named_parameters())
        assert actual.keys() == expected.keys()
        for name, value in actual.items():
            assert not (value.is_floating_point() and value.isnan().any()), f"{name} was never initialised"
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)

    # ------------------------------------------------------------------------------------------------ training
    def loss_for_gradients(self, model, inputs) -> torch.Tensor:
        return model(**inputs, return_loss=True).loss

    def get_training_config(self):
        """The config `test_loss_decreases_on_a_tiny_batch` trains (the family's default loss unless overridden)."""
        return self.get_config()

    def test_loss_decreases_on_a_tiny_batch(self):
        config = self.get_training_config()
        model = self._model(config).train()
        inputs = self.get_inputs(config, 8)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=self.training_learning_rate
        )
        losses = []
        for _ in range(20):
            loss = self.loss_for_gradients(model, inputs)
            losses.append(loss.item())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        assert all(torch.isfinite(torch.tensor(losses)))
        assert losses[-1] < self.training_loss_ratio * losses[0], losses

    def test_every_trainable_parameter_gets_a_gradient(self):
        """After one optimizer step (a zero-initialised output layer passes no gradient back until it has moved), every
        trainable parameter gets a gradient from the loss."""
        model = self._model().train()
        inputs = self.get_inputs(model.config, self.batch_size)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        self.loss_for_gradients(model, inputs).backward()
        optimizer.step()
        optimizer.zero_grad()
        self.loss_for_gradients(model, inputs).backward()
        missing = [
            name for name, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not p.grad.abs().sum()) and name not in self.parameters_without_gradient
        ]  # fmt: skip
        assert not missing, missing

    def test_gradient_checkpointing_gives_the_same_gradients(self):
        config = self.get_config()
        inputs = self.get_inputs(config, self.batch_size)
        grads = []
        for checkpointing in (False, True):
            model = self._model(config).train()
            if checkpointing:
                model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
                assert model.is_activation_checkpointing
            self.loss_for_gradients(model, inputs).backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0] and grads[0].keys() == grads[1].keys()
        for name, grad in grads[0].items():
            torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)

    def test_lora_trains_only_adapters_and_new_modules_and_merges_exactly(self, tmp_path):
        config = self.get_config()
        model = self._model(config)
        inputs = self.get_inputs(config, self.batch_size)
        peft_model = model.apply_lora(r=4, alpha=8, dropout=0.0)
        trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
        assert any("lora_A" in n for n in trainable)
        for name in trainable:
            assert (
                "lora_" in name
                or "modules_to_save" in name
                or name.split(".")[-1] in ("logit_scale", "logit_bias")
            ), name
        for module in model.trainable_modules():
            assert any(f"{module}.modules_to_save" in n for n in trainable), module
        with torch.no_grad():  # make LoRA non-trivial
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.5)
        peft_model.eval()
        expected = self._outputs(peft_model, inputs)
        merged = peft_model.merge_and_unload()
        assert isinstance(merged, self.model_class) and not any(
            "lora_" in n for n, _ in merged.named_parameters()
        )
        for key, value in self._outputs(merged, inputs).items():
            torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5, msg=key)

    # ---------------------------------------------------------------------------------------------- interface
    def test_unknown_keyword_arguments_are_refused(self):
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        name = "pixel_values" if "pixel_values" in inputs else "input_values"
        misspelt = {(name[:-1] + "z" if k == name else k): v for k, v in inputs.items()}
        with pytest.raises(TypeError, match=f"{name[:-1]}z.*did you mean '{name}'"):
            model(**misspelt)

    def test_model_get_set_embeddings(self):
        model = self._model()
        embeddings = model.get_input_embeddings()
        assert isinstance(embeddings, torch.nn.Embedding)
        model.set_input_embeddings(torch.nn.Embedding(10, embeddings.embedding_dim))
        assert model.get_input_embeddings().num_embeddings == 10

    def test_model_main_input_name(self):
        first = list(inspect.signature(self.model_class.forward).parameters)[1]
        assert first == self.model_class.main_input_name

    def test_model_is_small(self):
        assert self._model().num_parameters() < 1_000_000


class RetrievalModelTesterMixin(ModelTesterMixin):
    """The checks of a retrieval family: unit embeddings per modality, CLIP-like logits, composed queries,
    `get_<modality>_features`, and negatives gathered across DDP ranks."""

    def batch_keys(self, config) -> list[str]:
        return [f"{modality}_embeds" for modality in self.modalities]

    def expected_layers(self, config, modality: str) -> int:
        raise NotImplementedError

    def test_forward_returns_a_model_output_with_unit_embeddings(self):
        model = self._model()
        output = model(**self.get_inputs(model.config, self.batch_size), **self.forward_kwargs)
        assert isinstance(output, ModelOutput)
        assert all(torch.isfinite(v).all() for v in tensor_outputs(output).values())
        for modality in self.modalities:
            embeds = output[f"{modality}_embeds"]
            assert embeds.shape == (self.batch_size, model.config.projection_dim)
            torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(self.batch_size))

    def test_logits_are_temperature_scaled_cosines(self):
        model = self._model()
        output = model(**self.get_inputs(model.config, self.batch_size), **self.forward_kwargs)
        scale = model.inverse_temperature()
        assert abs(float(scale.detach()) - 1 / model.config.temperature) < 1e-3 * float(scale.detach())
        pairs = {"text": "image", "image": "text", "audio": "text"}
        bias = getattr(model, "logit_bias", None)
        for modality, partner in pairs.items():
            if modality in self.modalities and partner in self.modalities:
                expected = output[f"{modality}_embeds"] @ output[f"{partner}_embeds"].T * scale
                if bias is not None:
                    expected = expected + bias
                torch.testing.assert_close(output[f"logits_per_{modality}"], expected)

    def test_combinations_in_forward_are_the_composed_queries_of_encode(self):
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        pairs = [
            c
            for c in (("text", "audio"), ("audio", "image"), ("text", "image"))
            if set(c) <= set(self.modalities)
        ]
        with torch.no_grad():
            output = model(**inputs, combinations=pairs)
            encoded = model.encode(pairs, **inputs)
        assert set(output.combined_embeds) == {"+".join(c) for c in pairs}
        for pair in pairs:
            torch.testing.assert_close(
                output.combined_embeds["+".join(pair)], encoded[pair], rtol=0, atol=1e-6
            )

    @pytest.mark.parametrize("return_dict", [True, False, None])
    def test_get_features_output(self, return_dict):
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        for modality in self.modalities:
            method = getattr(model, f"get_{modality}_features")
            kwargs = {} if return_dict is None else {"return_dict": return_dict}
            with torch.no_grad():
                output = method(**self._modality_inputs(inputs, modality), **kwargs)
            if return_dict is False:
                assert isinstance(output, tuple)
                continue
            assert isinstance(output, ModelOutput) and output.last_hidden_state.shape[0] == self.batch_size
            embeds = output.pooler_output
            assert embeds.shape == (self.batch_size, model.config.projection_dim)
            torch.testing.assert_close(embeds.norm(dim=-1), torch.ones(self.batch_size))
            with torch.no_grad():
                full = model(**inputs, **self.forward_kwargs)
            torch.testing.assert_close(embeds, full[f"{modality}_embeds"], rtol=0, atol=1e-6)

    def test_get_features_hidden_states_and_attentions(self):
        model = self._model()
        model.set_attn_implementation("eager")
        inputs = self.get_inputs(model.config, self.batch_size)
        for modality in self.modalities:
            method = getattr(model, f"get_{modality}_features")
            with torch.no_grad():
                output = method(
                    **self._modality_inputs(inputs, modality),
                    output_hidden_states=True,
                    output_attentions=True,
                )
            layers = self.expected_layers(model.config, modality)
            assert len(output.hidden_states) == layers + 1, modality
            assert len(output.attentions) == layers, modality
            attention = output.attentions[-1]
            assert attention.shape[0] == self.batch_size and attention.shape[-1] == attention.shape[-2]
            torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)), msg=modality)

    def test_ddp_gathers_negatives_like_one_process(self, tmp_path):
        """2 ranks x batch B (negatives gathered from both ranks, with gradients) == 1 process x batch 2B: the same
        loss and the same (rank-averaged) gradients."""
        worker = [
            str(REPO_ROOT / "tests" / "ddp_worker.py"),
            type(self).__module__,
            type(self).__name__,
            str(tmp_path),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
        for command in ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *worker],
                        [sys.executable, *worker]):  # fmt: skip
            result = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
            )
            assert result.returncode == 0, result.stderr[-3000:]
        distributed = torch.load(tmp_path / "world2.pt", weights_only=True)
        single = torch.load(tmp_path / "world1.pt", weights_only=True)
        torch.testing.assert_close(distributed["loss"], single["loss"], rtol=1e-5, atol=1e-6)
        assert distributed["grads"].keys() == single["grads"].keys() and single["grads"]
        for name, grad in single["grads"].items():
            torch.testing.assert_close(distributed["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
