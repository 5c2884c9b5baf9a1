"""benchmarks/nano_word_errors.py: reference words are aligned with what was heard and grouped by spelling."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("jiwer", reason="the alignment is jiwer's")
_spec = importlib.util.spec_from_file_location(
    "nano_word_errors", Path(__file__).resolve().parents[1] / "benchmarks" / "nano_word_errors.py")
errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(errors)


def test_hits_follow_the_alignment_after_normalisation():
    rows = [{"reference": "The cat sat, on the mat.", "heard": "the cat on a mat"},
            {"reference": "Hello there", "heard": None}]  # nothing heard: every word missed
    assert errors.word_hits(rows, "heard") == [("the", True), ("cat", True), ("sat", False), ("on", True),
                                               ("the", False), ("mat", True), ("hello", False), ("there", False)]


def test_word_kinds_by_spelling():
    class Tok:  # "kangaroo" is two pieces, "egypt" one piece only capitalised
        def encode(self, text):
            return [1, 2] if "angaroo" in text else [1]

    rank = {"the": 0, "Egypt": 500, "melody": 15000}
    assert errors.word_kind("of", Tok(), rank) == "short"
    assert errors.word_kind("the", Tok(), rank) == "piece <12k"
    assert errors.word_kind("egypt", Tok(), rank) == "piece <12k"  # normalised text is lower case
    assert errors.word_kind("melody", Tok(), rank) == "piece 12k+"
    assert errors.word_kind("kangaroo", Tok(), rank) == "split"
    assert errors.word_kind("don't", Tok(), rank) == "piece (other)"
