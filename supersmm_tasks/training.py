"""`train_chunk`: train one chunk of epochs of a run, resuming exactly where its last checkpoint ends.

Each epoch ends with four writes, in this order, so that a kill at any instant leaves a run that
resumes from its last completed epoch:
1. the checkpoint (model, optimizer, seed-generator states, counters, the epoch's CSV row), atomically;
2. the epoch's row in logs/training_log.csv;
3. training_state.txt, which therefore never names an epoch ahead of a complete checkpoint;
4. the human-readable log and TensorBoard scalars.
At the start of a chunk the newest checkpoint that verifies is the truth: the CSV and the state are
brought back in line with it (rows beyond it dropped, its own row restored if missing). A fine-tuned run
without a checkpoint of its own starts from the model weights of the checkpoint named in its config, with a
fresh optimizer.
"""
from __future__ import annotations

import errno
import math
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import keras
import psutil
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config

from . import faults, pipeline, run_state, training_log
from .chunk import ChunkResult, ChunkSpan
from .checkpoint import (
    CorruptCheckpoint, checkpoint_path, latest_valid_checkpoint, load_checkpoint, prune_checkpoints,
    restore_variables, save_checkpoint,
)
from .corpus import load_dataset
from .errors import ChunkInterrupted, SupersmmError
from .evaluate import decode_logits, error_rates
from .model import PRESETS, build_model, ctc_loss, gpu_present, logit_lengths
from .run_config import RunConfig, load_run_config
from .run_status import CONTROL_REQUESTS, RunStatus, transition
from .schedule import StepSchedule
from .vocabulary import load_vocabulary

CHECKPOINTS_KEPT = 3
ETA_EPOCHS = 5  # the ETA uses the mean time of this many recent epochs
BEST_MODEL_FILE = "best.keras"


@dataclass
class Progress:
    """The counters that travel inside every checkpoint, so a resumed run continues them exactly."""

    epoch: int = 0
    best_epoch: int | None = None
    best_val_ser: float | None = None
    epochs_since_best: int = 0
    cumulative_time_sec: float = 0.0
    recent_epoch_times: tuple[float, ...] = ()

    @classmethod
    def from_meta(cls, meta: dict) -> "Progress":
        return cls(
            epoch=meta["epoch"], best_epoch=meta["best_epoch"], best_val_ser=meta["best_val_ser"],
            epochs_since_best=meta["epochs_since_best"], cumulative_time_sec=meta["cumulative_time_sec"],
            recent_epoch_times=tuple(meta["recent_epoch_times"]),
        )

    def as_meta(self) -> dict:
        return {
            "epoch": self.epoch, "best_epoch": self.best_epoch, "best_val_ser": self.best_val_ser,
            "epochs_since_best": self.epochs_since_best, "cumulative_time_sec": self.cumulative_time_sec,
            "recent_epoch_times": list(self.recent_epoch_times),
        }

    def record(self, epoch: int, val_ser: float, epoch_time: float) -> bool:
        """Count a finished epoch; True if it is the new best by val SER."""
        self.epoch = epoch
        self.cumulative_time_sec += epoch_time
        self.recent_epoch_times = (self.recent_epoch_times + (epoch_time,))[-ETA_EPOCHS:]
        improved = self.best_val_ser is None or val_ser < self.best_val_ser
        if improved:
            self.best_epoch, self.best_val_ser, self.epochs_since_best = epoch, val_ser, 0
        else:
            self.epochs_since_best += 1
        return improved


