"""Verovio's SVG -> grayscale pixels, drawn straight with cairo.

CairoSVG renders these images exactly as well but spends ~150 ms per incipit in Python re-parsing
every glyph for every `<use>`; Verovio's SVG only needs a handful of elements, so this draws them
directly and caches each glyph outline. Anything outside that handful raises instead of being
skipped, so an image never silently lacks a symbol that its labels name.
tests/test_synth.py compares the result with CairoSVG pixel by pixel.

`primus_image` then gives the engraving the look of a PrIMuS PNG, measured on the real ones
(tests/test_synth_realism.py): cropped to the ink with one white pixel around it, and two tones
only, no anti-aliasing: white paper and one gray for all ink, the mean gray of the anti-aliased
pixels it replaces (so 47-75 from one incipit to the next, as in PrIMuS, darker where strokes are
wide); `two_tone_png` writes it as PrIMuS does, a 1-bit PNG with a two-colour palette.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import io

import cairocffi as cairo
import numpy as np
from PIL import Image

SVG = "{http://www.w3.org/2000/svg}"
XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_PATH_TOKEN = re.compile(rf"([MmLlHhVvCcSsZz])|({_NUMBER})")
_TRANSFORM = re.compile(rf"(translate|scale)\(\s*({_NUMBER})(?:[\s,]+({_NUMBER}))?\s*\)")
_SILENT_TAGS = {"desc", "style", "title"}
DEFAULT_STROKE_WIDTH = 1.0  # Verovio's CSS strokes every shape in currentColor; SVG's default width is 1
INK_BELOW = 250  # an anti-aliased pixel darker than this (about 2% covered) is ink in a two-tone image
MARGIN = 1  # white pixels around the ink, as in the real PNGs
STAFF_LINE_ROWS = 3  # the staff lines of the real PNGs are 3 pixels thick
PAPER = 255


class UnsupportedSvg(ValueError):
    """The SVG holds an element or command this renderer does not draw."""


def svg_to_gray(svg_text: str) -> np.ndarray:
    """uint8 image, white paper (255) and black ink (0), of the size the SVG asks for."""
    root = ET.fromstring(svg_text)
    width, height = (int(round(float(root.get(side).removesuffix("px")))) for side in ("width", "height"))
    surface = cairo.ImageSurface(cairo.FORMAT_A8, width, height)
    context = cairo.Context(surface)
    glyphs = {glyph.get("id"): glyph for defs in root.iter(f"{SVG}defs") for glyph in defs}
    _Painter(context, glyphs).children(root)
    surface.flush()
    stride = surface.get_stride()
    ink = np.frombuffer(surface.get_data(), np.uint8).reshape(height, stride)[:, :width]
    return 255 - ink


def primus_image(gray: np.ndarray) -> np.ndarray:
    """An anti-aliased engraving as PrIMuS has it: cropped to its ink plus MARGIN, paper and one ink tone,
    staff lines STAFF_LINE_ROWS thick."""
    drawn = gray < INK_BELOW
    columns = np.flatnonzero(drawn.any(axis=0))
    if columns.size == 0:
        raise ValueError("the engraving has no ink")
    # Cropped to the music's columns first: a short staff on a wide page inks less than half of the page's row.
    gray, drawn = gray[:, columns[0]:columns[-1] + 1], drawn[:, columns[0]:columns[-1] + 1]
    ink = thicken_staff_lines(drawn)
    rows = np.flatnonzero(ink.any(axis=1))
    crop = (slice(rows[0], rows[-1] + 1), slice(None))
    tone = np.uint8(round(float(gray[drawn].mean())))  # the grown rows of staff line take the same tone
    two_tone = np.where(ink[crop], tone, np.uint8(PAPER)).astype(np.uint8)
    return np.pad(two_tone, MARGIN, constant_values=PAPER)


def staff_line_runs(ink: np.ndarray) -> list[tuple[int, int]]:
    """(first row, rows) of each staff line: a run of rows more than half inked."""
    line_rows = np.flatnonzero(ink.mean(axis=1) > 0.5)
    runs: list[tuple[int, int]] = []
    for row in line_rows:
        if runs and runs[-1][0] + runs[-1][1] == row:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((int(row), 1))
    return runs


def thicken_staff_lines(ink: np.ndarray) -> np.ndarray:
    """Staff lines grown downwards to STAFF_LINE_ROWS rows, as thick as the real PNGs' (Verovio's are 2 rows
    at this scale: its lines sit on pixel boundaries, so they cover an even number of rows)."""
    ink = ink.copy()
    for first, rows in staff_line_runs(ink):
        last = first + rows - 1
        for row in range(last + 1, min(first + STAFF_LINE_ROWS, ink.shape[0])):
            ink[row] |= ink[last]
    return ink


def two_tone_png(image: np.ndarray) -> bytes:
    """PNG bytes of a paper-and-one-ink image: a 1-bit PNG with a two-colour palette, like PrIMuS's."""
    tones = np.unique(image)
    if tones.size > 2 or PAPER not in tones:
        raise ValueError(f"a two-tone image has white paper and one ink, not the tones {tones.tolist()}")
    ink = int(tones[0]) if tones.size == 2 else 0
    indexed = Image.fromarray((image != PAPER).astype(np.uint8), mode="P")
    indexed.putpalette([PAPER] * 3 + [ink] * 3)
    out = io.BytesIO()
    indexed.save(out, format="PNG", optimize=True)
    return out.getvalue()


