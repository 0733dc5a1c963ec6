"""The Celery application, configured from the top-level `celeryconfig.py`."""
import os

from celery import Celery

# Flower listens on every interface unless told otherwise; ours shows run names and accepts
# remote-control commands, so it binds to loopback unless `--address` or FLOWER_ADDRESS says more.
os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")

app = Celery("supersmm_tasks")
app.config_from_object("celeryconfig")
