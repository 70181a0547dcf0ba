"""Tests of the model registry (noisylab.models): shapes, sizes, errors, weights loading."""

from __future__ import annotations

import pytest
import torch
import torchvision
from omegaconf import OmegaConf

from noisylab.errors import ConfigError
from noisylab.models import MODELS, Classifier, build_model

# One representative (input_shape, settings) per registered model; small where allowed.
REPRESENTATIVE = {
    "mlp": ((40,), {}),
    "cnn9": ((1, 28, 28), {}),
    "cnn6": ((3, 32, 32), {}),
    "cnn8": ((3, 16, 16), {}),
    "lenet": ((3, 32, 32), {}),
    "cifar_quick": ((3, 32, 32), {}),
    "preact_resnet18": ((3, 16, 16), {}),
    "resnet32": ((3, 16, 16), {}),
    "wrn28_10": ((3, 16, 16), {"widen_factor": 2}),
    "resnet50": ((3, 32, 32), {}),
    "cnn1d": ((40,), {}),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_every_registered_model_has_a_representative_input():
    assert set(REPRESENTATIVE) == set(MODELS)


@pytest.mark.parametrize("name", sorted(REPRESENTATIVE))
def test_logits_and_features_shapes(name):
    shape, settings = REPRESENTATIVE[name]
    model = build_model(name, shape, 7, **settings)
    assert isinstance(model, Classifier)
    x = torch.randn(2, *shape)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()  # trainable end to end
    assert model.features(x).shape == (2, model.feature_dim)
    assert model.classifier.in_features == model.feature_dim
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.classifier(model.features(x)), model(x))


# resnet50 (minimum 1x1) is left out to save time; its 1-channel case is tested below.
@pytest.mark.parametrize("name", sorted(n for n in MODELS
                                        if MODELS[n].min_image_size is not None and n != "resnet50"))
def test_image_models_take_their_minimum_size_and_one_channel(name):
    size = MODELS[name].min_image_size
    settings = {"widen_factor": 1} if name == "wrn28_10" else {}
    model = build_model(name, (1, size, size), 3, **settings).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 1, size, size)).shape == (2, 3)
    if size > 1:
        with pytest.raises(ConfigError, match=f"at least {size}x{size} pixels"):
            build_model(name, (1, size - 1, size), 3, **settings)


def test_minimum_sizes():
    sizes = {n: b.min_image_size for n, b in MODELS.items()}
    assert sizes == {"mlp": None, "cnn9": 28, "cnn6": 8, "cnn8": 8, "lenet": 16, "cifar_quick": 8,
                     "preact_resnet18": 1, "resnet32": 1, "wrn28_10": 1, "resnet50": 1,
                     "cnn1d": None}


def test_cnn9_parameter_count_matches_the_layer_list():
    # Co-teaching model.py::CNN: (in, out) of the nine 3x3 convs (with bias, each + BN), head.
    channels, classes = 3, 10
    convs = [(channels, 128), (128, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512), (512, 256), (256, 128)]
    expected = sum(9 * cin * cout + cout + 2 * cout for cin, cout in convs) + 128 * classes + classes
    model = build_model("cnn9", (channels, 32, 32), classes)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.feature_dim == 128


def test_cnn8_parameter_count_matches_mslgs_layer_list():
    # MSLG model_getter.py::model_cifar10: six 3x3 convs (bias, each + BN), fc 196*4*4 -> 256 + BN1d, fc -> 10.
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 196), (196, 196)]
    expected = (sum(9 * cin * cout + cout + 2 * cout for cin, cout in convs)
                + 196 * 16 * 256 + 256 + 2 * 256 + 256 * 10 + 10)
    model = build_model("cnn8", (3, 32, 32), 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.feature_dim == 256


def test_cnn1d_matches_mnist1d_convbase():
    # greydanus/mnist1d ConvBase: convs (kernel, stride 2, padding 1) 1->25 k5, 25->25 k3, 25->25 k3;
    # length 40 -> (40+2-5)//2+1 = 19 -> (19+2-3)//2+1 = 10 -> (10+2-3)//2+1 = 5; Linear(125, 10).
    convs = [(1, 25, 5), (25, 25, 3), (25, 25, 3)]
    expected = sum(cin * cout * k + cout for cin, cout, k in convs) + 125 * 10 + 10
    assert expected == 5_210
    model = build_model("cnn1d", (40,), 10)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.feature_dim == 125
    assert [tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Conv1d)] == [
        (25, 1, 5), (25, 25, 3), (25, 25, 3)]
    x = torch.randn(4, 40)
    assert model(x).shape == (4, 10)
    # (B, L) is read as one channel: the same as giving (B, 1, L) to a (1, L) network.
    twin = build_model("cnn1d", (1, 40), 10)
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(twin(x.unsqueeze(1)), model(x))


