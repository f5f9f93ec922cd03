"""The generator family (gated cross-attention over a frozen decoder): the shared tester mixin on the base model and
the generator, for images and audio, and the properties that make it Flamingo: zero-initialised gates leave the
pretrained decoder's output unchanged, `generate()` with and without the cache gives the same tokens, a batch
generates what its rows generate alone, and any causal LM checkpoint (Llama, GPT-2) loads as the decoder."""

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from modeling.gated_xattn import GatedXAttnConfig, GatedXAttnForConditionalGeneration, GatedXAttnModel
from tests.modeling_common import ModelTesterMixin
from tests.tiny import (
    AUDIO_FRAMES,
    IMAGE_SIZE,
    MEL_BINS,
    tiny_audio_config,
    tiny_decoder_config,
    tiny_gated_xattn_config,
    tiny_image_config,
)


def generator_inputs(config, batch_size=4, seed=0, media="image", labels=True):
    """Left-padded prompts with a target (labels on the last 3 tokens of each row) and one image or clip per row."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, config.text_config.vocab_size, (batch_size, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0  # one shorter, left-padded row
    input_ids = input_ids.masked_fill(attention_mask == 0, config.text_config.pad_token_id)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels:
        inputs["labels"] = torch.full_like(input_ids, -100)
        inputs["labels"][:, -3:] = input_ids[:, -3:]
    if media == "image":
        inputs["pixel_values"] = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    else:
        inputs["input_values"] = torch.randn(batch_size, AUDIO_FRAMES, MEL_BINS, generator=generator)
    return inputs


def open_gates(model, value=1.0):
    """Set every gate to `value` (the trained state: tanh(1) = 0.76), so the media change the decoder's output."""
    base = model.model if isinstance(model, GatedXAttnForConditionalGeneration) else model
    with torch.no_grad():
        for block in base.gated_cross_attention.blocks.values():
            block.attention_gate.fill_(value)
            block.ffn_gate.fill_(value)
    return model


def pretrained_like(model):
    """Word embeddings of a trained decoder's scale: at the initialiser's 0.02 the tied output layer cannot give any
    token more than ~0.6 of logit, so no trainable module could lower the loss much (seen: 20 steps, 5.72 -> 5.28)."""
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0, 0.25, generator=torch.Generator().manual_seed(3))
    return model


TINY_GPT2 = dict(vocab_size=300, n_embd=32, n_layer=4, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2,
                 pad_token_id=2)  # fmt: skip


def varied_generator(seed=0, **overrides):
    """A generator whose next token depends on the context and the media at every step: a random decoder at the
    initialiser's scale repeats its first generated token, which would hide a step that lost the image."""
    torch.manual_seed(seed)
    config = tiny_gated_xattn_config(**overrides)
    model = pretrained_like(open_gates(GatedXAttnForConditionalGeneration(config).eval()))
    with torch.no_grad():
        for name, parameter in model.model.language_model.named_parameters():
            if parameter.ndim == 2 and "embed" not in name:
                parameter.normal_(0, 0.3)
        for block in model.model.gated_cross_attention.blocks.values():
            block.attention.o_proj.weight.normal_(0, 1.0)
    return model


class GeneratorTesterMixin(ModelTesterMixin):
    media = "image"
    modalities = ("text", "image")
    training_learning_rate = 1e-2

    def get_config(self, **overrides):
        return tiny_gated_xattn_config(**overrides)

    def _model(self, config=None):
        model = open_gates(super()._model(config))  # with closed gates every media input would be invisible
        return pretrained_like(model)

    def get_inputs(self, config, batch_size=4, seed=0):
        return generator_inputs(config, batch_size, seed, self.media)

    def comparable_outputs(self, outputs, inputs):
        """The outputs at real tokens: a left-padding position attends to no key, and what it holds then depends on
        the kernel (eager and SDPA differ there by ~2), as in any decoder; no real token reads it."""
        mask = inputs["attention_mask"].bool()
        for key, value in outputs.items():
            if value.ndim >= 2 and value.shape[:2] == mask.shape:
                outputs[key] = value.masked_fill(~mask.view(*mask.shape, *[1] * (value.ndim - 2)), 0.0)
        return outputs

    def loss_for_gradients(self, model, inputs):
        return model(**inputs).loss

    @property
    def parameters_without_gradient(self):
        unused = "audio" if self.media == "image" else "image"
        prefix = "model." if self.model_class is GatedXAttnForConditionalGeneration else ""
        return {
            f"{prefix}{unused}_projection.weight": f"a batch of {self.media} rows never reads the {unused} tower",
            f"{prefix}{unused}_projection.bias": "idem",
        }

    def test_unknown_keyword_arguments_are_refused(self):
        model = self._model()
        inputs = self.get_inputs(model.config, self.batch_size)
        name = "pixel_values" if self.media == "image" else "input_values"
        misspelt = {(name[:-1] + "z" if k == name else k): v for k, v in inputs.items()}
        with pytest.raises(TypeError, match=f"{name[:-1]}z.*did you mean '{name}'"):
            model(**misspelt)

    def test_media_change_the_output(self):
        """With open gates the image (or clip) reaches every position; another image gives other states."""
        model = self._model()
        inputs = self.get_inputs(model.config)
        other = self.get_inputs(model.config, seed=1)
        key = "pixel_values" if self.media == "image" else "input_values"
        first = self._outputs(model, inputs)
        second = self._outputs(model, {**inputs, key: other[key]})
        name = "logits" if "logits" in first else "last_hidden_state"
        assert (first[name] - second[name]).abs().amax() > 1e-3


