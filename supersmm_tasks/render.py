"""Engrave a predicted semantic token sequence again, so a musician sees what the model read.

semantic tokens -> Plaine & Easie (the synth's converter) -> Verovio -> SVG.
"""
from __future__ import annotations

from pathlib import Path

import verovio

from .durable import write_atomically
from .errors import SupersmmError
from .synth.engrave import VEROVIO_OPTIONS as ENGRAVING_OPTIONS
from .synth.pae import UnsupportedToken, semantic_to_pae

# The synth's engraving settings, but one long system as wide as its music (never justified to a page), with a
# margin around it and a viewBox so the SVG scales to wherever it is shown.
SVG_OPTIONS = {
    **ENGRAVING_OPTIONS,
    "breaks": "none", "adjustPageWidth": True,
    "pageMarginTop": 20, "pageMarginBottom": 20, "pageMarginLeft": 20, "pageMarginRight": 20,
    "svgViewBox": True,
}


def render_svg(tokens: list[str]) -> str:
    """The SVG of the incipit that `tokens` (semantic encoding) describe."""
    if not tokens:
        raise SupersmmError("cannot engrave the prediction: the model read nothing")
    try:
        pae = semantic_to_pae(tokens)
    except UnsupportedToken as error:
        raise SupersmmError(f"cannot engrave the prediction: {error}") from None
    verovio.enableLog(verovio.LOG_OFF)
    toolkit = verovio.toolkit()
    toolkit.setOptions(SVG_OPTIONS)
    if not toolkit.loadData(pae):
        raise SupersmmError("cannot engrave the prediction: Verovio rejected its Plaine & Easie code")
    return toolkit.renderToSVG(1)


def write_svg(tokens: list[str], path: Path) -> Path:
    """Engrave `tokens` into the SVG file `path` (written whole or not at all)."""
    path = Path(path)
    svg = render_svg(tokens)
    try:
        write_atomically(path, svg.encode("utf-8"))
    except OSError as error:
        raise SupersmmError(f"cannot write {path}: {error.strerror or error}") from None
    return path
