"""Ensembles: the network is the mean of the members' probabilities on real tiles (torch
and ONNX), the model file rebuilds it with weights_only loading, incompatible members
are refused, and ``python -m core ensemble`` of two real training runs chooses its
threshold on val and works with evaluate, info, segment and export-onnx."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from core.cli.main import main
from core.config import load_config
from core.data.discovery import find_dataset
from core.evaluation.evaluate import tile_dataset
from core.models.build import ModelMeta, build_model, load_model, read_model_file, save_model_file
from core.models.ensemble import IncompatibleMembersError, MeanProbabilityEnsemble
from core.models.meta import read_model_meta
from core.models.onnx_export import export_onnx
from core.training.ensemble import assemble

BANDS = [4, 3, 2, 8]
TINY = {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}


@pytest.fixture(scope="module")
def real_tiles(solafune):
    """16 real Sentinel-2 tiles and their band statistics."""
    pairs = find_dataset(solafune).pairs[:16]
    probe = ModelMeta("Unet", "resnet18", 4, BANDS, [0.0] * 4, [1.0] * 4, upscale=2)
    raw = tile_dataset(probe, pairs)
    pixels = np.concatenate([raw.tile(i).image[:, raw.tile(i).valid] for i in range(len(raw))], 1)
    return pairs, pixels.mean(1).tolist(), pixels.std(1).tolist()


def tiny_member(seed: int, x: torch.Tensor) -> nn.Module:
    """A small random Unet whose BatchNorm statistics are those of real tiles and whose
    logits are spread, so its probabilities vary like a trained model's."""
    torch.manual_seed(seed)
    model = build_model("Unet", "resnet18", 4, None, TINY)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
        model.segmentation_head[0].weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="module")
def members(real_tiles, tmp_path_factory):
    """Two tiny member model files (other seeds) and a batch of real tiles."""
    pairs, mean, std = real_tiles
    root = tmp_path_factory.mktemp("members")
    meta = ModelMeta("Unet", "resnet18", 4, BANDS, mean, std, threshold=0.4, upscale=2,
                     model_params=TINY, tile_size=64, overlap=16,
                     metrics={"val": {"iou": 0.5}, "test": {"iou": 0.4}})  # fmt: skip
    ds = tile_dataset(meta, pairs)
    x = torch.stack([ds[i][0] for i in range(8)])  # 8 real tiles, upscaled and padded
    paths, nets = [], []
    for k, seed in enumerate((1, 2)):
        net = tiny_member(seed, x)
        path = root / f"m{k}.pt"
        save_model_file(path, net, dataclasses.replace(meta, threshold=0.4 + 0.1 * k))
        paths.append(path)
        nets.append(net)
    return root, paths, nets, x, meta


