"""`supersmm export NAME OUT`: a run's best model as a TensorFlow SavedModel that needs nothing of this project.

OUT holds the SavedModel (its serving signature takes the PNG or JPEG bytes of one staff and returns the logits
and their lengths), `vocabulary.txt` (token i on line i; the CTC blank is index len(vocabulary)),
`supersmm.json` (the run, its epoch, encoding, the network's encoding and image height) and a README on how to
call it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import tensorflow as tf

from .errors import SupersmmError
from .recognizer import EXPORT_SETTINGS, EXPORT_VOCABULARY, serving_function

VIA_AGNOSTIC = """
Run `{run}` writes semantic tokens: SuperSMM turns these agnostic ones into them (`Recognizer.load` does it,
with `supersmm_tasks.agnostic_to_semantic`).""".replace("\n", " ")
README = """\
# {run}: a SuperSMM optical music recognition model

Exported by `supersmm export` from run `{run}` (epoch {epoch}, {encoding} tokens, images scaled to {height}
rows). It reads one image of one staff of monophonic music and writes its PrIMuS {encoding} tokens.{via} It needs
TensorFlow (it was made with {tensorflow}) and NumPy, nothing else.

```python
import numpy as np
import tensorflow as tf

model = tf.saved_model.load("{folder}")
vocabulary = open("{folder}/vocabulary.txt", encoding="utf-8").read().splitlines()
blank = len(vocabulary)  # the CTC blank

with open("staff.png", "rb") as image:  # PNG or JPEG, any size, gray or colour
    out = model.signatures["serving_default"](image=tf.constant(image.read()))
frames = out["logits"].numpy()[0, : out["logit_lengths"].numpy()[0]].argmax(axis=-1)
# best path: repeats collapsed, blanks dropped
tokens = [vocabulary[t] for i, t in enumerate(frames) if t != blank and (i == 0 or t != frames[i - 1])]
print("\\t".join(tokens))
```

The signature `serving_default` takes `image`, a scalar string of PNG or JPEG bytes, and returns `logits`
([1, frames, {classes}], one score per token and the blank for each frame) and `logit_lengths` ([1], the frames
that belong to the image). The image is prepared inside the model as training prepared it.

With SuperSMM installed, `supersmm_tasks.recognizer.Recognizer.load("{folder}")` reads pages of several staves
too and writes scores (`.score(image, "out.musicxml")`).
"""


def export_run(name: str, out: Path) -> Path:
    """Writes the run's best model into the new folder `out` (whole or not at all)."""
    from .evaluate import best_model
    from .model import PRESETS
    from .run_config import load_run_config
    from .vocabulary import load_vocabulary

    out = Path(out).resolve()  # `.` has no name to put the partial export beside
    if out.exists() and (not out.is_dir() or any(child.name != ".partial" for child in out.iterdir())):
        raise SupersmmError(f"{out} already exists: give a new or empty folder")
    config = load_run_config(name)
    model, epoch = best_model(config)
    vocabulary = load_vocabulary(config.network_encoding)
    # Made beside OUT and renamed to it, or, where OUT is an empty folder already, made inside it (its parent may be
    # closed to us) and moved up.
    partial = out / ".partial" if out.exists() else out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", serving_function(model, PRESETS[config.model]))
        archive.write_out(str(partial), verbose=False)
        (partial / EXPORT_VOCABULARY).write_text("\n".join(vocabulary) + "\n", "utf-8")
        settings = {"run": name, "epoch": epoch, "encoding": config.encoding,
                    "network_encoding": config.network_encoding, "height": config.height}
        (partial / EXPORT_SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", "utf-8")
        (partial / "README.md").write_text(README.format(
            run=name, epoch=epoch, encoding=config.network_encoding, height=config.height, folder=out.name,
            via=VIA_AGNOSTIC.format(run=name) if config.semantic_via_agnostic else "",
            classes=len(vocabulary) + 1, tensorflow=tf.__version__), "utf-8")
        _put_in_place(partial, out)
    except (OSError, tf.errors.OpError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        reason = error.message if isinstance(error, tf.errors.OpError) else error.strerror or error
        raise SupersmmError(f"cannot write {out}: {reason}") from None
    return out


def _put_in_place(partial: Path, out: Path) -> None:
    """The finished export at `out`: renamed there whole, or, inside an empty folder that exists (the one the user is
    in, say), its files moved up with saved_model.pb last: the file that makes a folder an export."""
    if partial.parent != out:
        partial.replace(out)
        return
    for child in sorted(partial.iterdir(), key=lambda child: child.name == "saved_model.pb"):
        child.replace(out / child.name)
    partial.rmdir()
