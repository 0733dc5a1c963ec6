"""Engraved synthetic corpora in the PrIMuS layout, with labels checked against Verovio's own MEI."""
from .corpus_writer import SynthReport, generate_corpus, generate_from_pae, sample_id

__all__ = ["SynthReport", "generate_corpus", "generate_from_pae", "sample_id"]
