"""A run's configuration (`model/NAME_model/config.json`) and the contract's epoch budget.

The config is written once when the run is created and holds everything needed to train it again:
the dataset (name, folder, split files), encoding (and, for semantic labels, whether the network reads them
through agnostic symbols), model preset, batch size, seed, budgets, the learning recipe (schedule,
augmentation, a first epoch from short staves to long) and, for a fine-tuned run, the checkpoint whose weights it
starts from.
Only the budgets (epochs, epochs per chunk, minutes), patience, queue and priority may change later; the rest
defines the run.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import paths, run_state
from .durable import write_atomically
from .corpus import load_dataset
from .errors import SupersmmError
from .presets import PRESETS
from .run_status import BUDGET_STOP_REASONS, RunStatus, transition
from .vocabulary import ENCODINGS, load_vocabulary

MUTABLE_SETTINGS = ("max_total_epochs", "max_epochs_per_run", "max_minutes", "patience", "queue", "priority")
FIXED_SETTINGS = ("model", "encoding", "seed", "batch_size", "deterministic", "schedule", "augment", "curriculum",
                  "init_from", "semantic_via_agnostic")
DEFAULTS = {"model": "paper", "encoding": "semantic", "seed": 0, "patience": 0, "schedule": "cosine",
            "curriculum": True}
SCHEDULES = ("constant", "cosine", "onecycle")  # schedule.py draws them
MOST_EPOCHS = 1_000_000  # far past any real budget (the contract's largest is 10,000); more overflows the ETA
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # what `celery worker -Q a,b` can name
# What a config written before the learning recipe (and the time budget) existed was trained with.
BEFORE_RECIPE = {"schedule": "constant", "augment": False, "init_from": None, "init_checkpoint": None,
                 "semantic_via_agnostic": False, "max_minutes": None, "epoch_cap": None, "curriculum": False}


@dataclass(frozen=True)
class RunConfig:
    run: str
    dataset: str
    dataset_path: str
    dataset_config: str
    split_files: dict
    split_seed: int | None
    camera: bool
    encoding: str
    model: str
    height: int
    batch_size: int
    learning_rate: float
    seed: int
    deterministic: bool | None  # None: on where a chunk trains on a CPU, off on a GPU
    train_samples: int
    max_total_epochs: int
    max_epochs_per_run: int
    patience: int
    queue: str | None
    priority: int | None
    created_at: str
    schedule: str = "cosine"             # learning rate over the epoch budget: constant, cosine or onecycle
    augment: bool = True                 # augment training images online (augment.py); the preset's default
    curriculum: bool = True              # the first epoch reads its batches from short staves to long (pipeline.py)
    init_from: str | None = None         # the run whose best weights this run starts from
    init_checkpoint: str | None = None   # that run's checkpoint file, fixed when this run was created
    semantic_via_agnostic: bool = False  # a semantic run whose network reads agnostic symbols (agnostic_to_semantic)
    max_minutes: float | None = None     # minutes of training the run keeps to (training.epochs_in_time)
    epoch_cap: int | None = None         # the epoch budget as last given: what a time budget fits max_total_epochs under

    @property
    def network_encoding(self) -> str:
        """The tokens the network writes and trains on. A semantic run through agnostic symbols trains on the
        agnostic labels of its samples and turns what it reads into semantic tokens (agnostic_to_semantic.py);
        its val SER is scored on the semantic labels."""
        return network_encoding(self.encoding, self.semantic_via_agnostic)

    @property
    def epochs_given(self) -> int:
        """The epoch budget the user gave, which a time budget fits `max_total_epochs` under (a config written
        before time budgets has no cap: its budget is the one given)."""
        return self.epoch_cap or self.max_total_epochs


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def epoch_budget(n_train: int) -> tuple[int, int]:
    """(max_total_epochs, max_epochs_per_run) for a training split of n_train samples (the contract)."""
    if n_train < 1:
        raise SupersmmError("the training split is empty: no epoch budget can be computed")
    max_total = _clamp(round(2_000_000 / n_train), 500, 10_000)
    return max_total, _clamp(round(max_total / 20), 50, 500)


def network_encoding(encoding: str, semantic_via_agnostic: bool) -> str:
    return "agnostic" if semantic_via_agnostic else encoding


ESSENTIAL_KEYS = {"dataset": str, "max_total_epochs": int, "max_epochs_per_run": int}  # a state is rebuilt from them


def stored_config(name: str) -> dict:
    """The run's config.json as stored: every reader of a run's config goes through here (light: no TensorFlow)."""
    path = paths.config_path(name)
    try:
        stored = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise SupersmmError(f"run {name!r} does not exist (no {path})") from None
    except (OSError, ValueError) as error:
        raise SupersmmError(f"cannot read {path}: {error}") from None
    if not isinstance(stored, dict):
        raise SupersmmError(f"cannot read {path}: not a JSON object")
    missing = [key for key, kind in ESSENTIAL_KEYS.items() if not isinstance(stored.get(key), kind)
               or isinstance(stored.get(key), bool)]
    if missing:
        raise SupersmmError(f"cannot read {path}: it lacks a valid {', '.join(missing)}")
    return stored


def load_run_config(name: str) -> RunConfig:
    path = paths.config_path(name)
    stored = {**BEFORE_RECIPE, **stored_config(name)}
    try:
        return RunConfig(**{f.name: stored[f.name] for f in fields(RunConfig)})
    except KeyError as missing:
        raise SupersmmError(f"{path} lacks {missing}") from None


def create_or_update_run(name: str, dataset: str | None = None, **overrides) -> RunConfig:
    """Create run `name` on `dataset` (default: the dataset of the same name), or change an existing run.

    Overrides are the run options; None means "not given". An existing run accepts new budgets,
    patience, queue and priority; a different dataset, model, encoding, seed, batch size, determinism,
    schedule, augmentation, curriculum or starting point would make it another run and is refused.
    """
    unknown = set(overrides) - set(MUTABLE_SETTINGS) - set(FIXED_SETTINGS)
    if unknown:
        raise SupersmmError(f"unknown run setting(s): {', '.join(sorted(unknown))}")
    given = {key: value for key, value in overrides.items() if value is not None}
    _check_values(given)
    if paths.config_path(name).exists():
        return _update_run(load_run_config(name), dataset, given)
    return _create_run(name, dataset or name, given)


def _check_values(given: dict) -> None:
    if "model" in given:
        if given["model"] not in PRESETS:
            raise SupersmmError(f"unknown model {given['model']!r}: use one of {', '.join(PRESETS)}")
    if "schedule" in given and given["schedule"] not in SCHEDULES:
        raise SupersmmError(f"unknown schedule {given['schedule']!r}: use one of {', '.join(SCHEDULES)}")
    if "encoding" in given and given["encoding"] not in ENCODINGS:
        raise SupersmmError(f"unknown encoding {given['encoding']!r}: use one of {', '.join(ENCODINGS)}")
    for key, low in (("max_total_epochs", 1), ("max_epochs_per_run", 1), ("batch_size", 1), ("patience", 0)):
        if key in given and (not isinstance(given[key], int) or not low <= given[key] <= MOST_EPOCHS):
            raise SupersmmError(f"--{key.replace('_', '-')} must be an integer from {low} to {MOST_EPOCHS:,}, "
                                f"got {given[key]!r}")
    if "max_minutes" in given and (isinstance(given["max_minutes"], bool)
                                   or not isinstance(given["max_minutes"], (int, float))
                                   or not 0 < given["max_minutes"] < math.inf):
        raise SupersmmError(f"--max-minutes must be a number of minutes > 0, got {given['max_minutes']!r}")
    if "seed" in given and (type(given["seed"]) is not int or not 0 <= given["seed"] < 2**32):
        raise SupersmmError(f"--seed must be a whole number from 0 to {2**32 - 1}, got {given['seed']!r}")
    if "queue" in given and not (isinstance(given["queue"], str) and QUEUE_NAME.fullmatch(given["queue"])):
        raise SupersmmError(f"--queue {given['queue']!r}: a queue name is 1-64 letters, digits and . _ : - "
                            "(starting with a letter or digit)")


def _create_run(name: str, dataset_name: str, given: dict) -> RunConfig:
    dataset = load_dataset(dataset_name)
    source = _starting_point(name, given["init_from"]) if "init_from" in given else None
    settings = {**DEFAULTS, **({"model": source[0].model, "encoding": source[0].encoding} if source else {}), **given}
    if source and settings["encoding"] == "semantic" and "semantic_via_agnostic" not in given:
        # A fine-tuned run keeps its source's network: an agnostic one serves a semantic run through agnostic symbols.
        settings["semantic_via_agnostic"] = source[0].network_encoding == "agnostic"
    preset = PRESETS[settings["model"]]
    settings["semantic_via_agnostic"] = _via_agnostic(settings, preset)
    if source:
        _check_same_labels(*source, settings)
    network = network_encoding(settings["encoding"], settings["semantic_via_agnostic"])
    train_samples = dataset.count("train", network)
    if train_samples == 0:
        raise SupersmmError(
            f"dataset {dataset.name!r} has no valid {network} training samples ({dataset.path})"
            + ("; train with --direct-semantic to use its semantic labels alone" if settings["semantic_via_agnostic"] else "")
        )
    max_total, per_run = epoch_budget(train_samples)
    folder_existed = paths.run_dir(name).exists()
    new_files = [path for path in (paths.config_path(name), paths.state_path(name), paths.init_checkpoint_path(name))
                 if not path.exists()]
    try:
        config = RunConfig(
            run=name,
            dataset=dataset.name,
            dataset_path=str(dataset.path),
            dataset_config=str(dataset.config_path),
            split_files={split: str(path) for split, path in dataset.split_files.items()},
            split_seed=dataset.split_seed,
            camera=dataset.camera,
            encoding=settings["encoding"],
            model=settings["model"],
            height=preset.height,
            batch_size=settings.get("batch_size", preset.batch_size),
            learning_rate=preset.learning_rate,
            seed=settings["seed"],
            deterministic=settings.get("deterministic"),
            train_samples=train_samples,
            max_total_epochs=settings.get("max_total_epochs", max_total),
            max_epochs_per_run=settings.get("max_epochs_per_run", per_run),
            patience=settings["patience"],
            queue=settings.get("queue"),
            priority=settings.get("priority"),
            created_at=run_state.now_iso(),
            schedule=settings["schedule"],
            augment=settings.get("augment", preset.augment or dataset.camera),  # presets.py says why
            curriculum=settings["curriculum"],
            init_from=source[0].run if source else None,
            init_checkpoint=str(_copy_of_starting_point(name, source[1].path)) if source else None,
            semantic_via_agnostic=settings["semantic_via_agnostic"],
            max_minutes=settings.get("max_minutes"),
            epoch_cap=settings.get("max_total_epochs", max_total),
        )
        _write_config(config)
        run_state.write_state(name)  # the run's first state, made from its config: status queued
        start = f", starting from run {source[0].run}'s best weights ({source[1].path.name})" if source else ""
        timed = f" in {config.max_minutes:g} minutes of training" if config.max_minutes else ""
        run_state.append_log(name, f"run created on dataset {config.dataset} ({train_samples} training samples), "
                                   f"model {config.model}, {describe_encoding(config)} labels, "
                                   f"{config.max_total_epochs} epochs at most{timed}, "
                                   f"{config.schedule} schedule, augmentation {'on' if config.augment else 'off'}, "
                                   f"curriculum {'on' if config.curriculum else 'off'}{start}")
    except BaseException:  # a full disk, Ctrl-C: no run half made, whose next enqueue would skip its creation
        _remove_unfinished_run(name, folder_existed, new_files)
        raise
    return config


def _remove_unfinished_run(name: str, folder_existed: bool, new_files: list[Path]) -> None:
    """Remove what a cut-off creation wrote: the run's folder, or its new files where the folder was there before."""
    if not folder_existed:
        shutil.rmtree(paths.run_dir(name), ignore_errors=True)
    for path in new_files:
        path.unlink(missing_ok=True)