class TestGatedXAttnModelImage(GeneratorTesterMixin):
    model_class = GatedXAttnModel

    def batch_keys(self, config):
        return ["last_hidden_state", "media_latents"]

    def get_inputs(self, config, batch_size=4, seed=0):
        return generator_inputs(config, batch_size, seed, self.media, labels=False)

    def loss_for_gradients(self, model, inputs):
        """The generator's loss computed from the base model's states (through the tied embeddings)."""
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, -3:] = inputs["input_ids"][:, -3:]
        logits = model(**inputs).last_hidden_state @ model.get_input_embeddings().weight.T
        return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())


class TestGatedXAttnForConditionalGenerationImage(GeneratorTesterMixin):
    model_class = GatedXAttnForConditionalGeneration
    auto_class = "AutoModelForImageTextToText"

    def batch_keys(self, config):
        return ["logits", "media_latents"]


class TestGatedXAttnForConditionalGenerationAudio(TestGatedXAttnForConditionalGenerationImage):
    media = "audio"
    modalities = ("text", "audio")


# --------------------------------------------------------------------------------------------- Flamingo properties
def plain_decoder(model: GatedXAttnForConditionalGeneration) -> LlamaForCausalLM:
    """The decoder alone, with the generator's decoder weights."""
    decoder = AutoModelForCausalLM.from_config(model.config.text_config).eval()
    decoder.model.load_state_dict(model.model.language_model.state_dict())
    decoder.tie_weights()
    return decoder


@pytest.mark.parametrize("media", ["image", "audio"])
def test_zero_initialised_gates_leave_the_decoder_output_unchanged(media):
    """An untrained generator is exactly its decoder: whatever the image or clip, the logits equal the plain
    decoder's bit for bit (tanh(0) = 0 multiplies the blocks' output)."""
    torch.manual_seed(0)
    model = GatedXAttnForConditionalGeneration(tiny_gated_xattn_config()).eval()
    for block in model.model.gated_cross_attention.blocks.values():
        assert block.attention_gate.item() == 0.0 and block.ffn_gate.item() == 0.0
    inputs = generator_inputs(model.config, media=media, labels=False)
    with torch.no_grad():
        expected = plain_decoder(model)(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                        position_ids=(inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)).logits  # fmt: skip
        actual = model(**inputs).logits
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    open_gates(model, 1e-3)  # the smallest opening is seen
    with torch.no_grad():
        assert (model(**inputs).logits - expected).abs().amax() > 0


@pytest.mark.parametrize("media", ["image", "audio"])
def test_generate_with_and_without_cache_gives_the_same_tokens(media):
    model = varied_generator()
    inputs = generator_inputs(model.config, media=media, labels=False)
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=2, eos_token_id=None)
    cached = model.generate(**inputs, **kwargs)
    uncached = model.generate(**inputs, **kwargs, use_cache=False)
    assert cached.shape == (4, 9 + 8)
    assert torch.equal(cached, uncached)
    assert len({tuple(row) for row in cached[:, 9:].tolist()}) == 4, "rows generated the same tokens"
    assert all(len(set(row)) > 2 for row in cached[:, 9:].tolist()), "a row repeats one token"
    # the tokens come from the media: other images give other tokens
    key = "pixel_values" if media == "image" else "input_values"
    other = generator_inputs(model.config, seed=5, media=media, labels=False)[key]
    assert not torch.equal(model.generate(**{**inputs, key: other}, **kwargs), cached)


@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_a_left_padded_row_gives_the_states_of_the_row_alone(decoder):
    """Training batches are left-padded too: positions count from each row's first real token (GPT-2's learned
    absolute positions see a shift; rotary positions are relative)."""
    overrides = {"text_config": GPT2Config(**TINY_GPT2)} if decoder == "gpt2" else {}
    model = varied_generator(**overrides)
    inputs = generator_inputs(model.config, labels=False)
    with torch.no_grad():
        padded = model(**inputs).logits[0, 3:]
        alone = model(input_ids=inputs["input_ids"][:1, 3:], pixel_values=inputs["pixel_values"][:1]).logits[
            0
        ]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-4)


def test_a_left_padded_batch_generates_what_each_row_generates_alone():
    model = varied_generator()
    inputs = generator_inputs(model.config, media="image", labels=False)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=2, eos_token_id=None)
    batched = model.generate(**inputs, **kwargs)
    for row in range(4):
        length = int(inputs["attention_mask"][row].sum())
        alone = model.generate(
            input_ids=inputs["input_ids"][row : row + 1, -length:],
            attention_mask=inputs["attention_mask"][row : row + 1, -length:],
            pixel_values=inputs["pixel_values"][row : row + 1],
            **kwargs,
        )
        assert torch.equal(alone[0, -6:], batched[row, -6:]), row


