"""Behaviour every model family of the zoo shares, checked by one mixin (as transformers' `ModelTesterMixin`).

A family's test class inherits `ModelTesterMixin` and implements `get_config()` and `get_inputs(config)`; the
mixin then checks outputs, save/load, remote-code loading in a clean process, attention kernels and gradient
checkpointing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers.utils import ModelOutput

REPO_ROOT = Path(__file__).resolve().parents[1]


def tensor_outputs(output: ModelOutput) -> dict[str, torch.Tensor]:
    return {
        key: value.detach().contiguous() for key, value in output.items() if isinstance(value, torch.Tensor)
    }


class ModelTesterMixin:
    model_class: type
    forward_kwargs: dict = {}

    def get_config(self):
        raise NotImplementedError

    def get_inputs(self, config) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _model(self, config=None):
        torch.manual_seed(0)
        return self.model_class(config or self.get_config()).eval()

    def _outputs(self, model, inputs) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return tensor_outputs(model(**inputs, **self.forward_kwargs))

    def test_forward_returns_model_output(self):
        model = self._model()
        output = model(**self.get_inputs(model.config), **self.forward_kwargs)
        assert isinstance(output, ModelOutput)
        assert all(torch.isfinite(v).all() for v in tensor_outputs(output).values())

    def test_save_and_reload_gives_identical_outputs(self, tmp_path):
        model = self._model()
        inputs = self.get_inputs(model.config)
        expected = self._outputs(model, inputs)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists()
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
            module = reference.split(".")[0]
            assert (tmp_path / f"{module}.py").exists()

    def test_remote_code_loads_in_a_clean_process(self, tmp_path):
        """`AutoModel.from_pretrained(dir, trust_remote_code=True)` from another directory, `modeling` unimportable."""
        model = self._model()
        inputs = self.get_inputs(model.config)
        expected = self._outputs(model, inputs)
        model_dir = tmp_path / "saved"
        model.save_pretrained(model_dir)
        save_file(
            {k: v.contiguous() for k, v in inputs.items() if isinstance(v, torch.Tensor)}, tmp_path / "in.st"
        )
        flags = {
            k: v for k, v in {**inputs, **self.forward_kwargs}.items() if not isinstance(v, torch.Tensor)
        }
        script = textwrap.dedent(
            f"""
            import sys, json
            sys.modules["modeling"] = None  # the repository's package must not be importable
            sys.modules["recipes"] = None
            import torch
            from safetensors.torch import load_file, save_file
            from transformers import AutoModel
            model = AutoModel.from_pretrained({str(model_dir)!r}, trust_remote_code=True).eval()
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            inputs = load_file({str(tmp_path / "in.st")!r})
            with torch.no_grad():
                out = model(**inputs, **json.loads({json.dumps(flags)!r}))
            save_file({{k: v.contiguous() for k, v in out.items() if isinstance(v, torch.Tensor)}}, "out.st")
            """
        )
        env = {**os.environ, "PYTHONPATH": "", "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        reloaded = load_file(tmp_path / "out.st")
        assert set(reloaded) == set(expected)
        for key, value in reloaded.items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)

    def test_sdpa_matches_eager_attention(self):
        config = self.get_config()
        inputs = self.get_inputs(config)
        torch.manual_seed(0)
        eager = self.model_class(config).eval()
        eager.set_attn_implementation("eager")
        sdpa = self.model_class(config).eval()
        sdpa.load_state_dict(eager.state_dict())
        sdpa.set_attn_implementation("sdpa")
        expected = self._outputs(eager, inputs)
        for key, value in self._outputs(sdpa, inputs).items():
            torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5, msg=key)

    def test_gradient_checkpointing_gives_the_same_gradients(self):
        config = self.get_config()
        inputs = self.get_inputs(config)
        grads = []
        for checkpointing in (False, True):
            model = self._model(config).train()
            if checkpointing:
                model.activation_checkpointing_enable(
                    activation_checkpointing_kwargs={"use_reentrant": False}
                )
            loss = self.loss_for_gradients(model, inputs)
            loss.backward()
            grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert grads[0] and grads[0].keys() == grads[1].keys()
        for name, grad in grads[0].items():
            torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-6, msg=name)

    def loss_for_gradients(self, model, inputs) -> torch.Tensor:
        output = model(**inputs, **self.forward_kwargs)
        tensors = [v for v in output.values() if isinstance(v, torch.Tensor) and v.requires_grad]
        return sum(v.float().sum() for v in tensors)