def test_ensemble_is_the_mean_probability_of_its_members_on_real_tiles(members):
    root, paths, nets, x, _ = members
    net, meta = assemble(paths)
    save_model_file(root / "ens.pt", net, meta)
    loaded, lmeta = load_model(root / "ens.pt")  # rebuilt from metadata, weights_only
    assert isinstance(loaded, MeanProbabilityEnsemble) and len(loaded.members) == 2
    with torch.no_grad():
        p = [torch.sigmoid(n(x)) for n in nets]
        got = torch.sigmoid(loaded(x))
    assert (p[0] - p[1]).abs().max() > 0.3  # two really different members
    assert p[0].std() > 0.1 and p[1].std() > 0.1
    assert (got - (p[0] + p[1]) / 2).abs().max().item() < 1e-5
    # The metadata lists the members; read without torch too.
    assert lmeta == read_model_meta(root / "ens.pt")
    assert (lmeta.arch, lmeta.encoder, lmeta.bands, lmeta.upscale) == ("Unet", "resnet18",
                                                                       BANDS, 2)  # fmt: skip
    ens = lmeta.ensemble
    assert ens["size"] == 2 and ens["combine"] == "mean_probability"
    for m, path in zip(ens["members"], paths, strict=True):
        assert m["source"] == str(path.resolve())
        assert m["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert (m["arch"], m["encoder"], m["model_params"]) == ("Unet", "resnet18", TINY)
        assert m["metrics"] == {"val": {"iou": 0.5}, "test": {"iou": 0.4}}
    assert [m["threshold"] for m in ens["members"]] == pytest.approx([0.4, 0.5])
    _, state = read_model_file(root / "ens.pt")
    assert all(k.startswith(("members.0.", "members.1.")) for k in state)


def test_saturated_members_average_exactly():
    class Const(nn.Module):
        def __init__(self, value: float):
            super().__init__()
            self.value = value

        def forward(self, x):
            return torch.full_like(x[:, :1], self.value)

    x = torch.zeros(1, 1, 2, 2)
    for a, b, want in ((1e4, -1e4, 0.5), (1e4, 1e4, 1.0), (-1e4, -1e4, 0.0), (3.0, -1.0, None)):
        out = MeanProbabilityEnsemble([Const(a), Const(b)])(x)
        assert torch.isfinite(out).all()
        if want is None:
            want = (torch.sigmoid(torch.tensor(a)) + torch.sigmoid(torch.tensor(b))).item() / 2
        assert torch.sigmoid(out).flatten()[0].item() == pytest.approx(want, abs=1e-7)


def test_onnx_export_of_an_ensemble_matches_torch(members):
    root, paths, nets, x, _ = members
    net, meta = assemble(paths)
    save_model_file(root / "ens_onnx.pt", net, meta)
    out = export_onnx(root / "ens_onnx.pt", root / "ens.onnx")
    graph = onnx.load(str(out))
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["solarseg"])["ensemble"]["size"] == 2
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        want = ((torch.sigmoid(nets[0](x)) + torch.sigmoid(nets[1](x))) / 2).numpy()
    assert got.shape == want.shape == (8, 1, 64, 64)
    assert np.abs(got - want).max() < 1e-3
    assert want.std() > 0.1


def test_incompatible_members_are_refused_naming_both_files(members, capsys):
    root, paths, nets, x, meta = members
    other = root / "other_bands.pt"
    save_model_file(other, nets[0], dataclasses.replace(meta, bands=[1, 2, 3, 4]))
    with pytest.raises(IncompatibleMembersError) as err:
        assemble([paths[0], other])
    message = str(err.value)
    assert "\n" not in message
    assert str(paths[0]) in message and str(other) in message
    assert "bands [4, 3, 2, 8] vs [1, 2, 3, 4]" in message
    renorm = root / "other_std.pt"
    save_model_file(renorm, nets[1], dataclasses.replace(meta, std=[s * 2 for s in meta.std]))
    with pytest.raises(
        IncompatibleMembersError, match=r"m1.pt and .*other_std.pt: normalisation std"
    ):
        assemble([paths[1], renorm])
    up = root / "other_upscale.pt"
    save_model_file(up, nets[1], dataclasses.replace(meta, upscale=4))
    with pytest.raises(IncompatibleMembersError, match="upscale 2 vs 4"):
        assemble([paths[0], up])
    with pytest.raises(IncompatibleMembersError, match="at least two"):
        assemble([paths[0]])
    # The command line: exit status 2 and one line naming both files; nothing written.
    code = main(["ensemble", str(paths[0]), str(other), "-o", str(root / "no.pt")])
    err_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err_lines) == 1
    assert str(paths[0]) in err_lines[0] and str(other) in err_lines[0]
    assert not (root / "no.pt").exists()


def test_an_ensemble_is_not_a_member_or_a_starting_model(members):
    from core.training.finetune import IncompatibleModelError, load_init_model

    root, paths, _, _, _ = members
    net, meta = assemble(paths)
    save_model_file(root / "nested.pt", net, meta)
    with pytest.raises(IncompatibleMembersError, match="already an ensemble of 2 models"):
        assemble([paths[0], root / "nested.pt"])
    cfg = load_config(None, [f"model.init_from={root / 'nested.pt'}"])
    with pytest.raises(IncompatibleModelError, match="is an ensemble of 2 models"):
        load_init_model(cfg)
