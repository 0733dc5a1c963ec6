"""Plaine & Easie -> Verovio -> MEI and a grayscale PNG of one staff, like the PrIMuS images.

One `Engraver` per process: creating a Verovio toolkit loads its fonts and costs far more than
engraving an incipit.
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import verovio

from .rasterize import primus_image, svg_to_gray, two_tone_png

FONTS = ("Leipzig", "Bravura", "Gootville")


def font_for(incipit_id: str) -> str:
    """The font a given incipit (`synth --from-pae`) is engraved in, by its id: PrIMuS's images come in the three
    fonts in about equal parts (realism.nearest_font on the real development set), not in one."""
    return FONTS[zlib.crc32(incipit_id.encode("utf-8")) % len(FONTS)]

# One system on Verovio's default page (2100 wide, 50 of margin either side), no header or footer, the image cropped
# to the music: a 1041x155-like strip. As in PrIMuS, a system that fills PAGE_FILL_TO_JUSTIFY of the 2000 columns
# between the margins is justified to all of them, and a longer one is squeezed into them: 26 of the 129 real
# development PNGs are 2002-2003 wide and none is between 1629 and 2002. SPACING gives the real PNGs' width where
# a staff is not justified (our width / theirs, median 0.997 over 103 real incipits; 0.968 at today's default
# linear spacing of 0.25: the Verovio that engraved PrIMuS spaced notes a little wider).
PAGE_WIDTH, PAGE_MARGIN = 2100, 50
PAGE_FILL_TO_JUSTIFY = 0.8
SPACING = {"spacingLinear": 0.26, "spacingNonLinear": 0.6}
# Closer and closer spacings, for a staff longer than the page.
SQUEEZED_SPACINGS = [{"spacingLinear": linear / 100, "spacingNonLinear": 0.6} for linear in range(24, 9, -2)] + [
    {"spacingLinear": 0.1, "spacingNonLinear": non_linear / 100} for non_linear in range(55, 29, -5)]
VEROVIO_OPTIONS = {
    "inputFrom": "pae",
    "breaks": "encoded",  # Plaine & Easie encodes none: one system where it fits (Engraver squeezes a longer one)
    "header": "none",
    "footer": "none",
    "adjustPageHeight": True,
    "adjustPageWidth": False,
    "pageWidth": PAGE_WIDTH,
    "pageMarginTop": 0,
    "pageMarginBottom": 0,
    "pageMarginLeft": PAGE_MARGIN,
    "pageMarginRight": PAGE_MARGIN,
    "minLastJustification": PAGE_FILL_TO_JUSTIFY,
    **SPACING,
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
        return primus_image(svg_to_gray(self._one_system())), mei

    def _one_system(self) -> str:
        """The SVG of the loaded incipit on one staff. A staff too long for the page is squeezed into it, as in
        PrIMuS (2 of the 129 real development PNGs): notes spaced closer until it fits, then justified."""
        svg = self.toolkit.renderToSVG(1)
        squeezed = False
        for spacing in SQUEEZED_SPACINGS:
            if svg.count('class="system"') == 1:
                break
            self.toolkit.setOptions(spacing)
            self.toolkit.redoLayout()
            svg, squeezed = self.toolkit.renderToSVG(1), True
        if squeezed:
            self.toolkit.setOptions(SPACING)
        if svg.count('class="system"') > 1:
            raise EngravingFailed("the incipit is too long for one staff")
        return svg

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
