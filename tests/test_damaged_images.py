"""An image that changes after detection (damaged on disk) is left out of training with a log line; only a split
of which most images fail stops the run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import detected_home
from test_corpus import zero_the_middle_of_idat
from supersmm_tasks import paths, run_state
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.corpus import load_dataset
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.pipeline import IMAGE_CACHE, EpochBatches
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.training import train_chunk
from supersmm_tasks.training_log import read_rows


@pytest.fixture
def home(tmp_path, engraved_primus):
    """A home whose corpus is this test's copy of the engraved incipits (so that it may damage them)."""
    data_root = tmp_path / "data"
    shutil.copytree(engraved_primus, data_root)
    IMAGE_CACHE.strips.clear()  # the copies have new paths, but a cached strip must not hide a damaged file
    with detected_home(tmp_path / "home", data_root) as home:
        yield home


def damage_training_images(count: int) -> list:
    examples = load_dataset("primus").examples("train", "semantic")
    for example in examples[:count]:
        zero_the_middle_of_idat(Path(example.image_path))
    return examples


@pytest.mark.integration
def test_an_image_damaged_after_detection_is_skipped_with_a_log_line(home):
    examples = damage_training_images(1)
    create_or_update_run("skips", "primus", model="tiny", batch_size=4, max_total_epochs=1)

    assert train_chunk("skips", ChunkSpan(1, 1, 1)).status == "completed"

    [row] = read_rows("skips")
    assert int(row["dataset_size"]) == len(examples) - 1
    log = paths.log_path("skips").read_text()
    assert f"1 training images left out: they do not decode ({examples[0].image_path}: " in log
    assert f"({len(examples) - 1} training samples, " in log  # the chunk's line counts what it trains on


def test_images_decoded_per_epoch_skip_a_damaged_one_too(home):
    examples = damage_training_images(1)
    batches = EpochBatches(examples, encoding="semantic", batch_size=4, seed=0, training=True, cache=False)
    seen = sum(int(batch["image"].shape[0]) for batch in batches.epoch(1))
    assert seen == len(examples) - 1


def test_a_split_whose_images_mostly_fail_fails_the_run_with_the_reason(home):
    examples = damage_training_images(len(load_dataset("primus").examples("train", "semantic")) // 2 + 1)
    create_or_update_run("broken", "primus", model="tiny", batch_size=4, max_total_epochs=1)

    with pytest.raises(SupersmmError, match=f"of {len(examples)} images do not decode"):
        train_chunk("broken", ChunkSpan(1, 1, 1))
    state = run_state.read_state("broken")
    assert state["status"] == "failed" and "run `supersmm detect`" in state["error"]