# Glyph outline (an SVG path's `d`) -> its cairo path: a font has a few hundred glyphs, drawn thousands of times.
_OUTLINES: dict[str, list] = {}


class _Painter:
    def __init__(self, context: cairo.Context, glyphs: dict[str, ET.Element]):
        self.context = context
        self.glyphs = glyphs

    def children(self, element: ET.Element) -> None:
        for child in element:
            self.element(child)

    def element(self, element: ET.Element) -> None:
        tag = element.tag.removeprefix(SVG)
        if tag in _SILENT_TAGS or tag == "defs":
            return
        if "placeholder" in element.get("class", "").split():
            return  # Verovio's CSS hides these
        context = self.context
        context.save()
        if tag == "svg" and element.get("viewBox"):
            _, _, view_width, view_height = (float(v) for v in element.get("viewBox").split())
            target = context.get_target()
            context.scale(target.get_width() / view_width, target.get_height() / view_height)
        _apply_transform(context, element.get("transform"))
        if tag in ("svg", "g"):
            self.children(element)
        elif tag == "use":
            self._use(element)
        elif tag == "path":
            _trace_path(context, element.get("d"))
            self._paint(element)
        elif tag == "polygon":
            points = [float(v) for v in re.findall(_NUMBER, element.get("points"))]
            context.move_to(points[0], points[1])
            for x, y in zip(points[2::2], points[3::2]):
                context.line_to(x, y)
            context.close_path()
            self._paint(element)
        elif tag == "ellipse":
            cx, cy, rx, ry = (float(element.get(name)) for name in ("cx", "cy", "rx", "ry"))
            context.save()  # the path keeps the ellipse's shape; the stroke must not be squashed with it
            context.translate(cx, cy)
            context.scale(rx, ry)
            context.arc(0, 0, 1, 0, 2 * np.pi)
            context.restore()
            self._paint(element)
        elif tag == "rect":
            context.rectangle(*(float(element.get(name)) for name in ("x", "y", "width", "height")))
            self._paint(element)
        else:
            raise UnsupportedSvg(f"<{tag}> in Verovio's SVG")
        context.restore()

    def _use(self, use: ET.Element) -> None:
        glyph = self.glyphs[use.get(XLINK_HREF, use.get("href", "")).lstrip("#")]
        for path in glyph:
            if path.tag != f"{SVG}path":
                raise UnsupportedSvg(f"<{path.tag.removeprefix(SVG)}> in a glyph definition")
            self.context.save()
            _apply_transform(self.context, path.get("transform"))
            self.context.new_path()
            self.context.append_path(self._outline(path.get("d")))
            self._paint(path)
            self.context.restore()

    def _outline(self, d: str) -> list:
        if d not in _OUTLINES:
            self.context.save()
            self.context.identity_matrix()
            self.context.new_path()
            _trace_path(self.context, d)
            _OUTLINES[d] = self.context.copy_path()
            self.context.new_path()
            self.context.restore()
        return _OUTLINES[d]

    def _paint(self, element: ET.Element) -> None:
        context = self.context
        context.fill_preserve()
        context.set_line_width(float(element.get("stroke-width", DEFAULT_STROKE_WIDTH)))
        round_cap, round_join = element.get("stroke-linecap") == "round", element.get("stroke-linejoin") == "round"
        context.set_line_cap(cairo.LINE_CAP_ROUND if round_cap else cairo.LINE_CAP_BUTT)
        context.set_line_join(cairo.LINE_JOIN_ROUND if round_join else cairo.LINE_JOIN_MITER)
        context.stroke()


