"""`Trainer`: a run's model, optimizer and compiled steps; `TRAINERS`: the one a worker keeps between chunks."""
from __future__ import annotations

import math
from contextlib import contextmanager

import keras
import tensorflow as tf

from .checkpoint import restore_variables
from .model import PRESETS, build_model, ctc_loss, gpu_present, logit_lengths
from .run_config import RunConfig
from .schedule import StepSchedule
from .vocabulary import load_vocabulary


class Trainer:
    """A run's model, optimizer and compiled steps."""

    def __init__(self, config: RunConfig, mixed_precision: bool | None = None):
        """`mixed_precision` (float16 compute, float32 weights) defaults to on where a GPU is present."""
        self.config = config
        self.preset = PRESETS[config.model]
        self.blank = len(load_vocabulary(config.network_encoding))
        keras.utils.set_random_seed(config.seed)  # the initial weights depend on the run's seed only
        if mixed_precision is None:
            mixed_precision = gpu_present()
        with dtype_policy("mixed_float16" if mixed_precision else "float32"):
            self.model = build_model(self.preset, self.blank, config.seed)
        self.steps_per_epoch = math.ceil(max(1, config.train_samples) / config.batch_size)
        self.schedule = StepSchedule(config.schedule, config.learning_rate,
                                     config.max_total_epochs * self.steps_per_epoch)
        self.adam = keras.optimizers.Adam(self.schedule)
        # In float16 small gradients vanish: the loss is scaled up before differentiation and the
        # gradients scaled back before Adam sees them. Checkpoints hold Adam's variables and the loss
        # scale (with its step counter) goes in their metadata, so a run moves freely between GPU and CPU workers.
        self.optimizer = keras.optimizers.LossScaleOptimizer(self.adam) if mixed_precision else self.adam
        self.optimizer.build(self.model.trainable_variables)  # its variables must exist before a restore
        batch_signature = [
            tf.TensorSpec([None, self.preset.height, None, 1], tf.float32),  # image
            tf.TensorSpec([None], tf.int32),                                  # image_width
            tf.TensorSpec([None, None], tf.int32),                            # label, padded with -1
            tf.TensorSpec([None], tf.int32),                                  # label_length
        ]
        self.train_step = tf.function(self._train_step, input_signature=batch_signature)
        self.eval_step = tf.function(self._eval_step, input_signature=batch_signature)

    def _train_step(self, image, image_width, label, label_length):
        with tf.GradientTape() as tape:
            logits = self.model(image, training=True)  # batch norm learns its statistics here
            losses = ctc_loss(logits, label, label_length, logit_lengths(image_width, self.preset), self.blank)
            loss = tf.reduce_mean(losses)  # float32: ctc_loss casts the logits
            scaled_loss = self.optimizer.scale_loss(loss)  # the loss itself unless mixed precision is on
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(scaled_loss, variables), variables))
        return loss

    def _eval_step(self, image, image_width, label, label_length):
        logits = self.model(image, training=False)
        losses = ctc_loss(logits, label, label_length, logit_lengths(image_width, self.preset), self.blank)
        return logits, losses

    def follow_budget(self, max_total_epochs: int, steps_per_epoch: int | None = None) -> None:
        """The learning-rate schedule spans the run's epoch budget; it follows a changed one from the next step.
        `steps_per_epoch`, once the epoch's batches are made, is the number it really trains (the training examples
        that fit CTC and decode, not the split's size): the schedule then ends with the budget's last step."""
        if steps_per_epoch is not None:
            self.steps_per_epoch = max(1, steps_per_epoch)
        self.schedule.set_total_steps(max_total_epochs * self.steps_per_epoch)

    def restore(self, checkpoint) -> None:
        restore_variables(self.model.variables, checkpoint.model_arrays, checkpoint.path)
        restore_variables(self.adam.variables, checkpoint.optimizer_arrays, checkpoint.path)
        if self.optimizer is not self.adam and checkpoint.meta.get("loss_scale"):
            self.optimizer.dynamic_scale.assign(checkpoint.meta["loss_scale"])
            self.optimizer.step_counter.assign(checkpoint.meta.get("loss_scale_steps", 0))

    def start_from(self, checkpoint) -> None:
        """Another run's model weights; the optimizer stays fresh."""
        restore_variables(self.model.variables, checkpoint.model_arrays, checkpoint.path)

    def state_arrays(self):
        return [v.numpy() for v in self.model.variables], [v.numpy() for v in self.adam.variables]

    @property
    def learning_rate(self) -> float:
        """The rate of the last optimizer step, which an epoch's row reports (Adam's own `learning_rate` is the
        next step's); the first step's before any."""
        return float(self.schedule(max(0, int(self.adam.iterations.numpy()) - 1)).numpy())

    @property
    def loss_scale(self) -> float | None:
        """The mixed-precision loss scale, None in float32."""
        return None if self.optimizer is self.adam else float(self.optimizer.dynamic_scale.numpy())

    @property
    def loss_scale_meta(self) -> dict:
        """For a checkpoint's metadata: the loss scale and the good steps since it last changed (it doubles after
        2,000), so that a resumed run scales its loss at the steps an uninterrupted one would."""
        if self.optimizer is self.adam:
            return {"loss_scale": None}
        return {"loss_scale": self.loss_scale, "loss_scale_steps": int(self.optimizer.step_counter.numpy())}


@contextmanager
def dtype_policy(name: str):
    """Layers built inside take this dtype policy; the process-wide default is left as it was."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class TrainerCache:
    """The one trainer a worker process keeps between chunks.

    Building a model and tracing its steps costs seconds to minutes, and a worker often trains the next
    chunk of the run it just trained: it reuses that trainer, since restoring the checkpoint overwrites
    every variable and the chunk sets the schedule's span to the run's budget. A run without a checkpoint
    yet, or another run, gets a new trainer, so its initial weights come from the seed alone; the old one
    is dropped first, with Keras's memory.
    """

    def __init__(self):
        self._trainer: Trainer | None = None

    def trainer_for(self, config: RunConfig, resuming: bool) -> Trainer:
        if resuming and self._trainer is not None and _model_key(self._trainer.config) == _model_key(config):
            return self._trainer
        self.clear()
        self._trainer = Trainer(config)
        return self._trainer

    def clear(self) -> None:
        """Forget the trainer, as a fresh process would start."""
        if self._trainer is not None:
            self._trainer = None
            keras.backend.clear_session(free_memory=True)


def _model_key(config: RunConfig) -> tuple:
    """What a trainer is built from (the budget is not: `Trainer.follow_budget`)."""
    return (config.run, config.model, config.network_encoding, config.seed, config.learning_rate, config.height,
            config.schedule)


TRAINERS = TrainerCache()
