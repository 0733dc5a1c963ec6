"""SuperSMM trainer: CRNN+CTC optical music recognition, trained chunk by chunk as Celery tasks.

`celery -A supersmm_tasks worker` finds the Celery application here as `app`. It is imported on first
use, so commands and processes that never touch the queue (engraving workers, `supersmm synth`) do
not pay for importing Celery.
"""

__all__ = ["app"]


def __getattr__(name: str):
    if name == "app":
        from .celery_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
