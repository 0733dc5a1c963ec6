"""The Celery application, configured from the top-level `celeryconfig.py`."""
from celery import Celery

app = Celery("supersmm_tasks")
app.config_from_object("celeryconfig")
