"""Plaine & Easie -> Verovio -> MEI and a grayscale PNG of one staff, like the PrIMuS images.

One `Engraver` per process: creating a Verovio toolkit loads its fonts and costs far more than
engraving an incipit.
"""
from __future__ import annotations

import re

import numpy as np
import verovio

from .rasterize import primus_image, svg_to_gray, two_tone_png

FONTS = ("Leipzig", "Bravura", "Gootville")

# One long system, no header or footer, the page cropped to the music: a 1041x155-like strip.
VEROVIO_OPTIONS = {
    "inputFrom": "pae",
    "breaks": "none",
    "header": "none",
    "footer": "none",
    "adjustPageHeight": True,
    "adjustPageWidth": True,
    "pageMarginTop": 0,
    "pageMarginBottom": 0,
    "pageMarginLeft": 0,
    "pageMarginRight": 0,
    "scale": 100,
}
# Smaller SVG for our own rasterizer only: no indentation, `href` instead of `xlink:href`.
COMPACT_SVG_OPTIONS = {"svgFormatRaw": True, "svgRemoveXlink": True}
# Verovio stamps the MEI with the time of conversion; the corpus must be the same bytes every run.
_CONVERSION_DATE = re.compile(r"\s*<date isodate=\"[^\"]*\"\s*/>")
# The Verovio that engraved PrIMuS read a one-measure rest of Plaine & Easie (`=`, `=1`) as a multirest of 1 and
# drew its "1" above the staff (11 of the 129 real development incipits, labelled `digit.1-S5 multirest-L3`); today's
# Verovio makes it an `mRest`, drawn without a number.
_MEASURE_REST = re.compile(r"<mRest\b([^>]*?)\s*/>")


class EngravingFailed(RuntimeError):
    """Verovio refused an incipit."""


class Engraver:
    def __init__(self):
        # Verovio's Python build prints warnings to stderr and cannot hand them over; what matters for
        # the labels is checked on its MEI instead (see corpus_writer), so only errors are printed.
        verovio.enableLog(verovio.LOG_ERROR)
        self.toolkit = verovio.toolkit()
        self.toolkit.setOptions({**VEROVIO_OPTIONS, **COMPACT_SVG_OPTIONS})
        self.font: str | None = None

    def engrave(self, pae: str, font: str, xml_id_seed: int) -> tuple[np.ndarray, str]:
        """(two-tone image as PrIMuS has it, MEI text) of one incipit."""
        if font != self.font:
            self.toolkit.setOptions({"font": font})
            self.font = font
        mei = self.load(pae, xml_id_seed)
        return primus_image(svg_to_gray(self.toolkit.renderToSVG(1))), mei

    def load(self, pae: str, xml_id_seed: int = 0) -> str:
        """Loads an incipit without drawing it; returns Verovio's MEI of it."""
        self.toolkit.resetXmlIdSeed(xml_id_seed)
        if not self.toolkit.loadData(pae):
            raise EngravingFailed(f"Verovio could not load the incipit {pae!r}")
        mei = self.toolkit.getMEI()
        if _MEASURE_REST.search(mei):
            mei = self._reload_mei(_MEASURE_REST.sub(r'<multiRest\1 num="1" />', mei), pae)
        return _CONVERSION_DATE.sub("", mei)

    def _reload_mei(self, mei: str, pae: str) -> str:
        self.toolkit.setOptions({"inputFrom": "mei"})
        try:
            if not self.toolkit.loadData(mei):
                raise EngravingFailed(f"Verovio could not load its own MEI of the incipit {pae!r}")
            return self.toolkit.getMEI()
        finally:
            self.toolkit.setOptions({"inputFrom": "pae"})


def png_bytes(gray: np.ndarray) -> bytes:
    return two_tone_png(gray)
