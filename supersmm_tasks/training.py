"""`train_chunk`: train one chunk of epochs of a run, resuming exactly where its last checkpoint ends.

The chunk reads top to bottom in `_train`: load the run's config, `restore_run`, build the data, then
for each epoch `train_epoch`, `validate`, and `RunWriter.commit_epoch`.

Each epoch ends with four writes, in this order, so that a kill at any instant leaves a run that
resumes from its last completed epoch:
1. the checkpoint (model, optimizer, seed-generator states, counters, the epoch's CSV row), atomically;
2. the epoch's row in logs/training_log.csv;
3. training_state.txt, which therefore never names an epoch ahead of a complete checkpoint;
4. the human-readable log and TensorBoard scalars.
At the start of a chunk the newest checkpoint that verifies is the truth: the CSV and the state are
brought back in line with it (rows beyond it dropped, its own row restored if missing). A fine-tuned run
without a checkpoint of its own starts from the model weights of the checkpoint named in its config, with a
fresh optimizer. Every write goes through `RunWriter`, which asks the guard first.
"""
from __future__ import annotations

import math
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf
from tensorflow.core.framework import summary_pb2
from tensorflow.python.framework import config as tf_config

from . import faults, paths, pipeline, run_state, training_log
from .chunk import ChunkResult, ChunkSpan
from .checkpoint import (
    CorruptCheckpoint, checkpoint_path, latest_valid_checkpoint, load_checkpoint, prune_checkpoints,
    save_checkpoint,
)
from .corpus import load_dataset
from .durable import DiskFull, is_disk_full, remove_unfinished_writes
from .errors import ChunkInterrupted, SupersmmError
from .evaluate import LabelsFromReadings, Score, score, scored_examples
from .model import gpu_present
from .run_config import RunConfig, fit_epoch_budget, load_run_config
from .run_status import (CONTROL_REQUESTS, ENDED, EPOCH_BUDGET_USED, TIME_BUDGET_USED, RunStatus, stop_as_requested,
                         transition)
from .trainer import TRAINERS, Trainer

CHECKPOINTS_KEPT = 3
ETA_EPOCHS = 5  # the ETA uses the mean time of this many recent epochs


def chunk_result(name: str, state: dict, epochs_trained: int) -> ChunkResult:
    return ChunkResult(
        run=name, last_completed_epoch=state["last_completed_epoch"], status=state["status"],
        stop_reason=state.get("stop_reason") or None, best_val_ser=state.get("best_val_ser"),
        best_epoch=state.get("best_epoch"), epochs_trained=epochs_trained,
    )


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


def train_chunk(name: str, span: ChunkSpan, *, guard=None, should_stop=None, on_progress=None,
                worker: str | None = None) -> ChunkResult:
    """Train the epochs of `span` up to its last (1-based, inclusive) from the run's newest checkpoint.

    A redelivered chunk trains only what is missing. guard() is called before every write and
    raises to abort; should_stop() is asked at every epoch boundary, the chunk's end included, and may
    answer "paused" or "cancelled"; on_progress(dict) hears about every batch, trained or validated, and
    every finished epoch.
    """
    run = RunWriter(name, guard)
    try:
        return _train(run, span, should_stop or (lambda: None), faults.applied(on_progress or (lambda update: None)),
                      worker or socket.gethostname())
    except LostRun as lost:
        raise lost.error from None  # another process owns the run now: write nothing more
    except ChunkInterrupted:
        raise  # the worker is stopping; the run goes on from its last checkpoint elsewhere or later
    except Exception as error:
        full = _disk_full(name, error)
        run.record_failure(full or error)
        if full is None:
            raise
        raise full from None