def test_cnn1d_channels_length_and_setting():
    wide = build_model("cnn1d", (3, 50), 4, channels=8)  # 50 -> 24 -> 12 -> 6
    assert wide.feature_dim == 8 * 6
    assert wide(torch.randn(2, 3, 50)).shape == (2, 4)
    shortest = build_model("cnn1d", (3,), 2)
    assert shortest.feature_dim == 25 and shortest(torch.randn(2, 3)).shape == (2, 2)
    with pytest.raises(ConfigError, match="model cnn1d needs signals of at least 3 samples, but "
                                          "data gives 2; choose model=mlp"):
        build_model("cnn1d", (2,), 10)
    with pytest.raises(ConfigError, match="channels"):
        build_model("cnn1d", (40,), 10, channels=0)
    with pytest.raises(ConfigError, match="model cnn1d has no setting 'kernel'"):
        build_model("cnn1d", (40,), 10, kernel=5)


def test_cnn1d_rejects_images():
    with pytest.raises(ConfigError, match=r"model cnn1d needs 1-D signals given as \(length,\) or "
                                          r"\(channels, length\), but data gives samples of shape "
                                          r"1x8x8; choose an image model"):
        build_model("cnn1d", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="needs 1-D signals"):
        build_model("cnn1d", (3, 32, 32), 10)


def test_cnn9_dropout_is_off_in_eval_and_on_in_train():
    model = build_model("cnn9", (1, 28, 28), 10)
    x = torch.randn(2, 1, 28, 28)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    quirky = build_model("cnn9", (1, 28, 28), 10, quirk_eval_dropout=True).eval()
    with torch.no_grad():
        assert not torch.allclose(quirky(x), quirky(x))


def test_known_parameter_counts():
    def count(name, **settings):
        with torch.device("meta"):  # shapes only, no initialisation cost
            model = build_model(name, (3, 32, 32), 10, **settings)
        return sum(p.numel() for p in model.parameters())

    assert count("resnet32") == 464_154  # He et al.: "0.46M"
    assert abs(count("wrn28_10") - 36.5e6) < 0.05e6  # Zagoruyko & Komodakis: "36.5M"
    assert count("lenet") == 62_006


def test_wrn_variants_and_depth():
    for variant in ("zagoruyko", "ieg"):
        model = build_model("wrn28_10", (3, 16, 16), 5, depth=16, widen_factor=1, variant=variant)
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    with pytest.raises(ConfigError, match="6n\\+4"):
        build_model("wrn28_10", (3, 32, 32), 10, depth=27)
    with pytest.raises(ConfigError, match="variant"):
        build_model("wrn28_10", (3, 32, 32), 10, variant="resnext")


def test_mlp_settings_from_hydra():
    cfg = OmegaConf.create({"name": "mlp", "hidden": [64, 32], "dropout": 0.5})
    settings = {k: v for k, v in cfg.items() if k != "name"}
    model = build_model(cfg.name, (1, 8, 8), 10, **settings)
    assert model.feature_dim == 32
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    logistic = build_model("mlp", (40,), 4, hidden=[])
    assert logistic.feature_dim == 40
    assert sum(p.numel() for p in build_model("mlp", (1, 28, 28), 10).parameters()) == 784 * 256 + 256 + 2570


