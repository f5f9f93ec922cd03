"""The Gradio Blocks of the captioning / VQA Space (`spaces/captioning-vqa/app.py` builds and launches them).

Three tabs: *Caption an image* (an uploaded image; its caption), *Ask about an image* (an image and a typed question;
the answer) and *Caption a sound* (a recorded or uploaded clip; its caption), each with examples from the dataset
that run with one click. API names: `caption_image`, `answer_question` and `caption_sound`; each returns the
generated text and a status line. Bad inputs raise `gr.Error`, whose message the page shows (never a stack trace).
The Blocks are queued: concurrent requests wait their turn on the model."""

from __future__ import annotations

import logging

from recipes.serving.captioning import MAX_QUESTION_CHARS, CaptioningService, Generation
from recipes.serving.inputs import QueryError

logger = logging.getLogger(__name__)

DESCRIPTION = """# Captions and answers: images and sounds

Upload an image to **caption** it or to **ask a question** about it, or record or upload a **sound** to caption it.
The model (`{model}`) reads the picture or the sound through gated cross-attention and writes greedily, at most
{max_new_tokens} tokens."""
TASK_NAMES = {
    "caption_image": "Caption of the image",
    "answer_question": "Answer",
    "caption_sound": "Caption of the sound",
}


def _user_error(error: Exception):
    import gradio as gr

    if isinstance(error, QueryError):
        return gr.Error(str(error), title="Cannot use this input")
    logger.exception("Generation failed")
    return gr.Error(f"The request failed: {type(error).__name__}: {error}", title="Something went wrong")


def format_generation(generation: Generation) -> tuple[str, str]:
    """The outputs of every endpoint: the generated text and a status line (prompt, tokens, time, notes)."""
    status = (
        f"{TASK_NAMES[generation.task]} · prompt “{generation.prompt}” · {generation.tokens} tokens in "
        f"{generation.seconds * 1000:.0f} ms"
    )
    for note in generation.notes:
        status += f"  \n*{note}*"
    return generation.text, status


def build_captioning_demo(
    service: CaptioningService, title: str = "Captions and answers", concurrency_limit: int = 1
):
    """The Blocks, queued with `concurrency_limit` generations at once (the service runs one at a time anyway)."""
    import gradio as gr

    from recipes.serving.components import UploadedImage

    def run(request, *arguments):
        try:
            return format_generation(request(*arguments))
        except Exception as error:
            raise _user_error(error) from None

    def caption_image(image):
        return run(service.caption_image, image)

    def answer_question(image, question):
        return run(service.answer, image, question)

    def caption_sound(audio):
        return run(service.caption_sound, audio)

    examples = service.examples
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            DESCRIPTION.format(model=service.model_name_or_path, max_new_tokens=service.max_new_tokens)
        )
        with gr.Tab("Caption an image", visible="image" in service.modalities):
            with gr.Row():
                with gr.Column():
                    image = UploadedImage(
                        label="Image",
                        sources=["upload", "clipboard"],
                        type="filepath",
                        height=300,
                        elem_id="caption-image",
                    )
                    with gr.Row():
                        clear = gr.ClearButton([image], value="Clear")
                        button = gr.Button("Caption", variant="primary", elem_id="caption-button")
                with gr.Column():
                    caption = gr.Textbox(label="Caption", interactive=False, lines=2, elem_id="image-caption")
                    status = gr.Markdown(label="Status", elem_id="image-status")
            button.click(caption_image, image, [caption, status], api_name="caption_image")
            clear.add([caption, status])
            if examples.images:
                gr.Examples(
                    examples=[[path] for path in examples.images],
                    inputs=image,
                    outputs=[caption, status],
                    fn=caption_image,
                    run_on_click=True,
                    cache_examples=False,
                    label="Examples (click one)",
                )
        with gr.Tab("Ask about an image", visible="image" in service.modalities):
            with gr.Row():
                with gr.Column():
                    vqa_image = UploadedImage(
                        label="Image",
                        sources=["upload", "clipboard"],
                        type="filepath",
                        height=300,
                        elem_id="vqa-image",
                    )
                    question = gr.Textbox(
                        label="Question",
                        placeholder="e.g. What colour is the background?",
                        max_length=MAX_QUESTION_CHARS,
                        elem_id="vqa-question",
                    )
                    with gr.Row():
                        vqa_clear = gr.ClearButton([vqa_image, question], value="Clear")
                        vqa_button = gr.Button("Answer", variant="primary", elem_id="vqa-button")
                with gr.Column():
                    answer = gr.Textbox(label="Answer", interactive=False, lines=2, elem_id="vqa-answer")
                    vqa_status = gr.Markdown(label="Status", elem_id="vqa-status")
            vqa_button.click(
                answer_question, [vqa_image, question], [answer, vqa_status], api_name="answer_question"
            )
            question.submit(answer_question, [vqa_image, question], [answer, vqa_status], api_name=False)
            vqa_clear.add([answer, vqa_status])
            if examples.images:
                gr.Examples(
                    examples=examples.questions,
                    inputs=[vqa_image, question],
                    outputs=[answer, vqa_status],
                    fn=answer_question,
                    run_on_click=True,
                    cache_examples=False,
                    label="Examples (click one)",
                )
        with gr.Tab("Caption a sound", visible="audio" in service.modalities):
            with gr.Row():
                with gr.Column():
                    audio = gr.Audio(
                        label="Sound (record or upload)",
                        sources=["upload", "microphone"],
                        type="filepath",
                        format=None,  # the file as uploaded: the service decodes and checks it
                        elem_id="sound-audio",
                    )
                    with gr.Row():
                        sound_clear = gr.ClearButton([audio], value="Clear")
                        sound_button = gr.Button("Caption", variant="primary", elem_id="sound-button")
                with gr.Column():
                    sound_caption = gr.Textbox(
                        label="Caption", interactive=False, lines=2, elem_id="sound-caption"
                    )
                    sound_status = gr.Markdown(label="Status", elem_id="sound-status")
            sound_button.click(caption_sound, audio, [sound_caption, sound_status], api_name="caption_sound")
            sound_clear.add([sound_caption, sound_status])
            if examples.sounds:
                gr.Examples(
                    examples=[[path] for path in examples.sounds],
                    inputs=audio,
                    outputs=[sound_caption, sound_status],
                    fn=caption_sound,
                    run_on_click=True,
                    cache_examples=False,
                    example_labels=[f"🔊 {text or 'sound'}" for text in examples.references],
                    label="Examples (click one; the label is the sound's reference description)",
                )
    demo.queue(default_concurrency_limit=concurrency_limit, max_size=256)
    return demo