class Trainer:
    """A run's model, optimizer and compiled steps; kept between chunks so nothing is rebuilt or retraced."""

    def __init__(self, config: RunConfig, mixed_precision: bool | None = None):
        """`mixed_precision` (float16 compute, float32 weights) defaults to on where a GPU is present."""
        self.config = config
        self.preset = PRESETS[config.model]
        self.blank = len(load_vocabulary(config.encoding))
        keras.utils.set_random_seed(config.seed)  # the initial weights depend on the run's seed only
        if mixed_precision is None:
            mixed_precision = gpu_present()
        with dtype_policy("mixed_float16" if mixed_precision else "float32"):
            self.model = build_model(self.preset, self.blank, config.seed)
        steps_per_epoch = math.ceil(max(1, config.train_samples) / config.batch_size)
        self.adam = keras.optimizers.Adam(
            StepSchedule(config.schedule, config.learning_rate, config.max_total_epochs * steps_per_epoch))
        # In float16 small gradients vanish: the loss is scaled up before differentiation and the
        # gradients scaled back before Adam sees them. Checkpoints hold Adam's variables and the loss
        # scale goes in their metadata, so a run moves freely between GPU and CPU workers.
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

    def restore(self, checkpoint) -> None:
        restore_variables(self.model.variables, checkpoint.model_arrays, checkpoint.path)
        restore_variables(self.adam.variables, checkpoint.optimizer_arrays, checkpoint.path)
        if self.optimizer is not self.adam and checkpoint.meta.get("loss_scale"):
            self.optimizer.dynamic_scale.assign(checkpoint.meta["loss_scale"])

    def start_from(self, checkpoint) -> None:
        """Another run's model weights; the optimizer stays fresh."""
        restore_variables(self.model.variables, checkpoint.model_arrays, checkpoint.path)

    def state_arrays(self):
        return [v.numpy() for v in self.model.variables], [v.numpy() for v in self.adam.variables]

    @property
    def learning_rate(self) -> float:
        return float(keras.ops.convert_to_numpy(self.adam.learning_rate))

    @property
    def loss_scale(self) -> float | None:
        """The mixed-precision loss scale, None in float32."""
        return None if self.optimizer is self.adam else float(self.optimizer.dynamic_scale.numpy())


@contextmanager
def dtype_policy(name: str):
    """Layers built inside take this dtype policy; the process-wide default is left as it was."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


_cached_trainer: Trainer | None = None


def _trainer_for(config: RunConfig, resuming: bool) -> Trainer:
    """The process's trainer for this run: reused when it matches and a checkpoint will overwrite its
    variables; built afresh for a new run, so its initial weights come from the seed alone."""
    global _cached_trainer
    if resuming and _cached_trainer is not None and _model_key(_cached_trainer.config) == _model_key(config):
        return _cached_trainer
    if _cached_trainer is not None:
        _cached_trainer = None
        keras.backend.clear_session(free_memory=True)
    _cached_trainer = Trainer(config)
    return _cached_trainer


def fits_ctc(tokens: list[str], width: int, height: int, preset) -> bool:
    """Whether the image has enough frames for its label: CTC needs one per token plus a blank
    between each pair of equal neighbours."""
    frames = pipeline.resized_width(width, height, preset.height) // preset.width_reduction
    repeats = sum(a == b for a, b in zip(tokens, tokens[1:]))
    return frames >= len(tokens) + repeats


def write_scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar; tf.summary.scalar itself would need the tensorboard package installed."""
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=metadata.SerializeToString())


def _model_key(config: RunConfig) -> tuple:
    # The budget sets the schedule's span.
    return (config.run, config.model, config.encoding, config.seed, config.learning_rate, config.height,
            config.schedule, config.max_total_epochs)


def deterministic(config: RunConfig) -> bool:
    """Whether this process trains the run bit for bit reproducibly: as the run asks, or, where it left the
    choice open, on a CPU but not on a GPU (deterministic GPU kernels are slower). The machine that
    trains decides, not the one that created the run: runs are often queued from a machine without a GPU."""
    return config.deterministic if config.deterministic is not None else not gpu_present()


def _configure_determinism(config: RunConfig) -> None:
    """Op determinism is process-wide: set it for every chunk, since one worker trains many runs.
    (TensorFlow 2.21 exports only the switch on; the switch off lives beside it, unexported.)"""
    if deterministic(config):
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()


def train_chunk(name: str, span: ChunkSpan, *, guard=None, should_stop=None, on_progress=None,
                worker: str | None = None) -> ChunkResult:
    """Train the epochs of `span` up to its last (1-based, inclusive) from the run's newest checkpoint.

    A redelivered chunk trains only what is missing. guard() is called before every write and
    raises to abort; should_stop() is asked at every epoch boundary, the chunk's end included, and may
    answer "paused" or "cancelled"; on_progress(dict) hears about every batch and every finished epoch.
    """
    chunk_run = ChunkRun(name, guard, should_stop, faults.slowed(on_progress), worker, span)
    try:
        return chunk_run.run()
    except chunk_run.GuardFailure as lost:
        raise lost.error from None  # another process owns the run now: write nothing more
    except ChunkInterrupted:
        raise  # the worker is stopping; the run goes on from its last checkpoint elsewhere or later
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            chunk_run.record_failure(error)
            raise
        full = SupersmmError(f"disk full while training run {name!r} ({error.filename or 'a run file'}): "
                             "free some space, then continue the run")
        chunk_run.record_failure(full)
        raise full from None
    except Exception as error:
        chunk_run.record_failure(error)
        raise


