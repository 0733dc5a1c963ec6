"""SuperSMM trainer: CRNN+CTC optical music recognition, trained chunk by chunk as Celery tasks.

`celery -A supersmm_tasks worker` finds the Celery application here as `app`.
"""
from .celery_app import app

__all__ = ["app"]
