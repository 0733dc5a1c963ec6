"""Fine-tuning (`--init-from RUN`): pretrain `tiny` on engraved synthetic incipits, fine-tune it on the real
PrIMuS development set detected as a dataset, and read the same real validation staves with both."""
import json
import math

import numpy as np
import pytest

from conftest import require_real_dev
from supersmm_tasks import paths, run_state
from supersmm_tasks.checkpoint import load_checkpoint
from supersmm_tasks.chunk import ChunkSpan
from supersmm_tasks.corpus import load_dataset
from supersmm_tasks.detect import detect
from supersmm_tasks.errors import SupersmmError
from supersmm_tasks.evaluate import evaluate_run
from supersmm_tasks.run_config import create_or_update_run
from supersmm_tasks.training import train_chunk

pytestmark = pytest.mark.integration  # two runs of 10 epochs each

PRETRAIN_SAMPLES = 200
PRETRAIN_EPOCHS = 10
FINETUNE_EPOCHS = 10


def snapshot(folder):
    """Every path under folder with its size and modification time."""
    return {(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A SUPERSMM_HOME with dataset `synthetic` (engraved incipits) and dataset `primus`: the real development set,
    detected in place (its folder is the data root)."""
    from supersmm_tasks.synth import generate_corpus

    real = require_real_dev()
    synthetic_root = tmp_path_factory.mktemp("synthetic_root")
    generate_corpus(synthetic_root / "synthetic", PRETRAIN_SAMPLES, seed=5, workers=2, progress=False)
    home = tmp_path_factory.mktemp("home")
    real_before = snapshot(real)
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SUPERSMM_HOME", str(home))
        environment.setenv("SUPERSMM_DATA_ROOT", str(synthetic_root))
        detect()
        (real_report,) = detect(real)
        incipits = sum((folder / f"{folder.name}.png").is_file() for folder in real.iterdir())  # 129 in the dev set
        assert real_report.name == "primus" and real_report.valid == incipits
        assert snapshot(real) == real_before, "detect wrote inside the real corpus"
        yield home


@pytest.fixture(scope="module")
def pretrained(home):
    create_or_update_run("synth_pre", "synthetic", model="tiny", encoding="agnostic",
                         max_total_epochs=PRETRAIN_EPOCHS)
    train_chunk("synth_pre", ChunkSpan(1, PRETRAIN_EPOCHS, 1))
    return "synth_pre"


def test_a_run_fine_tuned_on_real_staves_reads_them_better_than_its_pretrained_start(home, pretrained):
    config = create_or_update_run("real_ft", "primus", init_from=pretrained, max_total_epochs=FINETUNE_EPOCHS)

    stored = json.loads((paths.run_dir("real_ft") / "config.json").read_text())
    best = run_state.read_state(pretrained)["best_epoch"]
    assert (stored["init_from"], stored["model"], stored["encoding"]) == (pretrained, "tiny", "agnostic")
    source_best = paths.run_dir(pretrained) / "checkpoints" / f"epoch_{best:06d}.npz"
    assert stored["init_checkpoint"] == str(paths.init_checkpoint_path("real_ft"))  # its own copy
    assert paths.init_checkpoint_path("real_ft").read_bytes() == source_best.read_bytes()
    real = load_dataset("primus")
    assert config.train_samples >= 0.75 * sum(real.count(split, "agnostic") for split in real.split_files)  # most

    pruned = source_best.rename(source_best.with_name("aside.npz"))  # as the source, training on, would prune it
    try:
        train_chunk("real_ft", ChunkSpan(1, 1, 1))
    finally:
        pruned.rename(source_best)
    first = load_checkpoint(run_state.read_state("real_ft")["checkpoint"])
    start = load_checkpoint(stored["init_checkpoint"])
    # It began at the pretrained weights (one epoch moves them a little), with a fresh optimizer.
    conv = first.meta["model_variables"].index(next(n for n in first.meta["model_variables"]
                                                    if n.endswith("conv1/kernel")))
    moved = np.abs(first.model_arrays[conv] - start.model_arrays[conv]).max()
    assert 0 < moved < 0.5 * np.abs(start.model_arrays[conv]).max()
    assert int(first.optimizer_arrays[0]) == math.ceil(first.meta["row"]["dataset_size"] / 4)  # Adam began again
    assert "starting from run synth_pre's weights" in paths.log_path("real_ft").read_text()

    train_chunk("real_ft", ChunkSpan(2, FINETUNE_EPOCHS, 1))
    before = evaluate_run(pretrained, split="val", dataset="primus")
    after = evaluate_run("real_ft", split="val")
    real_val = load_dataset("primus").count("val", "agnostic")  # 11 of the development set's 129
    assert before["samples"] == after["samples"] == real_val > 0  # the same real validation staves
    assert after["ser"] < before["ser"], (before, after)


def test_fine_tuning_needs_the_same_labels_and_an_existing_trained_run(home, pretrained):
    with pytest.raises(SupersmmError, match="writes agnostic tokens, this run's would write semantic ones"):
        create_or_update_run("wrong_labels", "primus", init_from=pretrained, encoding="semantic",
                             semantic_via_agnostic=False)
    # An agnostic network serves a semantic run that reads through agnostic symbols.
    assert create_or_update_run("as_music", "primus", init_from=pretrained, encoding="semantic").network_encoding \
        == "agnostic"
    with pytest.raises(SupersmmError, match="model tiny, this run paper"):
        create_or_update_run("wrong_model", "primus", init_from=pretrained, model="paper")
    with pytest.raises(SupersmmError, match="there is no run 'nobody' to start from"):
        create_or_update_run("orphan_ft", "primus", init_from="nobody")
    create_or_update_run("untrained", "synthetic", model="tiny", encoding="agnostic")
    with pytest.raises(SupersmmError, match="has no checkpoint yet"):
        create_or_update_run("too_early", "primus", init_from="untrained")
    with pytest.raises(SupersmmError, match="invalid run name"):
        create_or_update_run("bad_source", "primus", init_from="../synth_pre")
    for name in ("wrong_labels", "wrong_model", "orphan_ft", "too_early"):
        assert not paths.run_dir(name).exists()


def test_a_fine_tuned_run_keeps_its_starting_point_and_says_when_it_is_gone(home):
    create_or_update_run("short_pre", "synthetic", model="tiny", encoding="agnostic", max_total_epochs=1)
    train_chunk("short_pre", ChunkSpan(1, 1, 1))
    create_or_update_run("kept_ft", "primus", init_from="short_pre", max_total_epochs=2)
    with pytest.raises(SupersmmError, match="init_from"):
        create_or_update_run("kept_ft", init_from="synth_pre")

    (paths.run_dir("short_pre") / "checkpoints" / "epoch_000001.npz").unlink()  # its copy stays: no matter
    paths.init_checkpoint_path("kept_ft").unlink()  # the copy itself lost (by hand)
    with pytest.raises(SupersmmError, match="starts from run 'short_pre'.*gone or damaged"):
        train_chunk("kept_ft", ChunkSpan(1, 1, 1))
    assert run_state.read_state("kept_ft")["status"] == "failed"