def _via_agnostic(settings: dict, preset) -> bool:
    """Whether a new run's network reads agnostic symbols for its semantic labels (the preset decides by default)."""
    chosen = settings.get("semantic_via_agnostic")
    if settings["encoding"] != "semantic":
        if chosen:
            raise SupersmmError("--semantic-via-agnostic is for runs with semantic labels (--encoding semantic)")
        return False
    return preset.semantic_via_agnostic if chosen is None else bool(chosen)


def describe_encoding(config: RunConfig) -> str:
    """"semantic", "agnostic" or "semantic (read through agnostic symbols)"."""
    return f"{config.encoding} (read through agnostic symbols)" if config.semantic_via_agnostic else config.encoding


def _starting_point(name: str, source_name: str):
    """(config, best checkpoint) of the run a new run starts from; a clear error when there is none."""
    if paths.validate_run_name(source_name) == name:
        raise SupersmmError(f"run {name!r} cannot start from its own weights: give --init-from another run")
    if not paths.config_path(source_name).exists():
        raise SupersmmError(f"--init-from {source_name}: there is no run {source_name!r} to start from")
    source = load_run_config(source_name)
    checkpoint = run_state.best_checkpoint(source_name)
    if checkpoint is None:
        raise SupersmmError(f"--init-from {source_name}: run {source_name!r} has no checkpoint yet; "
                            "train it at least one epoch first")
    return source, checkpoint


