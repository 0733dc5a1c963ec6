"""Learning-rate schedules, by optimizer step, over a run's whole epoch budget.

- `constant`: the preset's rate throughout (the reference trainer's way).
- `cosine`: a linear warm-up from 0 over WARMUP_SHARE of the steps (at most MAX_WARMUP_STEPS), then a cosine
  decay to COSINE_FLOOR of the peak at the last step of the budget.
- `onecycle`: up from 1/ONECYCLE_START of the peak over ONECYCLE_RISE of the steps, then a cosine decay to
  1/ONECYCLE_END of it.

The rate depends on the step and the span alone, and the step (Adam's iteration counter) is in every checkpoint,
so a resumed run continues the schedule exactly. The span follows the run's `max_total_epochs`, from the epoch after
a change on (`set_total_steps`): the rate is drawn again over the new span from the step reached, so raising the
budget of a run near its end raises its rate again (a warm restart), and lowering it (by hand or to keep to
`--max-minutes`) brings its end nearer.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from .run_config import SCHEDULES  # named there, where a run's config is checked without TensorFlow

WARMUP_SHARE = 0.05
MAX_WARMUP_STEPS = 1000
COSINE_FLOOR = 0.02
ONECYCLE_RISE = 0.3
ONECYCLE_START = 25.0
ONECYCLE_END = 1000.0


@keras.saving.register_keras_serializable(package="supersmm")
class StepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """One of SCHEDULES, peaking at `peak`, over `total_steps` optimizer steps."""

    def __init__(self, kind: str, peak: float, total_steps: int):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}")
        self.kind, self.peak = kind, float(peak)
        # A variable, so that a compiled training step follows a new span without being traced again.
        self.span = tf.Variable(float(max(1, int(total_steps))), trainable=False, dtype=tf.float32,
                                name="schedule_span")

    @property
    def total_steps(self) -> int:
        return int(self.span.numpy())

    def set_total_steps(self, total_steps: int) -> None:
        self.span.assign(float(max(1, int(total_steps))))

    def __call__(self, step):
        step, total = tf.cast(step, tf.float32), tf.convert_to_tensor(self.span)
        if self.kind == "constant":
            return tf.constant(self.peak, tf.float32)
        if self.kind == "cosine":
            rise = tf.maximum(1.0, tf.minimum(float(MAX_WARMUP_STEPS), tf.round(WARMUP_SHARE * total)))
            start, floor = 0.0, COSINE_FLOOR * self.peak
        else:
            rise = tf.maximum(1.0, tf.round(ONECYCLE_RISE * total))
            start, floor = self.peak / ONECYCLE_START, self.peak / ONECYCLE_END
        warming = start + (self.peak - start) * (step + 1.0) / rise
        progress = tf.clip_by_value((step - rise) / tf.maximum(1.0, total - rise), 0.0, 1.0)
        decaying = floor + (self.peak - floor) * 0.5 * (1.0 + tf.cos(math.pi * progress))
        return tf.where(step < rise, warming, decaying)

    def get_config(self) -> dict:
        return {"kind": self.kind, "peak": self.peak, "total_steps": self.total_steps}
