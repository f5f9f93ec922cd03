"""The Gradio Blocks of the retrieval Space (`spaces/cman-retrieval/app.py` builds and launches them).

Two tabs: *Search* (a query of any subset of typed text, recorded or uploaded audio and an uploaded image; ranked
images with captions and scores, ranked descriptions and playable audio) and *Zero-shot* (an image or a sound and
comma-separated labels, ranked with scores). API names: `search` and `zero_shot`. Bad inputs raise `gr.Error`, whose
message the page shows (never a stack trace)."""

from __future__ import annotations

import logging

from recipes.serving.inputs import QueryError
from recipes.serving.retrieval import RetrievalService, SearchResult

logger = logging.getLogger(__name__)

NUM_AUDIO_RESULTS = 3
DESCRIPTION = """# Cross-modal search: text, speech and images

Query with **any mix** of {inputs}: the model embeds them together as one query and ranks the indexed {count}
items of `{split}` by cosine similarity.{transcribes} Model: `{model}`."""
INPUT_NAMES = {"text": "typed text", "audio": "your voice (or any sound)", "image": "an image"}


def _user_error(error: Exception):
    import gradio as gr

    if isinstance(error, QueryError):
        return gr.Error(str(error), title="Cannot use this input")
    logger.exception("Query failed")
    return gr.Error(f"The query failed: {type(error).__name__}: {error}", title="Something went wrong")


def format_search(result: SearchResult, num_audio: int = NUM_AUDIO_RESULTS):
    """The outputs of the search endpoint: status text, gallery, description table, `num_audio` audio players."""
    import gradio as gr

    status = f"Query: **{' + '.join(result.parts)}** ({result.encoder}, {result.seconds * 1000:.0f} ms)"
    if result.transcript is not None:
        status += f"  \nHeard in the audio: *“{result.transcript.strip() or '(nothing)'}”*"
    gallery = [
        (hit.image, f"#{hit.rank} · {hit.score:.3f} · {hit.text or hit.id}")
        for hit in result.hits.get("image", [])
    ]
    table = [[hit.rank, round(hit.score, 4), hit.text] for hit in result.hits.get("text", [])]
    players = []
    audio_hits = result.hits.get("audio", [])
    for position in range(num_audio):
        if position < len(audio_hits):
            hit = audio_hits[position]
            players.append(
                gr.Audio(value=hit.audio, label=f"#{hit.rank} · {hit.score:.3f} · {hit.text or hit.id}")
            )
        else:
            players.append(gr.Audio(value=None, label="—"))
    return [status, gallery, table, *players]


def build_retrieval_demo(service: RetrievalService, title: str = "Cross-modal search"):
    import gradio as gr

    from recipes.serving.components import UploadedImage

    def search(text, audio, image, k):
        try:
            result = service.search(text, audio, image, int(k))
        except Exception as error:
            raise _user_error(error) from None
        return format_search(result)

    def zero_shot(image, audio, labels):
        try:
            modality, ranked = service.zero_shot(labels, image_path=image, audio_path=audio)
        except Exception as error:
            raise _user_error(error) from None
        return {label: score for label, score in ranked}

    split = service.index.folder.name.rsplit("-", 1)[0]
    with gr.Blocks(title=title) as demo:
        inputs = [INPUT_NAMES[m] for m in service.modalities]
        gr.Markdown(
            DESCRIPTION.format(
                inputs=", ".join(inputs[:-1]) + " and " + inputs[-1] if len(inputs) > 1 else inputs[0],
                count=len(service.index),
                split=split,
                transcribes=" Audio is transcribed inside the model." if service.transcribes else "",
                model=service.model_name_or_path,
            )
        )
        with gr.Tab("Search"):
            with gr.Row():
                with gr.Column():
                    text = gr.Textbox(
                        label="Text",
                        placeholder="e.g. a red fire engine",
                        elem_id="query-text",
                        visible="text" in service.modalities,
                    )
                    audio = gr.Audio(
                        label="Audio (record or upload)",
                        sources=["upload", "microphone"],
                        type="filepath",
                        format=None,  # the file as uploaded: the service decodes and checks it
                        elem_id="query-audio",
                        visible="audio" in service.modalities,
                    )
                    image = UploadedImage(
                        label="Image",
                        sources=["upload", "clipboard"],
                        type="filepath",
                        elem_id="query-image",
                        visible="image" in service.modalities,
                    )
                    k = gr.Slider(1, 20, value=6, step=1, label="Results")
                    with gr.Row():
                        clear = gr.ClearButton([text, audio, image], value="Clear")
                        button = gr.Button("Search", variant="primary", elem_id="search-button")
                with gr.Column(scale=2):
                    status = gr.Markdown(elem_id="search-status")
                    gallery = gr.Gallery(label="Images", columns=3, height="auto", elem_id="result-images")
                    table = gr.Dataframe(
                        headers=["rank", "score", "description"],
                        label="Descriptions",
                        interactive=False,
                        elem_id="result-texts",
                    )
                    players = [gr.Audio(label="—", interactive=False) for _ in range(NUM_AUDIO_RESULTS)]
            outputs = [status, gallery, table, *players]
            button.click(search, [text, audio, image, k], outputs, api_name="search")
            text.submit(search, [text, audio, image, k], outputs, api_name=False)
            clear.add([status, gallery, table])
            examples = service.examples()
            if examples:
                gr.Examples(
                    examples=[[*e, 6] for e in examples],
                    inputs=[text, audio, image, k],
                    outputs=outputs,
                    fn=search,
                    run_on_click=True,
                    cache_examples=False,
                    label="Examples (click one)",
                )
        with gr.Tab("Zero-shot"):
            gr.Markdown(
                "Classify an image **or** a sound against your own labels"
                + (
                    f" with `{service.zero_shot_model}` (the stock zero-shot pipeline)."
                    if service.zero_shot_model
                    else " with the same model's embeddings (labels are embedded as “This is a picture of …”)."
                )
            )
            with gr.Row():
                with gr.Column():
                    zs_image = UploadedImage(label="Image", type="filepath", elem_id="zs-image")
                    zs_audio = gr.Audio(
                        label="Sound", sources=["upload", "microphone"], type="filepath", format=None
                    )
                    labels = gr.Textbox(label="Labels, comma-separated", value="animal, vehicle, food, plant")
                    zs_button = gr.Button("Classify", variant="primary")
                with gr.Column():
                    ranking = gr.Label(label="Labels ranked", num_top_classes=10)
            zs_button.click(zero_shot, [zs_image, zs_audio, labels], ranking, api_name="zero_shot")
            first = next((item for item in service.index.items if item.get("image")), None)
            if first:
                gr.Examples(
                    examples=[
                        [str(service.index.folder / first["image"]), None, "animal, vehicle, food, plant"]
                    ],
                    inputs=[zs_image, zs_audio, labels],
                    outputs=ranking,
                    fn=zero_shot,
                    run_on_click=True,
                    cache_examples=False,
                )
    return demo