def _train(run: RunWriter, span: ChunkSpan, should_stop, on_progress, worker: str) -> ChunkResult:
    """The chunk from top to bottom: the config, the restore, the data, then train, validate and commit
    each epoch until the chunk's last, a stop request or the run's end."""
    run.guard()
    config = load_run_config(run.name)
    state = run_state.read_state(run.name)
    if state["status"] in ENDED:
        return chunk_result(run.name, state, epochs_trained=0)
    if span.first_epoch < 1 or span.last_epoch < span.first_epoch:
        raise SupersmmError(f"invalid epoch range {span.epochs} for run {run.name!r}")
    last_epoch, chunk = min(span.last_epoch, config.max_total_epochs), span.chunk
    _configure_determinism(config)

    trainer, progress = restore_run(config, run, worker, chunk)
    config = keep_to_time(run, trainer, config, progress)  # as after this epoch, in case its chunk died before that
    stop = finished(config, progress)
    if stop:
        return run.finish(progress, *stop, epochs_trained=0)
    train_examples = usable_examples(config, "train", trainer.preset, run.log)
    val_examples, labels = scored_examples(config, config.dataset, "val",
                                          usable_examples(config, "val", trainer.preset, run.log))
    train_batches = epoch_batches(config, train_examples, training=True, log=run.log)
    trainer.follow_budget(config.max_total_epochs, steps_per_epoch=math.ceil(len(train_batches) / config.batch_size))
    val_batches = epoch_batches(config, val_examples, training=False, log=run.log).epoch(0)  # the same every epoch
    run.log(f"chunk {chunk} on {worker}: epochs {progress.epoch + 1}-{last_epoch} "
            f"of {config.max_total_epochs} ({len(train_batches)} training samples, "
            f"{'deterministic' if deterministic(config) else 'not deterministic'})")
    run_state.backup_log(run.name)

    summaries = tf.summary.create_file_writer(str(paths.tensorboard_dir(run.name)))
    epochs_trained = 0
    try:
        for epoch in range(progress.epoch + 1, last_epoch + 1):
            stopped = run.stop_if_requested(progress, should_stop, epochs_trained)
            if stopped:
                return stopped
            started = time.monotonic()
            loss, samples = train_epoch(trainer, train_batches, epoch, on_progress, run.log)
            train_time = time.monotonic() - started
            validation = validate(trainer, val_batches, labels, epoch, on_progress)
            epoch_time = time.monotonic() - started
            improved = progress.record(epoch, validation.ser, epoch_time)
            learning_rate = trainer.learning_rate  # before the schedule follows a new budget
            # A budget changed meanwhile, or lowered to the time left: the run ends at it, the epoch's row shows it,
            # and the schedule spans it from the next epoch on.
            config = keep_to_time(run, trainer, load_run_config(run.name), progress)
            row = training_log.epoch_row(
                run.name, config, epoch, {
                    "loss": loss, "val_loss": validation.loss, "val_ser": validation.ser,
                    "val_sequence_error": validation.sequence_error, "epoch_time_sec": round(epoch_time, 3),
                    "samples_per_sec": round(samples / train_time, 3), "dataset_size": samples,
                },
                cumulative_time_sec=progress.cumulative_time_sec, recent_epoch_times=progress.recent_epoch_times,
                learning_rate=learning_rate, worker=worker, chunk=chunk,
                checkpoint_path=checkpoint_path(run.checkpoints, epoch))
            run.commit_epoch(epoch, trainer, progress, row, improved)
            report_epoch(run, config, row, progress, improved, summaries, on_progress)
            epochs_trained += 1
            stop = finished(config, progress)
            if stop:
                return run.finish(progress, *stop, epochs_trained)
    finally:
        summaries.close()
    stopped = run.stop_if_requested(progress, should_stop, epochs_trained)  # asked during the chunk's last epoch
    return stopped or run.finish(progress, RunStatus.RUNNING, None, epochs_trained)


def _disk_full(name: str, error: Exception) -> SupersmmError | None:
    """The one-line error to report when `error` is a full disk or quota (in our atomic writes or anyone's),
    else None."""
    if not is_disk_full(error):
        return None
    filename = error.path if isinstance(error, DiskFull) else error.filename
    return SupersmmError(f"disk full while training run {name!r} ({filename or 'a run file'}): "
                         "free some space, then continue the run")


# ---------------------------------------------------------------- resume


def restore_run(config: RunConfig, run: RunWriter, worker: str, chunk: int) -> tuple[Trainer, Progress]:
    """The run's trainer and counters as of its newest checkpoint that verifies (a damaged newer one is
    deleted), with the CSV and the state lined up with it; without a checkpoint, a fine-tuned run starts
    from the weights of the run it was created from."""
    for left in remove_unfinished_writes(run.checkpoints):
        run.log(f"removed {left.name}, a write that a crash cut off")
    checkpoint = latest_valid_checkpoint(run.checkpoints, on_corrupt=run.discard_corrupt)
    trainer = TRAINERS.trainer_for(config, resuming=checkpoint is not None)
    progress = Progress()
    if checkpoint is not None:
        trainer.restore(checkpoint)
        progress = Progress.from_meta(checkpoint.meta)
        if progress.best_epoch == checkpoint.epoch and not _exported_since(checkpoint.path, paths.best_model_path(run.name)):
            run.export_best_model(trainer)  # the last chunk stopped between the best checkpoint and its export
    elif config.init_checkpoint:
        start_from_another_run(config, trainer, run.log)
    run.line_up_with(checkpoint, progress, worker, chunk)
    return trainer, progress


