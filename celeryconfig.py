"""Celery configuration of SuperSMM (`celery -A supersmm_tasks worker` and `supersmm worker` read this module).

Each task is one chunk of epochs of one run. A run never depends on a message being redelivered:
a lost chunk is re-queued by the reconciler in `supersmm_tasks.reconciler` (lease expired, no chunk
pending), so the settings below only have to keep duplicates rare and harmless.
"""
from supersmm_tasks import broker
from supersmm_tasks.errors import SupersmmError

try:
    broker_url = broker.broker_url()
    result_backend = broker.result_backend_url()
except SupersmmError as error:  # `celery -A supersmm_tasks ...` prints it as one line, like `supersmm` does
    raise SystemExit(f"supersmm: error: {error}") from None

# The function that trains one chunk, as "module:function" with train_chunk's signature. The scale
# benchmark (bench/scale_worker.py) runs its workers with a stand-in that sleeps and writes small checkpoints.
supersmm_train_chunk = "supersmm_tasks.training:train_chunk"

# JSON only: a message never carries code.
task_serializer = "json"
result_serializer = "json"
event_serializer = "json"  # Celery's default too: said here, as every serializer is
accept_content = ["json"]
result_accept_content = ["json"]
result_expires = 7 * 24 * 3600

imports = ["supersmm_tasks.tasks"]
task_default_queue = "supersmm"
task_default_priority = 5
task_create_missing_queues = True  # `--queue gpu` / `-Q gpu` need no declaration

# A chunk is acknowledged when it ends, and one worker process holds one chunk at a time, so a
# worker killed mid-chunk leaves its message to the broker instead of taking queued chunks with it.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_concurrency = 1
# One process: the chunk trains in a thread next to the consumer, which keeps sending heartbeats and
# events (Flower sees a busy worker as online) and the reconciler thread running.
worker_pool = "threads"
# Flower learns that a chunk started from the worker's events; storing STARTED in the result backend too
# would cost every chunk a Redis round trip that nothing reads.
task_track_started = False

broker_transport_options = {
    # Above the longest chunk (a 500-epoch chunk of the paper model on full PrIMuS takes days).
    # Healing never waits for it: a redelivered chunk is recognised as stale and does nothing.
    "visibility_timeout": 30 * 24 * 3600,
    "queue_order_strategy": "priority",
    "priority_steps": list(range(10)),
    "sep": ":",
}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0}}
if broker.is_sentinel(broker_url):
    broker_transport_options.update(broker.sentinel_transport_options())
if broker.is_sentinel(result_backend):
    result_backend_transport_options.update(broker.sentinel_transport_options())
broker_connection_retry_on_startup = True
broker_connection_max_retries = None  # a worker waits for Redis to come back, however long
worker_cancel_long_running_tasks_on_connection_loss = False  # a Redis restart must not stop training

# Events for Flower: it lists workers and every chunk with its state.
worker_send_task_events = True
task_send_sent_event = True