def test_unknown_model():
    with pytest.raises(ConfigError, match="Unknown model 'vgg16'; choose one of: .*cnn9"):
        build_model("vgg16", (3, 32, 32), 10)


def test_too_small_and_vector_inputs():
    with pytest.raises(ConfigError, match=r"model cnn9 needs images of at least 28x28 pixels, "
                                          r"but data gives 1x8x8; choose model=mlp"):
        build_model("cnn9", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="choose model=mlp"):
        build_model("lenet", (40,), 10)
    with pytest.raises(ConfigError, match="positive"):
        build_model("mlp", (0,), 10)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("mlp", (40,), 0)


def test_bad_settings():
    with pytest.raises(ConfigError, match="model cnn9 has no setting 'width'; it takes: dropout"):
        build_model("cnn9", (3, 32, 32), 10, width=3)
    with pytest.raises(ConfigError, match="no settings"):
        build_model("resnet32", (3, 32, 32), 10, dropout=0.1)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("mlp", (40,), 10, dropout=1.5)
    with pytest.raises(ConfigError, match="hidden"):
        build_model("mlp", (40,), 10, hidden=[0])
    with pytest.raises(ConfigError, match="init"):
        build_model("cifar_quick", (3, 32, 32), 10, init="xavier")


# ------------------------------------------------------------------------------ resnet50
@pytest.fixture(scope="module")
def imagenet_file(tmp_path_factory):
    """A state dict of a freshly built torchvision resnet50 (1000-way fc), as on disk."""
    torch.manual_seed(1)
    reference = torchvision.models.resnet50(weights=None)
    with torch.no_grad():  # make running stats distinguishable from a fresh model's
        reference.layer4[2].bn3.running_mean.uniform_()
    path = tmp_path_factory.mktemp("weights") / "resnet50-0676ba61.pth"
    torch.save(reference.state_dict(), path)
    return path, reference.state_dict()


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_resnet50_pretrained_without_file_raises(empty_hub):
    with pytest.raises(ConfigError, match="put torchvision's resnet50-0676ba61.pth into .*hub"):
        build_model("resnet50", (3, 224, 224), 14, pretrained=True)
    with pytest.raises(ConfigError, match="is not a file"):
        build_model("resnet50", (3, 224, 224), 14, weights_path=str(empty_hub / "missing.pth"))


def test_resnet50_loads_local_weights_and_replaces_fc(imagenet_file, empty_hub):
    path, reference = imagenet_file
    model = build_model("resnet50", (3, 32, 32), 14, pretrained=True, weights_path=str(path))
    body = model.body.state_dict()
    for key in ("conv1.weight", "layer4.2.bn3.running_mean", "layer2.0.downsample.0.weight"):
        torch.testing.assert_close(body[key], reference[key])
    assert not any(key.startswith("fc.") for key in body)
    assert model.classifier.out_features == 14 and model.feature_dim == 2048
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 14)


def test_resnet50_finds_weights_in_hub_cache(imagenet_file, empty_hub):
    path, reference = imagenet_file
    (empty_hub / "checkpoints").mkdir(parents=True)
    (empty_hub / "checkpoints" / path.name).symlink_to(path)
    model = build_model("resnet50", (1, 32, 32), 5, pretrained=True)
    grey = reference["conv1.weight"].sum(dim=1, keepdim=True)  # RGB filters summed for 1 channel
    torch.testing.assert_close(model.body.conv1.weight, grey)
    torch.testing.assert_close(model.body.layer1[0].conv1.weight, reference["layer1.0.conv1.weight"])
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_resnet50_rejects_a_foreign_file(tmp_path):
    bad = tmp_path / "lenet.pth"
    torch.save(build_model("lenet", (3, 32, 32), 10).state_dict(), bad)
    with pytest.raises(ConfigError, match="cannot use the weights"):
        build_model("resnet50", (3, 32, 32), 10, weights_path=str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="could not read"):
        build_model("resnet50", (3, 32, 32), 10, weights_path=str(junk))
