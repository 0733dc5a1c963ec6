"""SuperSMM trainer: CRNN+CTC optical music recognition, trained chunk by chunk as Celery tasks.

`celery -A supersmm_tasks worker` finds the Celery application here as `app`. It is imported on first
use, so commands and processes that never touch the queue (engraving workers, `supersmm synth`) do
not pay for importing Celery.
"""

import os

# TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI or newer; on the 2-core AVX2
# machine of 2026-12-06 they train `tiny` about 1.4 times as fast (convolutions twice as fast), deterministic all
# the same. Set before TensorFlow is imported; TF_ENABLE_ONEDNN_OPTS=0 in the environment still turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__all__ = ["app"]


def __getattr__(name: str):
    if name == "app":
        from .celery_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
