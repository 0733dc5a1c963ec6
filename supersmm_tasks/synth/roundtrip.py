"""The label check in bulk: semantic -> Plaine & Easie -> Verovio -> MEI -> semantic, no drawing."""
from __future__ import annotations

import random

from .engrave import Engraver, EngravingFailed
from .mei import mei_to_semantic
from .music import random_incipit
from .pae import semantic_to_pae


def round_trip_fraction(incipits: int, seed: int = 0) -> float:
    """Fraction of `incipits` random incipits whose tokens come back unchanged from Verovio's MEI."""
    engraver = Engraver()
    rng = random.Random(seed)
    unchanged = 0
    for _ in range(incipits):
        tokens = random_incipit(rng)
        try:
            unchanged += mei_to_semantic(engraver.load(semantic_to_pae(tokens))) == tokens
        except EngravingFailed:
            pass
    return unchanged / incipits
