"""The tf.data input pipeline on the real PrIMuS sample and on crops of it of many widths."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REAL_DEV_VARIABLE, REAL_SAMPLE, epoch_in_another_process
from supersmm_tasks.corpus import Example, load_dataset, read_label
from supersmm_tasks.detect import detect
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.pipeline import (
    CURRICULUM_EPOCHS, LABEL_MULTIPLE, WIDTH_MULTIPLE, EpochBatches, epoch_batches, load_image,
)
from supersmm_tasks.synth import generate_corpus
from supersmm_tasks.vocabulary import encode

pytestmark = pytest.mark.skipif(REAL_SAMPLE is None, reason=f"{REAL_DEV_VARIABLE} is unset: these tests read a real PrIMuS image")
REAL_PNG = REAL_SAMPLE / f"{REAL_SAMPLE.name}.png" if REAL_SAMPLE else None
REAL_TOKENS = REAL_PNG.with_suffix(".semantic").read_text("utf-8").split() if REAL_SAMPLE else []
REAL_WIDTH, REAL_HEIGHT = Image.open(REAL_PNG).size if REAL_SAMPLE else (0, 0)  # 1226 x 155 in the development set


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> list[Example]:
    """40 examples: the real image cut to widths from 200 to 1041 pixels, each with a different label length."""
    folder = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(7)
    image = Image.open(REAL_PNG)
    if image.width < 1042:  # a narrower staff (of another set of real incipits): stretched to give the same widths
        image = image.resize((1042, image.height))
    examples = []
    for number in range(40):
        width = int(rng.integers(200, 1042))
        path = folder / f"crop{number}.png"
        image.crop((0, 0, width, image.height)).save(path)
        examples.append(Example(f"crop{number}", str(path), REAL_TOKENS[:1 + number % len(REAL_TOKENS)],
                                width, image.height))
    return examples


def batches_of(examples, **options) -> list[dict]:
    settings = dict(encoding="semantic", height=64, batch_size=4, seed=3, epoch=1, training=True) | options
    return [{key: value.numpy() for key, value in batch.items()} for batch in epoch_batches(examples, **settings)]


def order_of(batches) -> list[list[int]]:
    return [batch["image_width"].tolist() + batch["label_length"].tolist() for batch in batches]


def test_the_real_sample_comes_out_as_the_model_expects():
    example = Example("real", str(REAL_PNG), REAL_TOKENS, REAL_WIDTH, REAL_HEIGHT)
    [batch] = batches_of([example], height=128, training=False)
    image = batch["image"][0, :, :, 0]

    width = round(REAL_WIDTH * 128 / REAL_HEIGHT)  # 1012 in the development set
    padded_width = -(-width // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    padded_length = -(-len(REAL_TOKENS) // LABEL_MULTIPLE) * LABEL_MULTIPLE

    assert batch["image"].shape == (1, 128, padded_width, 1) and batch["image"].dtype == np.float32
    assert batch["image_width"].tolist() == [width]
    assert batch["label_length"].tolist() == [len(REAL_TOKENS)]
    assert batch["label"].tolist() == [encode(REAL_TOKENS, "semantic") + [-1] * (padded_length - len(REAL_TOKENS))]
    assert image[:, width:].max() == 0 and image[0, 0] == 0  # padding and background: no ink
    assert 0.5 < image.max() <= 1 and image.mean() < 0.2  # thin black staff lines and notes on white paper
    assert np.array_equal(image[:, :width], load_image(str(REAL_PNG), 128)[:, :, 0])


def test_a_sample_with_drawn_symbols_is_labelled_with_them():
    label = REAL_PNG.with_suffix(".agnostic").read_text("utf-8").split()
    drawn = label[:3] + label[4:]
    example = Example("real", str(REAL_PNG), label, REAL_WIDTH, REAL_HEIGHT, drawn=drawn)
    [batch] = batches_of([example], encoding="agnostic", training=False)
    assert batch["label"][0, :batch["label_length"][0]].tolist() == encode(drawn, "agnostic")


def test_batches_are_padded_to_multiples_and_keep_each_samples_lengths(crops):
    batches = batches_of(crops)
    lengths = [(w, n) for b in batches for w, n in zip(b["image_width"].tolist(), b["label_length"].tolist())]

    assert sorted(lengths) == sorted((round(e.width * 64 / REAL_HEIGHT), len(e.tokens)) for e in crops)
    for batch in batches:
        width, length = batch["image"].shape[2], batch["label"].shape[1]
        assert width % 32 == 0 and width - 32 < batch["image_width"].max() <= width
        assert length % 8 == 0 and length - 8 < batch["label_length"].max() <= length
        for row, label_length in zip(batch["label"], batch["label_length"]):
            assert row[:label_length].tolist() == encode(REAL_TOKENS[:label_length], "semantic")
            assert (row[label_length:] == -1).all()
        assert all((batch["image"][i, :, w:] == 0).all() for i, w in enumerate(batch["image_width"]))


def test_bucketing_by_width_cuts_padding(crops):
    widths = np.array([w for b in batches_of(crops) for w in b["image_width"]])
    padded = sum(b["image"].shape[0] * b["image"].shape[2] for b in batches_of(crops))
    shuffled = np.random.default_rng(0).permutation(widths)
    unbucketed = sum(len(chunk) * -(-chunk.max() // 32) * 32 for chunk in np.split(shuffled, len(shuffled) // 4))

    assert padded < 0.85 * unbucketed, padded / unbucketed  # 0.78 on the development set's sample


@pytest.mark.integration
def test_an_epoch_is_the_same_in_another_process_and_differs_between_epochs(crops, tmp_path):
    widths_and_lengths = "b['image_width'].numpy().tolist() + b['label_length'].numpy().tolist()"
    other = epoch_in_another_process(crops, tmp_path, widths_and_lengths,
                                     encoding="semantic", height=64, batch_size=4, seed=3, epoch=1, training=True)

    assert other.returncode == 0, other.stderr
    assert json.loads(other.stdout.splitlines()[-1]) == order_of(batches_of(crops))
    assert order_of(batches_of(crops, epoch=2)) != order_of(batches_of(crops))
    assert order_of(batches_of(crops, seed=4)) != order_of(batches_of(crops))


def test_a_curriculum_reads_the_first_epochs_batches_from_narrowest_to_widest(crops):
    def members(batches):
        return sorted(tuple(sorted(batch["index"].tolist())) for batch in batches)

    def widest(batches):
        return [int(batch["image_width"].max()) for batch in batches]

    shuffled, curriculum = batches_of(crops), batches_of(crops, curriculum=True)
    assert members(curriculum) == members(shuffled)  # the same batches, in another order
    assert widest(curriculum) == sorted(widest(shuffled)) != widest(shuffled)
    after = CURRICULUM_EPOCHS + 1
    assert order_of(batches_of(crops, curriculum=True, epoch=after)) == order_of(batches_of(crops, epoch=after))
    assert order_of(batches_of(crops, curriculum=True, training=False)) == order_of(batches_of(crops, training=False))


def test_evaluation_order_is_fixed_and_by_width(crops):
    first = batches_of(crops, training=False, epoch=1)
    widths = [w for b in first for w in b["image_width"]]

    assert widths == sorted(widths)
    assert order_of(batches_of(crops, training=False, epoch=9, seed=1)) == order_of(first)


def test_cached_and_uncached_batches_are_identical(crops):
    cached, uncached = batches_of(crops, cache=True), batches_of(crops, cache=False)
    assert len(cached) == len(uncached) == 10
    for one, other in zip(cached, uncached):
        for key in one:
            assert np.array_equal(one[key], other[key]), key


def stateful_ops_in(dataset) -> set[str]:
    """The stateful ops in a dataset's functions: under op determinism, TensorFlow runs a pipeline that has
    any (but for a few it knows) one element at a time and without prefetch."""
    import tensorflow as tf
    from tensorflow.python.framework import op_def_registry

    graph = tf.compat.v1.GraphDef.FromString(dataset._as_serialized_graph().numpy())
    ops = {node.op for function in graph.library.function for node in function.node_def}
    return {op for op in ops if (definition := op_def_registry.get(op)) is not None and definition.is_stateful}


def test_images_decoded_from_files_keep_their_pipeline_parallel_under_op_determinism(crops):
    uncached = epoch_batches(crops, encoding="semantic", height=64, batch_size=4, seed=3, epoch=1, training=True,
                             cache=False)
    cached = epoch_batches(crops, encoding="semantic", height=64, batch_size=4, seed=3, epoch=1, training=True)
    assert stateful_ops_in(uncached) == set()
    assert "ReadVariableOp" in stateful_ops_in(cached)  # slices of the strip: cheap one at a time


def test_load_image_takes_any_png_or_jpeg(tmp_path):
    clean = load_image(str(REAL_PNG), 64)
    original = Image.open(REAL_PNG)
    original.convert("RGB").resize((2 * REAL_WIDTH, 2 * REAL_HEIGHT)).save(tmp_path / "big_colour.jpg", quality=90)
    original.convert("L").save(tmp_path / "gray.png")
    transparent = np.zeros((REAL_HEIGHT, REAL_WIDTH, 4), np.uint8)
    transparent[..., 3] = 255 - np.array(original.convert("L"))  # dark ink drawn on a transparent page
    Image.fromarray(transparent).save(tmp_path / "transparent.png")

    assert clean.shape == (64, round(REAL_WIDTH * 64 / REAL_HEIGHT), 1) and clean.dtype == np.float32
    for name in ("big_colour.jpg", "gray.png", "transparent.png"):
        image = load_image(str(tmp_path / name), 64)
        assert image.shape == clean.shape
        assert np.abs(image - clean).mean() < 0.02, name

    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(SupersmmError, match="cannot read image .*notes.txt: Unknown image file format"):
        load_image(str(tmp_path / "notes.txt"), 64)


def test_no_examples_is_an_error():
    with pytest.raises(SupersmmError, match="no examples"):
        batches_of([])


def test_an_engraved_camera_corpus_flows_from_detect_to_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("SUPERSMM_HOME", str(tmp_path))
    generate_corpus(tmp_path / "data" / "camera_primus", 6, seed=5, camera=True, workers=1, progress=False)
    [report] = detect()
    dataset = load_dataset("camera_primus")
    examples = [e for split in ("train", "val", "test") for e in dataset.examples(split, "semantic")]

    assert (report.valid, len(examples)) == (6, 6)
    batches = batches_of(examples, height=128, batch_size=3, training=False)
    rows = [row[:n].tolist() for b in batches for row, n in zip(b["label"], b["label_length"])]
    truth = [read_label(Path(e.image_path).with_name(f"{e.id}.semantic"), "semantic") for e in examples]
    assert sorted(rows) == sorted(encode(tokens, "semantic") for tokens in truth)
    for batch in batches:
        for image, width in zip(batch["image"], batch["image_width"]):
            inked = (image[:, :width] > 0.5).mean()
            assert 0.01 < inked < 0.5  # a photographed staff: some ink, mostly paper


def test_an_image_broken_after_detection_is_left_out_and_named_unless_most_are(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(REAL_PNG.read_bytes()[:-300])
    real = Example("real", str(REAL_PNG), REAL_TOKENS, REAL_WIDTH, REAL_HEIGHT)
    examples = [real, Example("broken", str(broken), REAL_TOKENS, REAL_WIDTH, REAL_HEIGHT)]

    batches = EpochBatches(examples, encoding="semantic", height=64, batch_size=4, seed=3, training=True)
    assert len(batches) == 1 and [path for path, _ in batches.skipped] == [str(broken)]
    assert [batch["image"].shape[0] for batch in batches.epoch(1)] == [1]

    with pytest.raises(SupersmmError, match=f"2 of 3 images do not decode \\(first: {broken}: .*run `supersmm detect`"):
        batches_of(examples + [Example("broken2", str(broken), REAL_TOKENS, REAL_WIDTH, REAL_HEIGHT)])
