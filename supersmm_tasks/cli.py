"""The `supersmm` command: a thin layer over the package's modules.

Every user-fixable problem arrives here as a `SupersmmError` (or a broker connection error) and leaves as
one line on stderr with a non-zero exit, never a traceback. Heavy modules (TensorFlow) are imported
inside the commands that need them, so `supersmm --help` and `supersmm status` stay fast.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .errors import SupersmmError
from . import paths
from .paths import InvalidName, validate_run_name
from .presets import PRESETS
from .run_config import DEFAULTS, SCHEDULES
from .vocabulary import ENCODINGS


def _run_name(ctx, param, value):
    if value is None:
        return None
    try:
        return validate_run_name(value)
    except InvalidName as error:
        raise click.BadParameter(str(error)) from None


def _not_empty(ctx, param, value):
    if value is not None and not str(value).strip():
        raise click.BadParameter("give a name, not an empty string")
    return value


def _folder_not_empty(ctx, param, value):
    """A folder given as text (as a Path, "" would read as the current folder), as a Path."""
    if value is None:
        return None
    if not value.strip():
        raise click.BadParameter("give a folder, not an empty string")
    return Path(value)


def run_options(command):
    """The options shared by `enqueue` and `train` (None means: not given, keep the run's value)."""
    options = [
        click.option("--dataset", callback=_not_empty, help="Dataset to train on (default: the run's name)."),
        click.option("--max-total-epochs", type=click.IntRange(min=1), help="Epoch budget of the whole run."),
        click.option("--max-epochs-per-run", type=click.IntRange(min=1), help="Epochs per chunk (one Celery task)."),
        click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True),
                     help="Time budget of the whole run, in minutes of training: from its second epoch on, the epoch "
                          "budget is set to the epochs that fit (never above --max-total-epochs), and the "
                          "learning-rate schedule ends with them."),
        click.option("--model", type=click.Choice(list(PRESETS)), help=f"Model preset (default: {DEFAULTS['model']})."),
        click.option("--encoding", type=click.Choice(ENCODINGS), help=f"Label encoding (default: {DEFAULTS['encoding']})."),
        click.option("--semantic-via-agnostic/--direct-semantic", default=None,
                     help="For semantic labels: train the network on the agnostic labels and turn its reading into "
                          "semantic tokens, or train it on the semantic labels (default: via agnostic for tiny, direct for paper)."),
        click.option("--batch-size", type=click.IntRange(min=1), help="Samples per batch (default: the model's, "
                     + ", ".join(f"{preset.batch_size} for {name}" for name, preset in PRESETS.items()) + ")."),
        click.option("--seed", type=int, help="Seed of the run (shuffles, initial weights, dropout)."),
        click.option("--patience", type=click.IntRange(min=0), help="Early stop after N epochs without a better val SER; 0 = off."),
        click.option("--schedule", type=click.Choice(SCHEDULES),
                     help=f"Learning rate over the epoch budget: warm-up then cosine decay, one cycle, or constant (default: {DEFAULTS['schedule']})."),
        click.option("--augment/--no-augment", default=None,
                     help="Augment training images on the fly: scale, rotation, shear, ink, blur, noise, camera damage (default: on for paper and on camera datasets, off for tiny on clean ones)."),
        click.option("--curriculum/--no-curriculum", default=None,
                     help="Read the first epoch's batches from the shortest staves to the longest, which leaves CTC's all-blank start sooner (default: on)."),
        click.option("--init-from", callback=_run_name, metavar="RUN",
                     help="Start from the best weights of run RUN (same model and labels; the optimizer starts fresh)."),
        click.option("--deterministic/--no-deterministic", default=None, help="Bit-for-bit reproducible training and resume (default: on where a chunk trains on a CPU, off on a GPU)."),
        click.option("--queue", help="Celery queue of the run's chunks (a GPU worker runs `-Q gpu`)."),
        click.option("--priority", type=click.IntRange(0, 9), help="Priority of the run's chunks, 0 (first) to 9."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _given(options: dict) -> dict:
    return {key: value for key, value in options.items() if value is not None}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """SuperSMM trainer: crash-proof CRNN+CTC training on PrIMuS, one Celery task per chunk of epochs."""


@cli.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--samples", type=click.IntRange(min=1), help="Number of random incipits to engrave.")
@click.option("--from-pae", "pae_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Engrave the given incipits instead: one ID<TAB>PAE line each.")
@click.option("--seed", type=int, help="Same seed, same bytes (random incipits; default 0).")
@click.option("--camera", is_flag=True, help="Also write <id>_distorted.jpg with camera-like damage.")
@click.option("--workers", type=click.IntRange(min=1), help="Processes to use (default: all cores).")
def synth(out, samples, pae_file, seed, camera, workers):
    """Write a PrIMuS-layout corpus of engraved incipits (random, or given with --from-pae) into OUT."""
    from .synth import generate_corpus, generate_from_pae

    if (samples is None) == (pae_file is None):
        raise SupersmmError("give either --samples N (random incipits) or --from-pae FILE (given ones)")
    if pae_file is None:
        report = generate_corpus(out, samples, seed=seed or 0, camera=camera, workers=workers, progress=True)
        click.echo(f"wrote {report.count} incipits to {out}")
        return
    if seed is not None:
        raise SupersmmError("--seed draws random incipits; --from-pae engraves the given ones")
    report = generate_from_pae(out, pae_file, camera=camera, workers=workers, progress=True)
    for sample, reason in report.failed:
        click.echo(f"{sample}: {reason}", err=True)
    left_out = f" ({len(report.failed)} left out, listed above)" if report.failed else ""
    without_agnostic = report.count - report.with_agnostic
    unlabelled = (f"; {without_agnostic} without an agnostic label (a symbol PrIMuS's agnostic vocabulary has no "
                  "token for): they train with --encoding semantic only") if without_agnostic else ""
    click.echo(f"wrote {report.count} incipits to {out}{left_out}{unlabelled}")


@cli.command()
@click.option("--data-root", type=click.Path(), callback=_folder_not_empty, help="Where to look (default: $SUPERSMM_DATA_ROOT or $SUPERSMM_HOME/data).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per dataset.")
def detect(data_root, as_json):
    """Find PrIMuS / Camera-PrIMuS corpora, validate every sample, write configs and scripts."""
    from . import detect as detection

    reports = detection.detect(data_root)
    if as_json:
        click.echo(json.dumps([report.to_json() for report in reports], indent=2))
    else:
        click.echo(detection.format_table(reports))


@cli.command()
@click.argument("name", callback=_run_name)
@run_options
def enqueue(name, **options):
    """Create or continue run NAME and queue its next chunk; returns at once."""
    from . import runs

    click.echo(runs.enqueue(name, **_given(options)))


@cli.command()
@click.argument("name", callback=_run_name)
@run_options
def train(name, **options):
    """Create or continue run NAME and train it in the foreground until it ends (Ctrl-C stops cleanly)."""
    from . import runs

    sys.exit(runs.train_foreground(name, **_given(options)))


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args):
    """Start a Celery worker with the project's defaults (any `celery worker` option is passed on)."""
    from .worker_priority import lower_worker_priority

    lower_worker_priority()  # before Celery loads: its start takes 0.6 s of CPU (worker_priority.py)
    from . import runs

    sys.exit(runs.run_worker(list(celery_args)))