def _copy_of_starting_point(name: str, checkpoint: Path) -> Path:
    """The new run's own copy of the checkpoint it starts from: the source run, training on, prunes its checkpoints,
    and a fine-tuned run queued meanwhile (or killed in its first epoch) would find its starting point gone."""
    try:
        content = Path(checkpoint).read_bytes()
    except OSError as error:
        raise SupersmmError(f"cannot read the checkpoint to start from, {checkpoint}: {error.strerror or error}; "
                            "try again") from None
    copy = paths.init_checkpoint_path(name)
    write_atomically(copy, content)
    return copy


def _check_same_labels(source: RunConfig, checkpoint, settings: dict) -> None:
    """Fine-tuning keeps the model's output layer, so it needs the source's preset and the tokens its network writes."""
    network = network_encoding(settings["encoding"], settings["semantic_via_agnostic"])
    if network != source.network_encoding:
        raise SupersmmError(
            f"--init-from {source.run}: that run's network writes {source.network_encoding} tokens, this run's "
            f"would write {network} ones; fine-tuning needs the same vocabulary")
    if settings["model"] != source.model:
        raise SupersmmError(f"--init-from {source.run}: that run has model {source.model}, this run "
                            f"{settings['model']}; fine-tuning needs the same model preset")
    tokens = len(load_vocabulary(source.network_encoding))
    outputs = [array.shape[-1] for path, array in zip(checkpoint.meta.get("model_variables", []),
                                                      checkpoint.model_arrays) if path.endswith("token_logits/kernel")]
    if outputs and outputs[0] != tokens + 1:
        raise SupersmmError(
            f"--init-from {source.run}: its model reads {outputs[0] - 1} {source.network_encoding} tokens, this vocabulary "
            f"has {tokens}; fine-tuning needs the same vocabulary")