def _exported_since(checkpoint: Path, best_model: Path) -> bool:
    try:
        return best_model.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns
    except FileNotFoundError:
        return False


def start_from_another_run(config: RunConfig, trainer: Trainer, log) -> None:
    try:
        checkpoint = load_checkpoint(Path(config.init_checkpoint))
    except CorruptCheckpoint as error:
        raise SupersmmError(f"run {config.run!r} starts from run {config.init_from!r}'s checkpoint "
                            f"{config.init_checkpoint}, which is gone or damaged ({error})") from None
    trainer.start_from(checkpoint)
    log(f"starting from run {config.init_from}'s weights of epoch {checkpoint.epoch} "
        f"(val SER {checkpoint.meta.get('best_val_ser')}%), optimizer fresh")


def epochs_in_time(config: RunConfig, progress: Progress) -> int:
    """The epoch budget of a run with a time budget (`max_minutes` of training, as `cumulative_time_sec` counts it)
    once `progress.epoch` epochs are done: as many more as fit in the minutes left at the pace of its recent epochs,
    never more than its `epoch_cap`, never fewer than the epochs done. The run's first epoch also traces the model,
    so the fitting starts after its second and leaves the first out of the pace. A pure function of the config and
    the counters in the checkpoint: a resumed run fits exactly as the uninterrupted one did."""
    times = progress.recent_epoch_times
    if config.max_minutes is None or progress.epoch < 2 or not times:
        return config.max_total_epochs
    if len(times) >= progress.epoch:
        times = times[1:]
    pace = sum(times) / len(times)
    seconds_left = config.max_minutes * 60 - progress.cumulative_time_sec
    return max(progress.epoch, min(config.epochs_given, progress.epoch + int(seconds_left // pace)))


def keep_to_time(run: RunWriter, trainer: Trainer, config: RunConfig, progress: Progress) -> RunConfig:
    """The run's config with its epoch budget fitted to its time budget (`epochs_in_time`), written and logged
    where it changed; the trainer's schedule spans the budget from the next epoch on."""
    budget = epochs_in_time(config, progress)
    if budget != config.max_total_epochs:
        run.guard()
        config = fit_epoch_budget(config.run, budget)
        run.log(f"{budget} epochs fit in the run's {config.max_minutes:g} minutes of training "
                f"({progress.cumulative_time_sec / 60:.1f} spent after epoch {progress.epoch})")
    trainer.follow_budget(config.max_total_epochs)
    return config


def finished(config: RunConfig, progress: Progress) -> tuple[RunStatus, str] | None:
    """(status, stop_reason) once the run is over, else None."""
    if progress.epoch >= config.max_total_epochs:
        fitted_to_time = config.max_minutes is not None and config.max_total_epochs < config.epochs_given
        return RunStatus.COMPLETED, TIME_BUDGET_USED if fitted_to_time else EPOCH_BUDGET_USED
    if config.patience and progress.epochs_since_best >= config.patience:
        return RunStatus.COMPLETED, f"early stop: no val SER improvement in {config.patience} epochs"
    return None


# ---------------------------------------------------------------- data


def usable_examples(config: RunConfig, split: str, preset, log) -> list:
    """The split's examples, less those whose image is too narrow to hold their label under CTC."""
    examples = load_dataset(config.dataset).examples(split, config.network_encoding)
    usable, skipped = pipeline.ctc_fitting(examples, preset)
    if skipped:
        ids = ", ".join(e.id for e in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        log(f"{len(skipped)} {split} samples skipped: too narrow at height {preset.height} "
            f"for their labels ({ids})")
    if not usable:
        raise SupersmmError(f"dataset {config.dataset!r} has no usable {split} samples "
                            f"for encoding {config.network_encoding}")
    return usable


def epoch_batches(config: RunConfig, examples: list, training: bool, log) -> pipeline.EpochBatches:
    """The examples' batches as the run's settings make them; images that no longer decode are logged."""
    batches = pipeline.EpochBatches(examples, encoding=config.network_encoding, height=config.height,
                                    batch_size=config.batch_size, seed=config.seed, training=training,
                                    augment=config.augment, curriculum=config.curriculum)
    if batches.skipped:
        shown = "; ".join(f"{path}: {why}" for path, why in batches.skipped[:3])
        log(f"{len(batches.skipped)} {'training' if training else 'validation'} images left out: they do "
            f"not decode ({shown}{' ...' if len(batches.skipped) > 3 else ''}); run `supersmm detect`")
    return batches


# ---------------------------------------------------------------- one epoch


def train_epoch(trainer: Trainer, batches: pipeline.EpochBatches, epoch: int, on_progress, log) -> tuple[float, int]:
    """One pass over the training batches: (mean CTC loss, samples seen)."""
    batch_count = math.ceil(len(batches) / trainer.config.batch_size)
    loss_sum, sample_count = 0.0, 0
    for number, batch in enumerate(batches.epoch(epoch), start=1):
        loss = float(trainer.train_step(batch["image"], batch["image_width"], batch["label"], batch["label_length"]))
        loss_sum += loss * int(batch["image"].shape[0])
        sample_count += int(batch["image"].shape[0])
        on_progress({"epoch": epoch, "batch": number, "batches": batch_count, "loss": loss})
    if sample_count < (1 - pipeline.MOST_OF_A_SET) * len(batches):
        raise SupersmmError(f"epoch {epoch}: only {sample_count} of {len(batches)} training images decode; "
                            f"they changed since detection: run `supersmm detect`")
    if sample_count < len(batches):
        log(f"epoch {epoch}: {len(batches) - sample_count} training images skipped, they do not "
            f"decode (run `supersmm detect`)")
    if not math.isfinite(loss_sum):  # a diverged model: nothing of this epoch is worth a checkpoint
        raise SupersmmError(f"epoch {epoch}: the training loss became {loss_sum / sample_count} (the model diverged); "
                            "nothing of it was written: start a new run with another seed or from another run's weights "
                            "(--init-from)")
    return loss_sum / sample_count, sample_count


def validate(trainer: Trainer, val_batches, labels: LabelsFromReadings | None, epoch: int, on_progress) -> Score:
    """Loss, SER and sequence error on the validation split, as `evaluate_run` scores a checkpoint."""
    def step(batch):
        return trainer.eval_step(batch["image"], batch["image_width"], batch["label"], batch["label_length"])

    def reported(batches):
        for number, batch in enumerate(batches, start=1):
            yield batch
            on_progress({"epoch": epoch, "validation_batch": number})

    return score(reported(val_batches), step, trainer.preset, trainer.blank, labels=labels)


def report_epoch(run: RunWriter, config: RunConfig, row: dict, progress: Progress, improved: bool, summaries,
                 on_progress) -> None:
    """A committed epoch in the run's log, in TensorBoard and to on_progress."""
    run.log(f"epoch {row['epoch']}/{config.max_total_epochs}: loss {row['loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"val SER {row['val_ser']:.2f}%, sequence error {row['val_sequence_error']:.2f}%, "
            f"{row['epoch_time_sec']:.1f}s" + (" (best)" if improved else ""))
    with summaries.as_default(step=row["epoch"]):
        for tag in ("loss", "val_loss", "val_ser", "learning_rate"):
            write_scalar(tag, row[tag])
    summaries.flush()
    on_progress({**row, "best_val_ser": progress.best_val_ser, "best_epoch": progress.best_epoch})


def write_scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar; tf.summary.scalar itself would need the tensorboard package installed."""
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    tf.summary.write(tag, tf.constant(value, tf.float32), metadata=metadata.SerializeToString())


# ---------------------------------------------------------------- every write of a chunk


class LostRun(Exception):
    """The guard refused a write: another process owns the run now (the guard's error inside)."""

    def __init__(self, error: BaseException):
        self.error = error


class RunWriter:
    """Every write a chunk makes to its run's files, each behind the guard (the run's fence)."""

    def __init__(self, name: str, guard=None):
        self.name = name
        self.checkpoints = paths.checkpoints_dir(name)
        self._guard = guard

    def guard(self) -> None:
        if self._guard is None:
            return
        try:
            self._guard()
        except Exception as error:
            raise LostRun(error) from error

    def log(self, message: str) -> None:
        self.guard()
        run_state.append_log(self.name, message)

    def write_state(self, **fields) -> dict:
        self.guard()
        return run_state.write_state(self.name, **fields)

    def discard_corrupt(self, path, reason: str) -> None:
        self.log(f"checkpoint {path} is damaged ({reason}); deleted, falling back to the previous one")
        path.unlink(missing_ok=True)

    def line_up_with(self, checkpoint, progress: Progress, worker: str, chunk: int) -> None:
        """Make the CSV and the state match the newest verified checkpoint (the committed epoch)."""
        self.guard()
        for change in training_log.reconcile_run(self.name, progress.epoch, row_for=self.stored_row):
            self.log(f"training log repaired: {change}")
        transition(
            self.name, RunStatus.RUNNING, guard=self.guard, last_completed_epoch=progress.epoch,
            checkpoint=str(checkpoint.path) if checkpoint else "", best_epoch=progress.best_epoch,
            best_val_ser=progress.best_val_ser, worker=worker, chunk=chunk, error="", stop_reason="",
        )

    def stored_row(self, epoch: int) -> dict | None:
        """The CSV row kept inside epoch's checkpoint, if that checkpoint still exists and verifies."""
        try:
            return load_checkpoint(checkpoint_path(self.checkpoints, epoch)).meta["row"]
        except CorruptCheckpoint:
            return None

    def commit_epoch(self, epoch: int, trainer: Trainer, progress: Progress, row: dict, improved: bool) -> None:
        """The epoch's checkpoint (and best model), then its CSV row, then the state: see the module's docstring."""
        self.guard()
        meta = {**progress.as_meta(), "row": row, "model_variables": [v.path for v in trainer.model.variables],
                **trainer.loss_scale_meta}
        path = save_checkpoint(self.checkpoints, epoch, *trainer.state_arrays(), meta=meta)
        if improved:
            self.export_best_model(trainer)
        self.guard()
        training_log.append_row(row)
        self.write_state(last_completed_epoch=epoch, checkpoint=str(path), best_epoch=progress.best_epoch,
                         best_val_ser=progress.best_val_ser)
        self.guard()
        prune_checkpoints(self.checkpoints, CHECKPOINTS_KEPT, keep_epochs=[progress.best_epoch])

    def export_best_model(self, trainer: Trainer) -> None:
        """The best weights as a standalone `.keras` model, for inference outside this project."""
        self.guard()
        temporary = self.checkpoints / ".best_model_tmp.keras"
        try:
            trainer.model.save(temporary)
            temporary.replace(paths.best_model_path(self.name))
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise SupersmmError(f"cannot write {paths.best_model_path(self.name)}: "
                                f"{error.strerror or error}") from None

    def finish(self, progress: Progress, status: RunStatus, stop_reason: str | None,
               epochs_trained: int) -> ChunkResult:
        state = transition(self.name, status, guard=self.guard, stop_reason=stop_reason or "")
        if status != RunStatus.RUNNING:
            self.log(f"run {status} at epoch {progress.epoch}: {stop_reason}")
        return chunk_result(self.name, state, epochs_trained)

    def stop_if_requested(self, progress: Progress, should_stop, epochs_trained: int) -> ChunkResult | None:
        """The run paused or cancelled when its user asks for it now; else None (no request, or a resume
        withdrew it meanwhile)."""
        if should_stop() not in CONTROL_REQUESTS:
            return None
        state = stop_as_requested(self.name, self.guard, should_stop)
        if state is None:
            self.log(f"pause withdrawn at epoch {progress.epoch}: training goes on")
            return None
        self.log(f"run {state['status']} at epoch {progress.epoch}: {state['stop_reason']}")
        return chunk_result(self.name, state, epochs_trained)

    def record_failure(self, error: Exception) -> None:
        """Best effort: mark the run failed with the error's one-line reason (not if we lost the run)."""
        reason = str(error) if isinstance(error, SupersmmError) else f"{type(error).__name__}: {error}"
        try:
            transition(self.name, RunStatus.FAILED, guard=self.guard, error=reason)
            self.log(f"chunk failed: {reason}")
        except Exception:
            pass


# ---------------------------------------------------------------- determinism


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
