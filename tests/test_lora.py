"""MLoRA: adapter switching, exact base model when off, per-route training, PEFT folders, merging, routing."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from lyra_sdk.errors import CheckpointError, ConfigError, LyraError
from lyra_sdk.interfaces import MediaEmbeddings, Modality, RoutingInput
from lyra_sdk.mechanisms.lora import LONG_SPEECH, SPEECH, AdapterSet, LoraOptions, route_for_batch
from lyra_sdk.mechanisms.routing import DefaultRouter
from lyra_sdk.projectors import SimpleMlpProjector

HIDDEN, FEAT = 32, 8
MERGE_ATOL = 1e-5  # merged weights vs. unmerged LoRA, float32
PEFT_ATOL = 1e-6  # our in-place adapter vs. peft.PeftModel on the same weights, float32
OPTIONS = {"adapters": {"speech": {"r": 4, "alpha": 8}, "long_speech": {"r": 8, "alpha": 32}}}


def _base():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=97, max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    lm = Qwen2ForCausalLM(cfg).eval()
    proj = SimpleMlpProjector(SimpleMlpProjector.Options(in_dim=FEAT, out_dim=HIDDEN, k=2, hidden_dim=16)).eval()
    return lm, proj


def _attach(lm, proj, options=OPTIONS, perturb=True):
    adapters = AdapterSet.attach(lm, {Modality.SPEECH: proj}, LoraOptions.model_validate(options))
    if perturb:  # peft starts lora_B at zero (route == base); make every route differ from the base
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for route in adapters.routes:
                for p in adapters.trainable_parameters(route).values():
                    p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return adapters


@pytest.fixture()
def setup():
    """(pristine base LM, pristine projector, LM with adapters, adapters)."""
    lm, proj = _base()
    ref_lm, ref_proj = copy.deepcopy(lm), copy.deepcopy(proj)
    return ref_lm, ref_proj, lm, _attach(lm, proj)


IDS = torch.tensor([[3, 14, 15, 92, 6, 5]])
FEATS = MediaEmbeddings(torch.randn(1, 8, FEAT, generator=torch.Generator().manual_seed(2)),
                        torch.ones(1, 8, dtype=torch.bool))  # (1, 8, FEAT) -> 4 speech tokens


def _logits(lm, projector=None):
    """Logits of the tiny LM on IDS, with projected speech in front when a projector is given."""
    emb = lm.get_input_embeddings()(IDS)
    if projector is not None:
        emb = torch.cat([projector(FEATS).embeddings, emb], dim=1)  # (1, 4 + 6, D)
    return lm(inputs_embeds=emb).logits


def _snapshot(*modules):
    return {id(p): p.detach().clone() for m in modules for p in m.parameters()}


@torch.no_grad()
def test_off_is_exact_base_and_routes_change_logits(setup):
    ref_lm, ref_proj, lm, adapters = setup
    base = _logits(ref_lm, ref_proj)
    assert adapters.active is None
    assert not any(m.training for m in lm.modules())  # peft's new dropout layers follow the model's mode
    assert torch.equal(_logits(lm, adapters.projector(Modality.SPEECH, None)), base)
    adapters.activate("speech")
    speech = _logits(lm, adapters.projector(Modality.SPEECH, "speech"))
    assert not torch.allclose(speech, base)
    adapters.activate("long_speech")
    assert not torch.allclose(_logits(lm, adapters.projector(Modality.SPEECH, "long_speech")), speech)
    with adapters.using(None):
        assert torch.equal(_logits(lm, adapters.projector(Modality.SPEECH, adapters.active)), base)
    assert adapters.active == "long_speech"


@torch.no_grad()
def test_projector_swaps_with_route(setup):
    _, ref_proj, _, adapters = setup
    base_proj = adapters.projector(Modality.SPEECH, None)
    speech_proj = adapters.projector(Modality.SPEECH, "speech")
    assert speech_proj is not base_proj and speech_proj is not adapters.projector(Modality.SPEECH, "long_speech")
    assert torch.equal(base_proj(FEATS).embeddings, ref_proj(FEATS).embeddings)
    assert not torch.allclose(speech_proj(FEATS).embeddings, base_proj(FEATS).embeddings)
    with pytest.raises(LyraError, match="unknown LoRA route 'nope'; configured routes: speech, long_speech"):
        adapters.activate("nope")


def test_training_step_touches_only_its_route(setup):
    ref_lm, ref_proj, lm, adapters = setup
    base_proj = adapters.projector(Modality.SPEECH, None)
    adapters.mark_trainable("speech")
    trainable = adapters.trainable_parameters("speech")
    ids = {id(p) for p in trainable.values()}
    everything = [p for m in (lm, adapters, base_proj) for p in m.parameters()]
    assert {id(p) for p in everything if p.requires_grad} == ids
    assert any(".lora_A." in k for k in trainable) and any(k.startswith("projectors.speech.") for k in trainable)
    before = _snapshot(lm, adapters, base_proj)
    adapters.activate("speech")
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2)
    logits = _logits(lm, adapters.projector(Modality.SPEECH, "speech"))
    loss = torch.nn.functional.cross_entropy(logits[0], torch.arange(logits.shape[1]) % 97)
    loss.backward()
    opt.step()
    changed = {i for i, t in before.items() if not torch.equal(t, next(p for p in everything if id(p) == i))}
    assert changed == ids
    adapters.activate(None)
    with torch.no_grad():
        assert torch.equal(_logits(lm, adapters.projector(Modality.SPEECH, None)), _logits(ref_lm, ref_proj))


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
@torch.no_grad()
def test_save_peft_loads_in_peft_and_round_trips(setup, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    ref_lm, ref_proj, lm, adapters = setup
    adapters.activate("speech")
    ours = _logits(lm)
    folder = adapters.save_peft("speech", tmp_path / "speech_lora", base_model_name_or_path="tiny")
    assert {p.name for p in folder.iterdir()} == {"adapter_config.json", "adapter_model.safetensors",
                                                  "non_lora_trainables.safetensors"}
    keys = load_file(str(folder / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert len(keys) == 2 * 7 * 2  # A and B, 7 modules, 2 layers
    assert set(load_file(str(folder / "non_lora_trainables.safetensors"))) == {
        "speech.linear1.weight", "speech.linear1.bias", "speech.linear2.weight", "speech.linear2.bias"}

    peft_model = PeftModel.from_pretrained(copy.deepcopy(ref_lm), str(folder)).eval()
    torch.testing.assert_close(peft_model(input_ids=IDS).logits, ours, atol=PEFT_ATOL, rtol=0)

    lm2, proj2 = copy.deepcopy(ref_lm), copy.deepcopy(ref_proj)
    other = _attach(lm2, proj2, perturb=False)
    other.load_peft("speech", folder)
    other.activate("speech")
    assert torch.equal(_logits(lm2, other.projector(Modality.SPEECH, "speech")),
                       _logits(lm, adapters.projector(Modality.SPEECH, "speech")))


@torch.no_grad()
def test_load_original_lyra_projector_bin(setup, tmp_path):
    _, _, _, adapters = setup
    folder = adapters.save_peft("speech", tmp_path / "speech_lora")
    (folder / "non_lora_trainables.safetensors").unlink()
    state = adapters.projector(Modality.SPEECH, "speech").state_dict()
    torch.save({f"model.model.mm_speech_projector.{k}": v.clone() for k, v in state.items()},
               folder / "non_lora_trainables.bin")
    lm2, proj2 = _base()
    other = _attach(lm2, proj2, perturb=False)
    other.load_peft("speech", folder)
    for k, v in other.projector(Modality.SPEECH, "speech").state_dict().items():
        assert torch.equal(v, state[k])


def test_load_peft_refuses_mismatches(setup, tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, _, adapters = setup
    folder = adapters.save_peft("speech", tmp_path / "speech_lora")
    with pytest.raises(CheckpointError, match=r"adapter rank r=4, but lora.adapters.long_speech.r is 8"):
        adapters.load_peft("long_speech", folder)
    lm2, proj2 = _base()
    wrong = _attach(lm2, proj2, {"adapters": {"speech": {"r": 16, "alpha": 8}}}, perturb=False)
    with pytest.raises(CheckpointError, match="r=4, but lora.adapters.speech.r is 16"):
        wrong.load_peft("speech", folder)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    weights.pop("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight")
    save_file(weights, str(folder / "adapter_model.safetensors"))
    before = _snapshot(adapters)
    with pytest.raises(CheckpointError, match="missing.*layers.1.mlp.down_proj.lora_B.weight"):
        adapters.load_peft("speech", folder)
    assert all(torch.equal(t, p) for t, p in zip(before.values(), adapters.parameters(), strict=True))
    with pytest.raises(CheckpointError, match="not found"):
        adapters.load_peft("speech", tmp_path / "nowhere")


@torch.no_grad()
def test_merged_copy_matches_active_adapter(setup):
    from peft.tuners.tuners_utils import BaseTunerLayer

    ref_lm, _, lm, adapters = setup
    adapters.activate("long_speech")
    active = _logits(lm)
    merged = adapters.merged_copy(lm, "long_speech")
    assert type(merged) is type(ref_lm)
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    assert set(merged.state_dict()) == set(ref_lm.state_dict())
    torch.testing.assert_close(_logits(merged), active, atol=MERGE_ATOL, rtol=0)
    assert torch.equal(_logits(lm), active)  # the source model is untouched


@pytest.mark.parametrize(("counts", "chunks", "available", "expected"), [
    ({}, 0, ["speech", "long_speech"], None),
    ({Modality.IMAGE: 2}, 0, ["speech", "long_speech"], None),
    ({Modality.SPEECH: 1}, 1, ["speech", "long_speech"], "speech"),
    ({Modality.SPEECH: 1, Modality.IMAGE: 1}, 1, ["speech", "long_speech"], "speech"),
    ({Modality.SPEECH: 1}, 3, ["speech", "long_speech"], "long_speech"),
    ({Modality.SPEECH: 2}, 2, ["speech", "long_speech"], "long_speech"),
    ({Modality.SPEECH: 1}, 3, ["speech"], "speech"),
    ({Modality.SPEECH: 1}, 3, [], None),
    ({Modality.SPEECH: 1}, 1, ["long_speech"], None),
])
def test_default_router(counts, chunks, available, expected):
    router = DefaultRouter.from_options(DefaultRouter.Options(available=available))
    assert router.route(RoutingInput(counts, chunks)) == expected


def test_batches_and_options_are_checked():
    assert route_for_batch(["speech", "speech"]) == "speech"
    assert route_for_batch([None]) is None
    with pytest.raises(LyraError, match="^batch mixes LoRA routes speech and None: split it by route$"):
        route_for_batch(["speech", None, "speech"])
    with pytest.raises(ValidationError, match=r"lowercase letters, digits and '_'.*\['Speech', 'long-speech'\]"):
        LoraOptions.model_validate({"adapters": {"Speech": {}, "long-speech": {}}})
    with pytest.raises(ValidationError, match=r"\['keys'\] are reserved"):
        LoraOptions.model_validate({"adapters": {"keys": {}}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        LoraOptions.model_validate({"adapters": {"speech": {"rank": 8}}})
    assert (SPEECH.r, SPEECH.alpha, LONG_SPEECH.r, LONG_SPEECH.alpha) == (64, 16, 128, 256)
    lm, proj = _base()
    with pytest.raises(ConfigError, match="lora.adapters.img.projectors: the model has no image projector"):
        AdapterSet.attach(lm, {Modality.SPEECH: proj},
                          LoraOptions.model_validate({"adapters": {"img": {"projectors": ["image"]}}}))
    with pytest.raises(ConfigError, match="lora.adapters.x.target_modules"):
        AdapterSet.attach(lm, {Modality.SPEECH: proj},
                          LoraOptions.model_validate({"adapters": {"x": {"target_modules": ["nope"]}}}))