def _update_run(config: RunConfig, dataset_name: str | None, given: dict) -> RunConfig:
    if dataset_name is not None and dataset_name != config.dataset:
        raise SupersmmError(
            f"run {config.run!r} trains on dataset {config.dataset!r}, not {dataset_name!r}: "
            "start a new run under another name for another dataset"
        )
    for key in FIXED_SETTINGS:
        if key in given and given[key] != getattr(config, key):
            raise SupersmmError(
                f"run {config.run!r} was created with {key} {getattr(config, key)!r}; it cannot change to "
                f"{given[key]!r} (start a new run under another name instead)"
            )
    state = run_state.read_state(config.run)
    done, total = state["last_completed_epoch"], given.get("max_total_epochs")
    # Nothing would be left to train, and no chunk to queue: the run would wait, queued, for ever (a completed run
    # given its own budget again stays complete; below it, the budget would say it trained more than it may).
    if total is not None and (total < done or total == done and state["status"] != RunStatus.COMPLETED):
        raise SupersmmError(f"run {config.run!r} has trained {done} epochs: --max-total-epochs "
                            f"{given['max_total_epochs']} leaves none to train; give more than {done}")
    changes = {key: given[key] for key in MUTABLE_SETTINGS if key in given}  # _change_run keeps those that differ
    if "max_total_epochs" in given:
        changes["epoch_cap"] = given["max_total_epochs"]
    elif given.get("max_minutes", config.max_minutes) != config.max_minutes:
        # The budget was fitted to the old time: back to the cap, and the next epoch fits it to the new time.
        changes["max_total_epochs"] = config.epochs_given
    return _change_run(config, changes)


def fit_epoch_budget(name: str, epochs: int) -> RunConfig:
    """The worker's fit of the epoch budget to the run's time budget (`training.epochs_in_time`): it changes
    `max_total_epochs` only, never the cap the user gave."""
    return _change_run(load_run_config(name), {"max_total_epochs": epochs}, quiet=True)


def _change_run(config: RunConfig, changes: dict, quiet: bool = False) -> RunConfig:
    """Write the changed settings into the config, the budgets into the state; a completed run given more epochs
    is queued again."""
    changes = {key: value for key, value in changes.items() if value != getattr(config, key)}
    if not changes:
        return config
    config = RunConfig(**{**asdict(config), **changes})
    _write_config(config)
    state = run_state.read_state(config.run)
    budget = {"max_total_epochs": config.max_total_epochs, "max_epochs_per_run": config.max_epochs_per_run}
    if state["status"] == RunStatus.COMPLETED and state.get("stop_reason") in BUDGET_STOP_REASONS \
            and config.max_total_epochs > state["last_completed_epoch"]:
        transition(config.run, RunStatus.QUEUED, stop_reason="", **budget)
    else:
        run_state.write_state(config.run, **budget)
    if not quiet:
        run_state.append_log(config.run, "settings changed: " + ", ".join(
            f"{key}={value}" for key, value in changes.items()))
    return config


def _write_config(config: RunConfig) -> None:
    path = paths.config_path(config.run)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(asdict(config), indent=2) + "\n").encode())
