"""Getting a run out to users: stage the folder the Hub gets (model, processor, code, card, plots) and upload it."""

from .publishing import PublishError, check_can_publish, publish_run, stage_run

__all__ = ["PublishError", "check_can_publish", "publish_run", "stage_run"]
