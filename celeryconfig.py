"""Celery configuration of SuperSMM (`celery -A supersmm_tasks worker` reads this module)."""
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
