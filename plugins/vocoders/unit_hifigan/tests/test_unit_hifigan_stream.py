"""Batched vs one-by-one, weight norm folded vs not, streaming vs offline, receptive field."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lyra_unit_hifigan.checkpoint import load_fairseq
from lyra_unit_hifigan.config import HifiGanConfig, receptive_field_frames
from lyra_unit_hifigan.model import CodeHiFiGAN
from lyra_unit_hifigan.streaming import StreamingVocoder

GOLDEN = Path(__file__).parent / "golden"
STREAM_ATOL = 1e-5  # measured max abs difference: ~1.5e-7 (fp32)


def model(name: str) -> CodeHiFiGAN:
    return load_fairseq(GOLDEN / f"{name}.pt", GOLDEN / f"{name}.config.json").remove_weight_norm()


def spkr_of(m: CodeHiFiGAN, batch: int = 1) -> torch.Tensor | None:
    return torch.full((batch,), 2) if m.cfg.has_speaker else None


@pytest.mark.parametrize("name", ["dur", "multispkr"])
@pytest.mark.parametrize("dur", [False, True])
def test_batched_equals_one_by_one(name, dur):
    m = model(name)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, m.cfg.num_embeddings, (n,), generator=g) for n in (17, 40, 5)]
    units = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=-1)  # (3, 40)
    lengths = torch.tensor([len(s) for s in seqs])
    with torch.no_grad():
        wav, wav_lengths = m(units, lengths, dur_prediction=dur, spkr=spkr_of(m, 3))
        for i, s in enumerate(seqs):
            one, _ = m(s[None], dur_prediction=dur, spkr=spkr_of(m))
            n = int(wav_lengths[i])
            assert n == one.shape[1]
            torch.testing.assert_close(wav[i, :n], one[0], atol=1e-6, rtol=0)
            assert not wav[i, n:].any()


def test_weight_norm_removed_equals_not_removed():
    m = load_fairseq(GOLDEN / "dur.pt", GOLDEN / "dur.config.json")
    units = torch.randint(0, 100, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, _ = m(units)
        after, _ = m.remove_weight_norm()(units)
    torch.testing.assert_close(before, after, atol=1e-7, rtol=0)


def chunked(units: list[int], sizes: list[int]) -> list[list[int]]:
    out, i = [], 0
    for s in sizes:
        out.append(units[i:i + s])
        i += s
    return out + ([units[i:]] if i < len(units) else [])


def random_sizes(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while sum(sizes) < n:
        sizes.append(rng.choice([0, 1, 2, 3, 7, 13, 29]))
    return sizes


@pytest.mark.parametrize("name", ["dur", "multispkr"])
@pytest.mark.parametrize("dur", [False, True])
@pytest.mark.parametrize("arrival,chunk", [("ones", 1), ("random", 4), ("random", 25), ("all", 25)])
def test_stream_equals_offline(name, dur, arrival, chunk):
    m = model(name)
    n = 64
    units = torch.randint(0, m.cfg.num_embeddings, (n,), generator=torch.Generator().manual_seed(3)).tolist()
    sizes = {"ones": [1] * n, "random": random_sizes(n, seed=chunk), "all": [n]}[arrival]
    with torch.no_grad():
        offline, _ = m(torch.tensor([units]), dur_prediction=dur, spkr=spkr_of(m))
    pieces = list(StreamingVocoder(m, dur_prediction=dur, chunk=chunk, spkr=spkr_of(m)).stream(chunked(units, sizes)))
    assert all(p.numel() % m.hop_length == 0 and p.numel() > 0 for p in pieces)
    streamed = torch.cat(pieces)
    assert streamed.shape == offline[0].shape
    torch.testing.assert_close(streamed, offline[0], atol=STREAM_ATOL, rtol=0)
    if arrival == "ones" and chunk == 1:
        assert len(pieces) > n // 2  # audio really leaves as the units arrive


def test_stream_with_too_little_context_is_not_exact():
    m = model("dur")
    units = torch.randint(0, 100, (60,), generator=torch.Generator().manual_seed(4)).tolist()
    with torch.no_grad():
        offline, _ = m(torch.tensor([units]))
    streamed = torch.cat(list(StreamingVocoder(m, chunk=5, context=2).stream(chunked(units, [5] * 12))))
    assert (streamed - offline[0]).abs().max() > 1e-4  # the context, not luck, makes the exact case exact


def test_stream_push_flush_api():
    m = model("dur")
    s = StreamingVocoder(m, chunk=1)
    left, right = receptive_field_frames(m.cfg)
    assert s.push(list(range(right))).numel() == 0  # no look-ahead yet: nothing is final
    assert s.push([1]).numel() == m.hop_length  # one frame now has `right` frames after it
    assert s.flush().numel() == right * m.hop_length
    with pytest.raises(RuntimeError):
        s.push([1])


@pytest.mark.parametrize("kw", [{}, {"resblock": "2", "resblock_dilation_sizes": [[1, 3], [1, 3], [1, 3]]},
                                {"upsample_rates": [5, 4, 2], "upsample_kernel_sizes": [11, 8, 4]}])
def test_receptive_field_is_exact(kw):
    """Autograd in float64: the frames an output sample depends on are exactly what the formula says."""
    cfg = HifiGanConfig(upsample_initial_channel=32, embedding_dim=4, model_in_dim=4, dur_predictor_params=None,
                        num_embeddings=10, **kw)
    torch.manual_seed(0)
    m = CodeHiFiGAN(cfg).double().remove_weight_norm()
    x = torch.zeros(1, 4, 50, dtype=torch.float64, requires_grad=True)
    y = m.generate(x)[0]
    hop = cfg.hop_length
    # The first sample of frame 25 reaches furthest left, its last sample furthest right.
    (g_first,) = torch.autograd.grad(y[25 * hop], x, retain_graph=True)
    (g_last,) = torch.autograd.grad(y[26 * hop - 1], x)
    left = 25 - int(g_first[0].abs().sum(0).nonzero().min())
    right = int(g_last[0].abs().sum(0).nonzero().max()) - 25
    assert (left, right) == receptive_field_frames(cfg)


def test_lyra_receptive_field():
    assert receptive_field_frames(HifiGanConfig()) == (21, 21)
