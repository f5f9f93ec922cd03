"""Gradio components of the Spaces. Gradio writes a typed stub (`components.pyi`) next to a module that defines a
component class; it is committed with it, as custom components ship theirs."""

from __future__ import annotations

import gradio as gr


class UploadedImage(gr.Image):
    """An image input that hands the uploaded file's path over undecoded: the service reads and checks it, so a file
    that is not an image, or a huge one, gets a readable message instead of Gradio's preprocessing error."""

    is_template = True  # the page draws it with the stock Image component

    def preprocess(self, payload):
        return None if payload is None else str(payload.path)