@cli.command()
@click.argument("name", required=False, callback=_run_name)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per run.")
def status(name, as_json):
    """One row per run: status, epochs, best val SER, ETA, worker."""
    from . import run_summary  # neither Celery nor TensorFlow: status answers at once

    rows = run_summary.status_rows(name, warn=lambda line: click.echo(f"supersmm: warning: {line}", err=True))
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        click.echo(run_summary.format_status_table(rows))


@cli.command()
@click.argument("name", callback=_run_name)
def cancel(name):
    """Stop run NAME for good."""
    from . import runs

    click.echo(runs.cancel(name))


@cli.command()
@click.argument("name", callback=_run_name)
def pause(name):
    """Hold run NAME at its next epoch boundary."""
    from . import runs

    click.echo(runs.pause(name))


@cli.command()
@click.argument("name", callback=_run_name)
def resume(name):
    """Let a paused run NAME go on."""
    from . import runs

    click.echo(runs.resume(name))


@cli.command()
@click.argument("name", callback=_run_name)
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@click.option("--beam-width", type=click.IntRange(min=1), help="Beam search instead of greedy decoding.")
@click.option("--json", "as_json", is_flag=True)
def evaluate(name, split, beam_width, as_json):
    """Symbol and sequence error rates of the run's best checkpoint."""
    from .evaluate import evaluate_run

    result = evaluate_run(name, split=split, beam_width=beam_width)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(
            f"{name} on {split} ({result['samples']} samples"
            + (f"; {result['too_narrow']} too narrow for their labels left out, as training does"
               if result["too_narrow"] else "")
            + f"): SER {result['ser']:.2f}%  sequence error {result['sequence_error']:.2f}%"
        )


@cli.command()
@click.argument("name", callback=_run_name)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--render", "render_path", type=click.Path(path_type=Path),
              help="Engrave the prediction with Verovio into this SVG file (one image only).")
