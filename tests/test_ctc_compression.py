"""CTC compression of speech tokens (lyra_sdk.mechanisms.ctc_compression)."""

from __future__ import annotations

import pytest
import torch

from lyra_sdk import ConfigError, LyraConfig
from lyra_sdk.mechanisms.ctc_compression import SpeechCompressionOptions, ctc_compress
from lyra_sdk.mechanisms.vocab_ctc import VocabCTCInputError

TAU = 0.05


def _table(v: int = 12, d: int = 16) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.linalg.qr(torch.randn(d, v))[0].T.contiguous()  # (V, d) orthonormal rows


def _clip(table: torch.Tensor, says: list[int | None]) -> torch.Tensor:
    """One token per entry: a word piece (its embedding, scaled to win for sure) or None (zero: blank)."""
    return torch.stack([table[v] * 3.0 if v is not None else torch.zeros(table.shape[1]) for v in says])


def test_blanks_are_dropped_and_repeats_merged_into_their_mean():
    table = _table()
    says = [1, 1, None, 2, None, 2, 3, 3, 3, None]
    x = _clip(table, says) + 0.01 * torch.randn(len(says), table.shape[1])
    out = ctc_compress(x, table, SpeechCompressionOptions(temperature=TAU))
    assert out.groups.tolist() == [0, 3, 5, 6]  # a repeat across a blank stays two pieces, as in CTC
    torch.testing.assert_close(out.tokens, torch.stack([x[0:2].mean(0), x[3], x[5], x[6:9].mean(0)]))
    flat = ctc_compress(x, table, SpeechCompressionOptions(temperature=TAU, merge_repeats=False))
    assert flat.groups.tolist() == [0, 1, 3, 5, 6, 7, 8]
    torch.testing.assert_close(flat.tokens, x[[0, 1, 3, 5, 6, 7, 8]])


def test_threshold_decides_what_counts_as_blank():
    table = _table()
    x = _clip(table, [4, None, 5]) * torch.tensor([[1.0], [1.0], [0.108]])  # the last token is unsure
    blank_p = torch.cat([x @ table.T / TAU, torch.full((3, 1), torch.log(torch.tensor(12.0)) + 4)], -1).softmax(-1)
    p = float(blank_p[2, -1])
    assert 0.05 < p < 0.95, p
    strict = ctc_compress(x, table, SpeechCompressionOptions(temperature=TAU, blank_threshold=min(1.0, p + 0.01)))
    loose = ctc_compress(x, table, SpeechCompressionOptions(temperature=TAU, blank_threshold=p - 0.01))
    assert strict.groups.tolist() == [0, 2] and loose.groups.tolist() == [0]


def test_an_all_blank_clip_keeps_its_least_blank_token_and_none_mode_is_identity():
    table = _table()
    x = torch.zeros(5, table.shape[1])
    x[3] = table[7] * 0.2  # still blank, but the least so
    out = ctc_compress(x, table, SpeechCompressionOptions(temperature=TAU))
    assert out.groups.tolist() == [3] and torch.equal(out.tokens, x[3:4])
    same = ctc_compress(x, table, SpeechCompressionOptions(mode="none"))
    assert same.tokens is x and same.groups.tolist() == list(range(5))


def test_gradient_reaches_kept_tokens_only():
    table = _table()
    x = _clip(table, [1, 1, None, 2]).requires_grad_(True)
    ctc_compress(x, table, SpeechCompressionOptions(temperature=TAU)).tokens.sum().backward()
    assert torch.allclose(x.grad[:, 0], torch.tensor([0.5, 0.5, 0.0, 1.0]))


@pytest.mark.parametrize("tokens, match", [(torch.zeros(16), "floating \\(n, d\\)"),
                                           (torch.zeros(3, 8), "share the LLM's hidden size")])
def test_bad_inputs_are_named(tokens, match):
    with pytest.raises(VocabCTCInputError, match=match):
        ctc_compress(tokens, _table(), SpeechCompressionOptions())


def test_config_validates_the_options(tiny_config):
    cfg = LyraConfig.from_dict(tiny_config(), ["speech_compression.mode=ctc"])
    assert cfg.speech_compression is not None and cfg.speech_compression.blank_threshold == 0.5
    with pytest.raises(ConfigError, match="speech_compression"):
        LyraConfig.from_dict(tiny_config(), ["speech_compression.blank_threshold=0"])
    with pytest.raises(ConfigError, match="speech_compression"):
        LyraConfig.from_dict(tiny_config(), ["speech_compression.mode=fast"])


def test_embeddings_output_is_the_posterior_mix_of_the_table():
    table = _table()
    x = _clip(table, [3, None, 6, 6]) * torch.tensor([[1.0], [1.0], [0.5], [0.5]])
    x.requires_grad_(True)
    opts = SpeechCompressionOptions(temperature=TAU, output="embeddings")
    out = ctc_compress(x, table, opts)
    assert out.groups.tolist() == [0, 2]
    # a sure token reads as its word piece's own embedding (typed input)
    torch.testing.assert_close(out.tokens[0], table[3], atol=1e-3, rtol=0)
    merged = x[2:4].mean(0)
    want = (merged @ table.T / TAU).softmax(-1) @ table
    torch.testing.assert_close(out.tokens[1], want)
    out.tokens.sum().backward()
    assert x.grad[2].abs().sum() > 0 and x.grad[1].abs().sum() == 0


def test_greedy_pieces_best_reads_each_groups_best_piece_as_typed(tiny_config):
    table = _table()
    x = _clip(table, [3, None, 6, 6]) * torch.tensor([[1.0], [1.0], [0.5], [0.5]])
    x[2:4] += 0.48 * table[7] * 3.0  # an unsure group: 6, or maybe 7
    opts = SpeechCompressionOptions(temperature=TAU, output="embeddings", greedy_pieces="best")
    out = ctc_compress(x, table, opts)
    assert out.groups.tolist() == [0, 2] and out.pieces.tolist() == [3, 6]
    torch.testing.assert_close(out.tokens, table[[3, 6]])  # exactly the typed pieces, no mix
    mix = ctc_compress(x, table, opts.model_copy(update={"greedy_pieces": "mix"}))
    assert mix.pieces is None and not torch.allclose(mix.tokens[1], table[6], atol=1e-2)
    with pytest.raises(ConfigError, match="greedy_pieces"):
        LyraConfig.from_dict(tiny_config(), ["speech_compression.greedy_pieces=argmax"])


def test_long_inputs_are_scored_in_pieces_with_the_same_result(monkeypatch):
    import lyra_sdk.mechanisms.ctc_compression as cc

    table = _table()
    says = [1, None, 2, 2, None, None, 5, 5, 7, None] * 7
    x = _clip(table, says) + 0.01 * torch.randn(len(says), table.shape[1])
    for output in ("tokens", "embeddings"):
        opts = SpeechCompressionOptions(temperature=TAU, output=output)
        whole = ctc_compress(x, table, opts)
        monkeypatch.setattr(cc, "CHUNK", 3)
        pieces = ctc_compress(x, table, opts)
        monkeypatch.setattr(cc, "CHUNK", 1024)
        assert torch.equal(whole.groups, pieces.groups)
        torch.testing.assert_close(whole.tokens, pieces.tokens)
