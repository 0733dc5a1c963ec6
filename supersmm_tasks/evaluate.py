"""Symbol error rate, sequence error rate and prediction with a run's best checkpoint; `score`, the one
pass over a split that both training (val SER every epoch) and `evaluate_run` make.

SER = total edit distance between predicted and true token sequences / total true tokens, in percent.
Sequence error rate = share of samples whose prediction is not exactly right, in percent.
An agnostic network learns the symbols drawn where the corpus has them; its readings are scored as PrIMuS's
labels (labelling.py), and for a run with semantic labels as music, each reading turned into semantic tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from . import pipeline, run_state
from .checkpoint import restore_variables
from .errors import SupersmmError
from .model import PRESETS, beam_decode, build_model, greedy_decode, logit_lengths
from .run_config import RunConfig, load_run_config
from .corpus import load_dataset
from .labelling import read_as
from .vocabulary import blank_index, load_vocabulary


def edit_distance(predicted: list, truth: list) -> int:
    """Levenshtein distance between two token sequences."""
    previous = list(range(len(truth) + 1))
    for i, p in enumerate(predicted, start=1):
        current = [i]
        for j, t in enumerate(truth, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (p != t)))
        previous = current
    return previous[-1]


def error_rates(predictions: list[list], truths: list[list]) -> tuple[float, float]:
    """(SER %, sequence error %) over paired predictions and truths."""
    if not truths:
        raise ValueError("no samples to score")
    errors = sum(edit_distance(p, t) for p, t in zip(predictions, truths))
    symbols = sum(len(t) for t in truths)
    wrong = sum(p != t for p, t in zip(predictions, truths))
    return 100.0 * errors / max(symbols, 1), 100.0 * wrong / len(truths)


def inference_step(model):
    """A compiled forward pass in inference mode (batch norm uses its moving statistics)."""
    return tf.function(
        lambda image: model(image, training=False),
        input_signature=[tf.TensorSpec([None, model.input_shape[1], None, 1], tf.float32)],
    )


def decode_logits(logits, image_width, preset, blank: int, beam_width: int | None) -> list[list[int]]:
    lengths = logit_lengths(image_width, preset).numpy()
    if beam_width:
        return beam_decode(np.asarray(logits), lengths, beam_width)
    return greedy_decode(np.asarray(logits), lengths, blank)


@dataclass
class LabelsFromReadings:
    """How an agnostic network's readings are scored: each turned into the run's labels (labelling.read_as),
    against the label of the same example."""
    vocabulary: list[str]       # the network's agnostic tokens
    encoding: str               # the run's labels
    truths: list[list[str]]     # the label of each example, by its index in the batches

    def reading(self, ids: list[int]) -> list[str]:
        return read_as([self.vocabulary[i] for i in ids], self.encoding)


def scored_examples(config: RunConfig, dataset: str, split: str,
                    examples: list) -> tuple[list, LabelsFromReadings | None]:
    """The examples (labelled for the network) that score the run on `split`, and how to score their readings:
    None where the network writes semantic tokens, scored as they are."""
    if config.network_encoding != "agnostic":
        return examples, None
    vocabulary = list(load_vocabulary("agnostic"))
    if not config.semantic_via_agnostic:
        return examples, LabelsFromReadings(vocabulary, "agnostic", [example.tokens for example in examples])
    semantic = {example.id: example.tokens for example in load_dataset(dataset).examples(split, "semantic")}
    kept = [example for example in examples if example.id in semantic]
    if not kept:
        raise SupersmmError(f"dataset {dataset!r} has no {split} samples with both agnostic and semantic labels: "
                            f"run {config.run!r} reads semantic labels through agnostic symbols")
    return kept, LabelsFromReadings(vocabulary, "semantic", [semantic[example.id] for example in kept])


@dataclass
class Score:
    ser: float  # %
    sequence_error: float  # %
    samples: int
    loss: float | None  # mean CTC loss, where the step computes it


def score(batches, step, preset, blank: int, beam_width: int | None = None,
          labels: LabelsFromReadings | None = None) -> Score:
    """One pass over `batches`, as training validates every epoch and `evaluate_run` scores a checkpoint.

    step(batch) gives the batch's logits, computed with batch norm in inference mode, and its per-sample
    CTC losses (None where only the error rates are wanted). With `labels`, the readings are scored as labels.
    """
    loss_sum, predictions, truths = None, [], []
    for batch in batches:
        logits, losses = step(batch)
        if losses is not None:
            loss_sum = (loss_sum or 0.0) + float(losses.numpy().sum())
        readings = decode_logits(logits, batch["image_width"], preset, blank, beam_width)
        if labels is None:
            predictions += readings
            truths += [list(row[:n]) for row, n in zip(batch["label"].numpy(), batch["label_length"].numpy())]
        else:
            predictions += [labels.reading(ids) for ids in readings]
            truths += [labels.truths[index] for index in batch["index"].numpy()]
    ser, sequence_error = error_rates(predictions, truths)
    return Score(ser, sequence_error, len(truths), None if loss_sum is None else loss_sum / len(truths))


def evaluate_run(name: str, split: str = "val", beam_width: int | None = None, dataset: str | None = None) -> dict:
    """SER and sequence error rate (%) of the run's best checkpoint on `split` of its dataset (or of `dataset`,
    labelled in the run's encoding: how a model reads another corpus)."""
    if split not in ("val", "test"):
        raise SupersmmError(f"unknown split {split!r}: use val or test")
    config = load_run_config(name)
    model, epoch = best_model(config)
    dataset = dataset or config.dataset
    examples = load_dataset(dataset).examples(split, config.network_encoding)
    if not examples:
        raise SupersmmError(f"dataset {dataset!r} has no {split} samples for encoding {config.network_encoding}")
    examples, too_narrow = pipeline.ctc_fitting(examples, PRESETS[config.model])  # as training validates
    if not examples:
        raise SupersmmError(f"every {split} staff of dataset {dataset!r} is too narrow for its label at height "
                            f"{config.height}")
    examples, labels = scored_examples(config, dataset, split, examples)
    forward = inference_step(model)
    # The training batch size pads the validation batches as training did, so val SER matches the CSV.
    batches = pipeline.epoch_batches(
        examples, encoding=config.network_encoding, height=config.height, batch_size=config.batch_size,
        seed=config.seed, epoch=0, training=False,
    )
    result = score(batches, lambda batch: (forward(batch["image"]), None), PRESETS[config.model],
                   blank_index(config.network_encoding), beam_width, labels)
    return {
        "run": name, "dataset": dataset, "split": split, "epoch": epoch, "samples": result.samples,
        "too_narrow": len(too_narrow),
        "ser": result.ser, "sequence_error": result.sequence_error,
        "decoder": f"beam {beam_width}" if beam_width else "greedy",
    }


def predict(name: str, image_paths: list[str]) -> list[list[str]]:
    """The recognised tokens of each image (PNG or JPEG, any size, grayscale or colour), each read whole."""
    from .recognizer import Recognizer

    recognizer = Recognizer.load(name)
    return [recognizer.read(path) for path in image_paths]


def best_model(config: RunConfig):
    """The run's model with the weights of its best checkpoint (by val SER), and that epoch."""
    checkpoint = run_state.best_checkpoint(config.run)
    if checkpoint is None:
        raise SupersmmError(f"run {config.run!r} has no checkpoint yet: train at least one epoch first")
    model = build_model(PRESETS[config.model], len(load_vocabulary(config.network_encoding)), config.seed)
    restore_variables(model.variables, checkpoint.model_arrays, checkpoint.path)
    return model, checkpoint.epoch
