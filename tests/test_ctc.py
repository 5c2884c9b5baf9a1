"""The CTC speech-unit generator: shapes, greedy decoding, loss, presets and exact streaming."""

from __future__ import annotations

import pytest
import torch

from lyra_sdk.ctc import CtcOptions, CtcSpeechDecoder
from lyra_sdk.errors import LyraError


@pytest.fixture(scope="module")
def dec():
    torch.manual_seed(0)
    opts = CtcOptions(llm_hidden_size=32, hidden_size=64, num_heads=4, ffn_size=128, unit_vocab_size=20,
                      upsample_factor=5)
    return CtcSpeechDecoder.from_options(opts).eval()


def test_collapse_rule():
    assert CtcSpeechDecoder.collapse([3, 3, 20, 3, 5, 5, 20, 20, 7], blank=20) == [3, 3, 5, 7]
    assert CtcSpeechDecoder.collapse([3, 4], blank=20, previous=3) == [4]


def test_shapes_and_upsampling(dec):
    h = torch.randn(2, 6, 32)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    logits, up_mask = dec(h, mask)
    assert logits.shape == (2, 30, 21) and up_mask.sum(-1).tolist() == [30, 20]
    up, _ = dec.upsample(h, mask)
    assert torch.equal(up[0, 7], h[0, 7 // 5]) and torch.equal(up[0, 29], h[0, 5])


def test_padding_does_not_change_results(dec):
    torch.manual_seed(1)
    h = torch.randn(1, 4, 32)
    with torch.no_grad():
        alone, _ = dec(h, torch.ones(1, 4, dtype=torch.bool))
        padded = torch.cat([torch.randn(1, 3, 32), h], dim=1)  # left padding
        pm = torch.tensor([[False] * 3 + [True] * 4])
        both, m = dec(padded, pm)
    torch.testing.assert_close(both[0, m[0]], alone[0], rtol=0, atol=1e-5)


def test_stream_equals_offline(dec):
    torch.manual_seed(2)
    h = torch.randn(1, 11, 32)
    with torch.no_grad():
        offline = dec.decode(h, torch.ones(1, 11, dtype=torch.bool))[0]
        for chunks in ([1] * 11, [3, 3, 5], [11]):
            stream, got, i = dec.stream(), [], 0
            for n in chunks:
                got += stream.push(h[0, i : i + n])
                i += n
            got += stream.flush()
            assert got == offline


def test_loss_matches_torch_ctc(dec):
    torch.manual_seed(3)
    h = torch.randn(2, 5, 32, requires_grad=True)
    mask = torch.ones(2, 5, dtype=torch.bool)
    targets = [[1, 2, 3], [4, 4, 5, 6]]
    loss = dec.loss(h, mask, targets)
    logits, _ = dec(h, mask)
    logp = torch.log_softmax(logits.float(), -1).transpose(0, 1)
    ref = torch.nn.functional.ctc_loss(logp, torch.tensor([1, 2, 3, 4, 4, 5, 6]), torch.tensor([25, 25]),
                                       torch.tensor([3, 4]), blank=20, reduction="sum", zero_infinity=True) / 7
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert h.grad is not None and h.grad.abs().sum() > 0
    with pytest.raises(LyraError, match="outside"):
        dec.loss(h, mask, [[1, 99], [2]])


def test_lyra_preset_size_and_key_names():
    with torch.device("meta"):
        d = CtcSpeechDecoder.from_options(CtcOptions(preset="lyra", llm_hidden_size=1536))
    n = sum(p.numel() for p in d.parameters())
    assert 0.40e9 < n < 0.44e9  # REFERENCE: about 0.42B
    keys = set(d.state_dict())
    assert {"input_proj.weight", "output_proj.weight", "layers.1.self_attn.q_proj.weight",
            "layers.0.mlp.gate_proj.weight", "layers.0.input_layernorm.weight"} <= keys
    assert d.output_proj.out_features == 1001