@click.option("--score-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one score per image into this folder, named after the image.")
@click.option("--score-format", type=click.Choice(["musicxml", "mid", "mei"]), default="musicxml", show_default=True)
def predict(name, images, render_path, score_dir, score_format):
    """Print the recognised tokens of each IMAGE, tab-separated: one line per staff (an image may hold several)."""
    from .recognizer import Recognizer
    from .score import SUFFIX_OF_FORMAT, write_score

    if render_path and len(images) != 1:
        raise SupersmmError("--render takes exactly one IMAGE")
    recognizer = Recognizer.load(name)
    if score_dir:
        score_paths = _score_paths(images, score_dir, SUFFIX_OF_FORMAT[score_format])
    failed = False
    for image in images:
        try:
            staves = recognizer.read_page(image)
        except SupersmmError as error:  # one image that cannot be read; the others are still read
            if render_path:
                raise
            click.echo(f"supersmm: error: {error}", err=True)
            failed = True
            continue
        for tokens in staves:
            click.echo("\t".join(tokens))
        if score_dir:
            try:
                click.echo(f"score written to {write_score(recognizer.semantic(staves), score_paths[image])}",
                           err=True)
            except SupersmmError as error:  # the model's reading of this image is no score; the others may be
                click.echo(f"supersmm: error: no score for {image}: {error}", err=True)
                failed = True
    if render_path:
        from .render import write_svg

        try:  # Verovio engraves pitches and durations: an agnostic model's reading is turned into them first
            semantic = recognizer.semantic(staves)
        except SupersmmError as error:
            raise SupersmmError(f"cannot engrave the prediction of {images[0]}: {error}") from None
        write_svg([token for tokens in semantic for token in tokens], render_path)
        click.echo(f"engraved prediction written to {render_path}", err=True)
    if failed:
        sys.exit(1)


def _score_paths(images, folder: Path, suffix: str) -> dict:
    """IMAGE -> DIR/<image name without suffix><suffix>; two images of the same name would overwrite each other."""
    paths = {image: folder / f"{image.stem}{suffix}" for image in images}
    if len(set(paths.values())) < len(paths):
        raise SupersmmError("--score-dir: two images have the same name; their scores would overwrite each other")
    folder.mkdir(parents=True, exist_ok=True)
    return paths


@cli.command()
@click.argument("labels", metavar="IN", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def score(labels, out):
    """Write the semantic label file IN as a score; OUT's suffix picks .musicxml / .xml, .mid or .mei."""
    from .score import label_file_to_score

    click.echo(f"score written to {label_file_to_score(labels, out)}")


@cli.command()
@click.argument("name", callback=_run_name)
@click.argument("out", type=click.Path(path_type=Path))
def export(name, out):
    """Write run NAME's best model into the new folder OUT as a TensorFlow SavedModel, usable without SuperSMM."""
    from .export import export_run

    click.echo(f"model of run {name} exported to {export_run(name, out)} (see its README.md)")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless told otherwise).")
@click.option("--port", type=click.IntRange(1, 65535), default=8050, show_default=True)
@click.option("--user", envvar="SUPERSMM_DASHBOARD_USER", default="admin", show_default=True,
              help="Basic-auth user name (with --password).")
@click.option("--password", envvar="SUPERSMM_DASHBOARD_PASSWORD",
              help="Basic-auth password; required when --host is not loopback.")
def dashboard(host, port, user, password):
    """Live web dashboard of all runs."""
    from .dashboard import serve

    serve(host=host, port=port, username=user if password else None, password=password)


@cli.command("broker")
@click.option("--stop", is_flag=True, help="Stop the embedded Redis of this SUPERSMM_HOME (stop workers first).")
def broker_command(stop):
    """Print the broker URL in use (starting the embedded Redis if none is configured), or stop it."""
    from . import broker

    if stop:
        stopped = broker.stop_embedded()
        click.echo("embedded broker stopped" if stopped else "no embedded broker was running")
    else:
        click.echo(broker.redact(broker.broker_url()))


@cli.command()
def demo():
    """Engrave a small corpus, train a tiny model on the embedded broker, show the result."""
    from .demo import run_demo

    sys.exit(run_demo())


def _broker_unreachable(error: Exception) -> bool:
    try:
        from kombu.exceptions import OperationalError
        from redis.exceptions import ConnectionError as RedisConnectionError
    except ImportError:  # pragma: no cover - both ship with celery[redis]
        return False
    return isinstance(error, (OperationalError, RedisConnectionError))


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users
    try:
        cli.main(args=argv, prog_name="supersmm", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("supersmm: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as error:  # one line, as every other error, with where to read more
        if type(error).__name__ == "NoArgsIsHelpError":  # `supersmm` alone (Click 8.2 on): the help it asks for
            click.echo(error.ctx.get_help(), err=True)
            sys.exit(error.exit_code)
        command = error.ctx.command_path if error.ctx else "supersmm"
        click.echo(f"supersmm: error: {error.format_message()} (see `{command} --help`)", err=True)
        sys.exit(error.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except SupersmmError as error:
        click.echo(f"supersmm: error: {error}", err=True)
        sys.exit(1)
    except OSError as error:  # what and where, without the errno
        where = f"{error.filename}: " if error.filename else ""
        home = os.environ.get(paths.HOME_VARIABLE, "")
        hint = f" (SUPERSMM_HOME {home} is not a folder)" if os.path.isfile(home) else ""
        click.echo(f"supersmm: error: {where}{error.strerror or error}{hint}", err=True)
        sys.exit(1)
    except Exception as error:
        if _broker_unreachable(error):
            click.echo(f"supersmm: error: the broker is unreachable ({error})", err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