def test_resampler_gives_num_latents_whatever_the_number_of_media_tokens():
    torch.manual_seed(0)
    model = GatedXAttnModel(tiny_gated_xattn_config(num_latents=3)).eval()
    small = model.get_media_latents(pixel_values=torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    clip = model.get_media_latents(input_values=torch.randn(2, AUDIO_FRAMES, MEL_BINS))
    assert small.shape == clip.shape == (2, 3, 32)


def test_cross_attentions_are_returned_per_gated_block():
    torch.manual_seed(0)
    model = open_gates(GatedXAttnForConditionalGeneration(tiny_gated_xattn_config()).eval())
    inputs = generator_inputs(model.config, labels=False)
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
    assert len(output.cross_attentions) == len(model.config.cross_attention_layers) == 2
    weights = output.cross_attentions[0]
    assert weights.shape == (4, 4, 9, 4)  # (batch, heads, text length, latents)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 4, 9))


def test_image_and_audio_together_are_refused():
    model = GatedXAttnForConditionalGeneration(tiny_gated_xattn_config()).eval()
    inputs = generator_inputs(model.config, labels=False)
    inputs["input_values"] = torch.randn(4, AUDIO_FRAMES, MEL_BINS)
    with pytest.raises(ValueError, match="one image or one audio clip per row"):
        model(**inputs)


def test_decoder_and_towers_are_frozen_and_only_new_modules_train():
    model = GatedXAttnForConditionalGeneration(tiny_gated_xattn_config())
    trainable = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"audio_projection", "image_projection", "resampler", "gated_cross_attention"}
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight  # tied as in the decoder


@pytest.mark.parametrize("field,value,message", [
    ("cross_attention_config", {"hidden_size": 64, "num_attention_heads": 4}, "cross_attention_config.hidden_size is 64"),
    ("num_latents", 0, "num_latents must be a positive integer"),
    ("cross_attention_every", 9, "more than the decoder's 4 layers"),
])  # fmt: skip
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        tiny_gated_xattn_config(**{field: value})


def test_a_checkpoint_of_another_model_type_is_refused(tmp_path):
    LlamaForCausalLM(tiny_decoder_config()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a 'llama' model, not a 'gated_xattn' one"):
        GatedXAttnForConditionalGeneration.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------- pretrained decoders
@pytest.mark.parametrize("decoder", ["llama", "gpt2"])
def test_any_causal_lm_checkpoint_becomes_the_decoder(tmp_path, decoder):
    """The seed's path: a config naming a causal LM checkpoint (here tiny random Llama / GPT-2 ones saved in their
    Hub formats) builds the generator on its weights; untrained, it generates exactly what that checkpoint does."""
    torch.manual_seed(0)
    if decoder == "llama":
        checkpoint = LlamaForCausalLM(tiny_decoder_config(tie_word_embeddings=False))
    else:
        checkpoint = GPT2LMHeadModel(GPT2Config(**TINY_GPT2))
    checkpoint.save_pretrained(tmp_path / decoder)
    config = GatedXAttnConfig.from_pretrained_parts(
        text=tmp_path / decoder, audio=tiny_audio_config(), image=tiny_image_config(), num_latents=4,
        cross_attention_every=2, resampler_config={"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1},
        cross_attention_config={"hidden_size": 32, "num_attention_heads": 4},
    )  # fmt: skip
    assert config.text_model_name_or_path == str(tmp_path / decoder)
    model = GatedXAttnForConditionalGeneration.from_encoders_pretrained(config).eval()
    inputs = generator_inputs(config, labels=False)
    inputs["attention_mask"][:] = 1  # GPT-2 reads positions from its own counter: no padding here
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=2, eos_token_id=None)
    expected = checkpoint.eval().generate(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], **kwargs
    )
    assert torch.equal(model.generate(**inputs, **kwargs), expected)
    assert any(name.endswith(("q_proj", "c_attn")) for name in model.lora_target_modules())


def test_calls_on_several_threads_do_not_mix_their_media():
    """Nothing of a call is kept on the model (the media travel as an argument through the decoder): a Space serving
    several requests at once gets each request's own answer."""
    from concurrent.futures import ThreadPoolExecutor

    model = varied_generator()
    requests = [generator_inputs(model.config, batch_size=2, seed=seed, labels=False) for seed in range(8)]
    with torch.no_grad():
        expected = [model(**inputs).logits for inputs in requests]

        def run(inputs):
            return model(**inputs).logits

        with ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(3):
                for got, want in zip(pool.map(run, requests), expected):
                    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_decoder_that_does_not_hand_kwargs_to_its_layers_is_an_error():
    model = GatedXAttnModel(tiny_gated_xattn_config()).eval()
    inputs = generator_inputs(model.config, labels=False)
    original = model.language_model.forward

    def forward_dropping_kwargs(*args, gated_xattn_media=None, **kwargs):
        return original(*args, **kwargs)

    model.language_model.forward = forward_dropping_kwargs
    with pytest.raises(RuntimeError, match="ran 0 of the 2 gated blocks"):
        model(**inputs)