def _apply_transform(context: cairo.Context, transform: str | None) -> None:
    if not transform:
        return
    if _TRANSFORM.sub("", transform).strip(" ,"):
        raise UnsupportedSvg(f"transform {transform!r}")
    for kind, first, second in _TRANSFORM.findall(transform):
        a = float(first)
        b = float(second) if second else (0.0 if kind == "translate" else a)
        (context.translate if kind == "translate" else context.scale)(a, b)


def _trace_path(context: cairo.Context, d: str) -> None:
    """Adds an SVG path (the commands Verovio writes: M L H V C S Z, absolute and relative) to cairo."""
    tokens = _PATH_TOKEN.findall(d)
    command, numbers = None, []
    commands: list[tuple[str, list[float]]] = []
    for letter, number in tokens:
        if letter:
            if command is not None:
                commands.append((command, numbers))
            command, numbers = letter, []
        else:
            numbers.append(float(number))
    if command is not None:
        commands.append((command, numbers))
    x = y = start_x = start_y = 0.0
    last_control = None
    for command, numbers in commands:
        relative = command.islower()
        kind = command.upper()
        if kind == "Z":
            context.close_path()
            x, y = start_x, start_y
            last_control = None
            continue
        arity = {"M": 2, "L": 2, "H": 1, "V": 1, "C": 6, "S": 4}[kind]
        if not numbers or len(numbers) % arity:
            raise UnsupportedSvg(f"path command {command} with {len(numbers)} numbers")
        for i in range(0, len(numbers), arity):
            args = numbers[i:i + arity]
            dx, dy = (x, y) if relative else (0.0, 0.0)
            if kind == "M":
                x, y = args[0] + dx, args[1] + dy
                if i == 0:
                    context.move_to(x, y)
                    start_x, start_y = x, y
                else:
                    context.line_to(x, y)  # extra pairs after a move are lines
                last_control = None
            elif kind == "L":
                x, y = args[0] + dx, args[1] + dy
                context.line_to(x, y)
                last_control = None
            elif kind == "H":
                x = args[0] + (x if relative else 0.0)
                context.line_to(x, y)
                last_control = None
            elif kind == "V":
                y = args[0] + (y if relative else 0.0)
                context.line_to(x, y)
                last_control = None
            elif kind == "C":
                x1, y1, x2, y2 = args[0] + dx, args[1] + dy, args[2] + dx, args[3] + dy
                x, y = args[4] + dx, args[5] + dy
                context.curve_to(x1, y1, x2, y2, x, y)
                last_control = (x2, y2)
            else:  # S: the first control point mirrors the previous curve's second one
                x1, y1 = (2 * x - last_control[0], 2 * y - last_control[1]) if last_control else (x, y)
                x2, y2 = args[0] + dx, args[1] + dy
                x, y = args[2] + dx, args[3] + dy
                context.curve_to(x1, y1, x2, y2, x, y)
                last_control = (x2, y2)
