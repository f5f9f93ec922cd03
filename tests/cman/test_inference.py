"""Pinned outputs on the real pretrained towers (as transformers' `test_inference` tests pin a checkpoint's output):
a fixed caption, a synthetic chirp and the `chelsea` photograph through MiniLM-L6, the Whisper tiny.en encoder
(5 s window), EfficientNet-Lite0 and a CMAN built on them with seed 0, compared with stored values to 1e-4: with
the late-fusion residual path (the default) and without it (the values pinned before that path existed, which it
leaves unchanged).

A change in the towers' conversion, the processor, the fusion transformer or its initialisation shows here as a
changed number. Regenerate the values only for a change that is meant to alter them, and say so in the commit."""

import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from modeling.cman import CmanConfig, CmanModel, CmanProcessor

TOLERANCE = dict(rtol=0, atol=1e-4)


@pytest.fixture(scope="module", params=[True, False], ids=["residual", "no_residual"])
def pinned(tower_dirs, request):
    towers = (tower_dirs["minilm-l6"], tower_dirs["whisper-tiny-en"], tower_dirs["efficientnet-lite0"])
    torch.manual_seed(0)
    config = CmanConfig.from_towers(
        *towers,
        audio_window_seconds=5.0,
        fusion_encoder_config=dict(
            hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128
        ),
        projection_dim=32,
        audio_token_stride=4,
        late_fusion_residual=request.param,
    )
    model = CmanModel.from_encoders_pretrained(config).eval()
    processor = CmanProcessor.from_towers(*towers, audio_window_seconds=5.0)
    t = np.arange(16000 * 2) / 16000
    chirp = (0.3 * np.sin(2 * np.pi * (220 + 200 * t) * t) * np.exp(-t)).astype(np.float32)
    inputs = processor(
        text=["A dog barks at the red fire truck."],
        audio=[chirp],
        images=[skimage_data.chelsea()],
        sampling_rate=16000,
    )
    return model, inputs, request.param


def test_inference_of_each_tower(pinned):
    model, inputs, _ = pinned
    with torch.no_grad():
        text = model.text_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        audio = model.audio_model(inputs["input_features"])
        image = model.image_model(pixel_values=inputs["pixel_values"])
    torch.testing.assert_close(
        text.last_hidden_state[0, 0, :4],
        torch.tensor([-0.109272, -0.254736, -0.143221, 0.500043]),
        **TOLERANCE,
    )
    torch.testing.assert_close(
        audio.last_hidden_state[0, :2, :3],
        torch.tensor([[-0.606728, -0.440257, 1.461862], [-0.345328, 0.657265, 0.400906]]),
        **TOLERANCE,
    )
    torch.testing.assert_close(
        image.pooler_output[0, :4], torch.tensor([0.110608, 0.018017, 0.000000, 0.415355]), **TOLERANCE
    )


def test_inference_of_cman_on_the_real_towers(pinned):
    model, inputs, residual = pinned
    with torch.no_grad():
        output = model(**inputs, fuse=True)
    expected = {
        True: {
            "text_embeds": [0.04587, 0.452154, -0.072791, -0.258825],
            "audio_embeds": [-0.051833, -0.075806, 0.168191, 0.001731],
            "image_embeds": [0.161901, 0.024676, 0.208189, 0.011187],
            "fused_embeds": [0.092245, 0.237225, 0.179587, -0.145465],
        },
        False: {
            "text_embeds": [-0.482748, 0.183422, -0.067689, -0.042234],
            "audio_embeds": [-0.305569, 0.090036, -0.156487, -0.218461],
            "image_embeds": [-0.374308, 0.179654, -0.073863, -0.180288],
            "fused_embeds": [-0.391279, 0.153655, -0.102447, -0.180651],
        },
    }[residual]
    for key, values in expected.items():
        torch.testing.assert_close(output[key][0, :4], torch.tensor(values), **TOLERANCE, msg=key)