class ChunkRun:
    """One call of train_chunk: the run's settings, the callbacks and the epoch loop."""

    class GuardFailure(Exception):
        def __init__(self, error: BaseException):
            self.error = error

    def __init__(self, name, guard, should_stop, on_progress, worker, span: ChunkSpan):
        self.name = name
        self.span = span
        self._guard = guard
        self.should_stop = should_stop or (lambda: None)
        self.on_progress = on_progress or (lambda update: None)
        self.worker = worker or socket.gethostname()
        self.chunk = span.chunk

    def guard(self) -> None:
        if self._guard is None:
            return
        try:
            self._guard()
        except Exception as error:
            raise self.GuardFailure(error) from error

    def log(self, message: str) -> None:
        self.guard()
        run_state.append_log(self.name, message)

    def write_state(self, **fields) -> dict:
        self.guard()
        return run_state.write_state(self.name, **fields)

    def record_failure(self, error: Exception) -> None:
        """Best effort: mark the run failed with the error's one-line reason (not if we lost the run)."""
        reason = str(error) if isinstance(error, SupersmmError) else f"{type(error).__name__}: {error}"
        try:
            transition(self.name, RunStatus.FAILED, guard=self.guard, error=reason)
            self.log(f"chunk failed: {reason}")
        except Exception:
            pass

    def run(self) -> ChunkResult:
        self.guard()
        config = self.config = load_run_config(self.name)
        state = run_state.read_state(self.name)
        if state["status"] in (RunStatus.COMPLETED, RunStatus.CANCELLED):
            return self.result(state, epochs_trained=0)
        if self.span.first_epoch < 1 or self.span.last_epoch < self.span.first_epoch:
            raise SupersmmError(f"invalid epoch range {self.span.epochs} for run {self.name!r}")
        last_epoch = min(self.span.last_epoch, config.max_total_epochs)

        _configure_determinism(config)
        checkpoint = latest_valid_checkpoint(run_state.checkpoints_dir(self.name), on_corrupt=self.discard_corrupt)
        trainer = self.trainer = _trainer_for(config, resuming=checkpoint is not None)
        progress = Progress()
        if checkpoint is not None:
            trainer.restore(checkpoint)
            progress = Progress.from_meta(checkpoint.meta)
        elif config.init_checkpoint:
            self.start_from_another_run(trainer)
        self.line_up_files_with(checkpoint, progress)

        stop = self.finished(progress)
        if stop:
            return self.finish(progress, *stop, epochs_trained=0)
        train_examples, val_examples = self.load_examples("train"), self.load_examples("val")
        train_batches = self.batches(train_examples, training=True)
        val_batches = self.batches(val_examples, training=False).epoch(0)  # the same every epoch
        self.log(f"chunk {self.chunk} on {self.worker}: epochs {progress.epoch + 1}-{last_epoch} "
                 f"of {config.max_total_epochs} ({len(train_examples)} training samples, "
                 f"{'deterministic' if deterministic(config) else 'not deterministic'})")
        run_state.backup_log(self.name)

        summaries = tf.summary.create_file_writer(str(run_state.tensorboard_dir(self.name)))
        epochs_trained = 0
        try:
            for epoch in range(progress.epoch + 1, last_epoch + 1):
                requested = self.should_stop()
                if requested in CONTROL_REQUESTS:
                    return self.finish(progress, requested, f"{requested} by request", epochs_trained)
                self.train_epoch(epoch, train_batches, val_batches, progress, summaries)
                epochs_trained += 1
                stop = self.finished(progress)
                if stop:
                    return self.finish(progress, *stop, epochs_trained)
        finally:
            summaries.close()
        requested = self.should_stop()  # asked during the chunk's last epoch
        if requested in CONTROL_REQUESTS:
            return self.finish(progress, requested, f"{requested} by request", epochs_trained)
        return self.finish(progress, RunStatus.RUNNING, None, epochs_trained)

    def start_from_another_run(self, trainer: Trainer) -> None:
        config = self.config
        try:
            checkpoint = load_checkpoint(Path(config.init_checkpoint))
        except CorruptCheckpoint as error:
            raise SupersmmError(f"run {self.name!r} starts from run {config.init_from!r}'s checkpoint "
                                f"{config.init_checkpoint}, which is gone or damaged ({error})") from None
        trainer.start_from(checkpoint)
        self.log(f"starting from run {config.init_from}'s weights of epoch {checkpoint.epoch} "
                 f"(val SER {checkpoint.meta.get('best_val_ser')}%), optimizer fresh")

    def load_examples(self, split: str) -> list:
        """The split's examples, less those whose image is too narrow to hold their label under CTC."""
        examples = load_dataset(self.config.dataset).examples(split, self.config.encoding)
        preset = self.trainer.preset
        usable, skipped = [], []
        for example in examples:
            fits = example.width is None or fits_ctc(example.tokens, example.width, example.height, preset)
            (usable if fits else skipped).append(example)
        if skipped:
            ids = ", ".join(e.id for e in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
            self.log(f"{len(skipped)} {split} samples skipped: too narrow at height {preset.height} "
                     f"for their labels ({ids})")
        if not usable:
            raise SupersmmError(f"dataset {self.config.dataset!r} has no usable {split} samples "
                                f"for encoding {self.config.encoding}")
        return usable

    def discard_corrupt(self, path, reason: str) -> None:
        self.log(f"checkpoint {path} is damaged ({reason}); deleted, falling back to the previous one")
        path.unlink(missing_ok=True)

    def line_up_files_with(self, checkpoint, progress: Progress) -> None:
        """Make the CSV and the state match the newest verified checkpoint (the committed epoch)."""
        self.guard()
        changes = training_log.reconcile_run(self.name, progress.epoch, row_for=self.stored_row)
        for change in changes:
            self.log(f"training log repaired: {change}")
        transition(
            self.name, RunStatus.RUNNING, guard=self.guard, last_completed_epoch=progress.epoch,
            checkpoint=str(checkpoint.path) if checkpoint else "", best_epoch=progress.best_epoch,
            best_val_ser=progress.best_val_ser, worker=self.worker, chunk=self.chunk, error="", stop_reason="",
        )

    def stored_row(self, epoch: int) -> dict | None:
        """The CSV row kept inside epoch's checkpoint, if that checkpoint still exists and verifies."""
        try:
            return load_checkpoint(checkpoint_path(run_state.checkpoints_dir(self.name), epoch)).meta["row"]
        except CorruptCheckpoint:
            return None

    def finished(self, progress: Progress) -> tuple[str, str] | None:
        """(status, stop_reason) once the run is over, else None."""
        if progress.epoch >= self.config.max_total_epochs:
            return RunStatus.COMPLETED, "max_total_epochs"
        if self.config.patience and progress.epochs_since_best >= self.config.patience:
            return RunStatus.COMPLETED, f"early stop: no val SER improvement in {self.config.patience} epochs"
        return None

    def finish(self, progress: Progress, status: RunStatus, stop_reason: str | None, epochs_trained: int) -> ChunkResult:
        state = transition(self.name, status, guard=self.guard, stop_reason=stop_reason or "")
        if status != RunStatus.RUNNING:
            self.log(f"run {status} at epoch {progress.epoch}: {stop_reason}")
        return self.result(state, epochs_trained)

    def result(self, state: dict, epochs_trained: int) -> ChunkResult:
        return ChunkResult(
            run=self.name, last_completed_epoch=state["last_completed_epoch"], status=state["status"],
            stop_reason=state.get("stop_reason") or None, best_val_ser=state.get("best_val_ser"),
            best_epoch=state.get("best_epoch"), epochs_trained=epochs_trained,
        )

    def batches(self, examples, training: bool) -> pipeline.EpochBatches:
        config = self.config
        batches = pipeline.EpochBatches(examples, encoding=config.encoding, height=config.height,
                                        batch_size=config.batch_size, seed=config.seed, training=training,
                                        augment=config.augment)
        if batches.skipped:
            shown = "; ".join(f"{path}: {why}" for path, why in batches.skipped[:3])
            self.log(f"{len(batches.skipped)} {'training' if training else 'validation'} images left out: they do "
                     f"not decode ({shown}{' ...' if len(batches.skipped) > 3 else ''}); run `supersmm detect`")
        return batches

    def train_epoch(self, epoch: int, train_batches: pipeline.EpochBatches, val_batches, progress: Progress,
                    summaries) -> None:
        config, trainer = self.config, self.trainer
        started = time.monotonic()
        batch_count = math.ceil(len(train_batches) / config.batch_size)
        loss_sum, sample_count = 0.0, 0
        for number, batch in enumerate(train_batches.epoch(epoch), start=1):
            loss = float(trainer.train_step(batch["image"], batch["image_width"], batch["label"],
                                            batch["label_length"]))
            loss_sum += loss * int(batch["image"].shape[0])
            sample_count += int(batch["image"].shape[0])
            self.on_progress({"epoch": epoch, "batch": number, "batches": batch_count, "loss": loss})
        if sample_count < (1 - pipeline.MOST_OF_A_SET) * len(train_batches):
            raise SupersmmError(f"epoch {epoch}: only {sample_count} of {len(train_batches)} training images decode; "
                                f"they changed since detection: run `supersmm detect`")
        if sample_count < len(train_batches):
            self.log(f"epoch {epoch}: {len(train_batches) - sample_count} training images skipped, they do not "
                     f"decode (run `supersmm detect`)")
        train_time = time.monotonic() - started
        val_loss, val_ser, val_sequence_error = self.validate(val_batches)
        epoch_time = time.monotonic() - started
        improved = progress.record(epoch, val_ser, epoch_time)

        folder = run_state.checkpoints_dir(self.name)
        row = self.csv_row(epoch, progress, checkpoint_path(folder, epoch), {
            "loss": loss_sum / sample_count, "val_loss": val_loss, "val_ser": val_ser,
            "val_sequence_error": val_sequence_error, "epoch_time_sec": round(epoch_time, 3),
            "samples_per_sec": round(sample_count / train_time, 3),
            "dataset_size": sample_count,
        })
        self.guard()
        meta = {**progress.as_meta(), "row": row, "model_variables": [v.path for v in trainer.model.variables],
                "loss_scale": trainer.loss_scale}
        path = save_checkpoint(folder, epoch, *trainer.state_arrays(), meta=meta)
        if improved:
            self.export_best_model()
        self.guard()
        training_log.append_row(row)
        self.write_state(last_completed_epoch=epoch, checkpoint=str(path), best_epoch=progress.best_epoch,
                         best_val_ser=progress.best_val_ser)
        self.guard()
        prune_checkpoints(folder, CHECKPOINTS_KEPT, keep_epochs=[progress.best_epoch])
        self.log(f"epoch {epoch}/{config.max_total_epochs}: loss {row['loss']:.4f}, val loss {val_loss:.4f}, "
                 f"val SER {val_ser:.2f}%, sequence error {val_sequence_error:.2f}%, {epoch_time:.1f}s"
                 + (" (best)" if improved else ""))
        with summaries.as_default(step=epoch):
            for tag in ("loss", "val_loss", "val_ser", "learning_rate"):
                write_scalar(tag, row[tag])
        summaries.flush()
        self.on_progress({**row, "best_val_ser": progress.best_val_ser, "best_epoch": progress.best_epoch})

    def validate(self, val_batches) -> tuple[float, float, float]:
        """(mean CTC loss, SER %, sequence error %) on the validation split, batch norm in inference mode."""
        trainer = self.trainer
        loss_sum, predictions, truths = 0.0, [], []
        for batch in val_batches:
            logits, losses = trainer.eval_step(batch["image"], batch["image_width"], batch["label"],
                                               batch["label_length"])
            loss_sum += float(losses.numpy().sum())
            predictions += decode_logits(logits, batch["image_width"], trainer.preset, trainer.blank, None)
            truths += [list(row[:n]) for row, n in zip(batch["label"].numpy(), batch["label_length"].numpy())]
        ser, sequence_error = error_rates(predictions, truths)
        return loss_sum / len(truths), ser, sequence_error

    def csv_row(self, epoch: int, progress: Progress, path, metrics: dict) -> dict:
        config = self.config
        remaining = config.max_total_epochs - epoch
        recent = progress.recent_epoch_times
        now = datetime.now(timezone.utc)
        eta = now + timedelta(seconds=remaining * sum(recent) / len(recent))
        return {
            "timestamp": now.isoformat(timespec="seconds"), "run": self.name, "dataset": config.dataset,
            "epoch": epoch, "max_total_epochs": config.max_total_epochs, **metrics,
            "cumulative_time_sec": round(progress.cumulative_time_sec, 3),
            "learning_rate": self.trainer.learning_rate, "batch_size": config.batch_size,
            "remaining_epochs": remaining, "est_completion_time": eta.isoformat(timespec="seconds"),
            "worker": self.worker, "chunk": self.chunk, "checkpoint_path": str(path),
            "memory_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        }

    def export_best_model(self) -> None:
        """The best weights as a standalone `.keras` model, for inference outside this project."""
        self.guard()
        folder = run_state.checkpoints_dir(self.name)
        temporary = folder / ".best_model_tmp.keras"
        try:
            self.trainer.model.save(temporary)
            temporary.replace(folder / BEST_MODEL_FILE)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise SupersmmError(f"cannot write {folder / BEST_MODEL_FILE}: {error.strerror or error}") from None

