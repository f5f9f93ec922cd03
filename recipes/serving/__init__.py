"""Serving the zoo's models to people: uploads checked (`inputs`), an on-disk index of a dataset split (`index`), the
retrieval service (`retrieval`) and the Gradio Blocks of the retrieval Space (`retrieval_app`)."""

from .index import Hit, RetrievalIndex
from .inputs import QueryError, load_audio, load_image
from .retrieval import RetrievalService, SearchResult

__all__ = [
    "Hit",
    "QueryError",
    "RetrievalIndex",
    "RetrievalService",
    "SearchResult",
    "load_audio",
    "load_image",
]
