import pickle

import numpy as np
import pytest
import torch

from core.models.build import (
    ModelFileError,
    ModelMeta,
    build_model,
    check_input_side,
    load_model,
    read_model_file,
    save_model_file,
)


def _meta(**kw):
    base = dict(arch="Unet", encoder="resnet18", in_channels=4, bands=[4, 3, 2, 8],
                mean=[1.0, 2.0, 3.0, 4.0], std=[1.0, 1.0, 2.0, 2.0], threshold=0.35,
                upscale=2, config={"train": {"epochs": 3}}, metrics={"test": {"iou": 0.5}})  # fmt: skip
    base.update(kw)
    return ModelMeta(**base)


def test_model_file_roundtrip_is_self_describing(tmp_path):
    model = build_model("Unet", "resnet18", 4)
    save_model_file(tmp_path / "m.pt", model, _meta())
    meta, state = read_model_file(tmp_path / "m.pt")
    assert meta == _meta()
    again, meta2 = load_model(tmp_path / "m.pt")
    x = torch.randn(1, 4, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert not again.training and meta2.bands == [4, 3, 2, 8]


def test_weights_only_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": "solarseg-model", "x": Evil()}))
    with pytest.raises(ModelFileError, match="evil.pt: not a loadable SolarSeg model file"):
        read_model_file(path)
    torch.save({"hello": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="other.pt: not a SolarSeg model file"):
        read_model_file(tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="no model.pt"):
        read_model_file(tmp_path)


def test_logits_out_and_sigmoid_once():
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", 4).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 4, 64, 64) * 5)
    # Logits are unbounded; probabilities squashed twice would sit in [0.5, 0.73].
    assert out.min() < 0 or out.max() > 1
    from core.evaluation.predict import forward_probability

    x = torch.randn(2, 4, 64, 64) * 5
    with torch.no_grad():
        prob = forward_probability(model, x)
        logits = model(x)
    torch.testing.assert_close(prob, torch.sigmoid(logits))
    assert prob.min() < 0.4 or prob.max() > 0.8  # not stuck between 0.5 and 0.73


@pytest.mark.parametrize("arch", ["Unet", "UnetPlusPlus", "DeepLabV3Plus", "FPN", "PSPNet"])
def test_architectures_by_name_four_bands(arch):
    model = build_model(arch, "resnet18", 4)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 4, 64, 64)).shape == (1, 1, 64, 64)


def test_unknown_names_and_small_inputs():
    with pytest.raises(ValueError, match="unknown architecture 'Unett'"):
        build_model("Unett", "resnet18", 4)
    with pytest.raises(ValueError, match="unknown encoder 'resnet1800'"):
        build_model("Unet", "resnet1800", 4)
    with pytest.raises(ValueError, match="PAN needs inputs of at least 128x128 pixels"):
        check_input_side("PAN", 96, 96)
    check_input_side("Unet", 32, 32)


def test_local_three_band_weights_adapt_to_four_bands(tmp_path):
    rgb = build_model("Unet", "resnet18", 3)
    torch.save(rgb.encoder.state_dict(), tmp_path / "enc.pth")
    four = build_model("Unet", "resnet18", 4, encoder_weights=str(tmp_path / "enc.pth"))
    w3 = rgb.encoder.conv1.weight.detach()
    w4 = four.encoder.conv1.weight.detach()
    assert w4.shape[1] == 4
    np.testing.assert_allclose(w4[:, :3].numpy(), (w3 * 3 / 4).numpy(), rtol=1e-6)
    np.testing.assert_allclose(w4[:, 3].numpy(), (w3[:, 0] * 3 / 4).numpy(), rtol=1e-6)
    torch.testing.assert_close(
        four.encoder.layer1[0].conv1.weight, rgb.encoder.layer1[0].conv1.weight
    )


def test_model_params_travel_with_the_weights(tmp_path):
    params = {"encoder_depth": 4, "decoder_channels": [64, 32, 16, 8]}
    model = build_model("Unet", "resnet18", 4, None, params)
    save_model_file(tmp_path / "m.pt", model, _meta(model_params=params))
    again, meta = load_model(tmp_path / "m.pt")
    assert meta.model_params == params
    assert again.decoder.blocks[-1].conv2[0].out_channels == 8
    with pytest.raises(ValueError, match="invalid model.params"):
        build_model("Unet", "resnet18", 4, None, {"no_such_option": 1})
