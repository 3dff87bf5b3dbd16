"""timm adapter: real timm models (random-init or weights written by the test), nothing downloads."""

from __future__ import annotations

import hashlib
import json
import pickle

import huggingface_hub.constants
import numpy as np
import pydantic
import pytest
import safetensors.torch
import timm
import torch
from hub_helpers import add_to_hub_cache, cosine_rows, encode, random_rgb
from PIL import Image

from ray_logme.errors import (
    CheckpointError,
    ModalityMismatchError,
    ModelLoadError,
    TaskError,
    UnknownModelError,
)
from ray_logme.hub import ModelSpec, ensure_modality, load_extractor, load_preprocessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two shared cores


def timm_spec(name: str, **fields) -> ModelSpec:
    return ModelSpec(hub="timm", name=name, **{"pretrained": False, **fields})


def reference_pre_logits(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """timm's documented pre-logits path on a full (with classifier) model: the ground truth."""
    model.eval()
    with torch.no_grad():
        tokens = model.forward_features(torch.from_numpy(pixels))
        return model.forward_head(tokens, pre_logits=True).numpy()


# ----------------------------------------------------------------------------------- ModelSpec


def test_model_spec_rejects_unknown_keys_and_wrong_hub_options():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        ModelSpec.model_validate({"hub": "timm", "name": "resnet18", "pretrainde": False})
    with pytest.raises(pydantic.ValidationError, match="pooling 'last' is not available for timm"):
        ModelSpec(hub="timm", name="resnet18", pooling="last")
    with pytest.raises(pydantic.ValidationError, match="max_length applies to text"):
        ModelSpec(hub="timm", name="resnet18", max_length=32)
    with pytest.raises(pydantic.ValidationError, match="timm_kwargs may not set"):
        ModelSpec(hub="timm", name="resnet18", timm_kwargs={"num_classes": 10})
    with pytest.raises(pydantic.ValidationError, match="pretrained: false contradicts"):
        ModelSpec(hub="timm", name="resnet18", pretrained=False, checkpoint_path="/w.safetensors")
    with pytest.raises(pydantic.ValidationError, match="timm_kwargs applies to hub: timm"):
        ModelSpec(hub="hf", name="org/model", timm_kwargs={"img_size": 64})
    with pytest.raises(pydantic.ValidationError, match="hub"):
        ModelSpec(hub="torchhub", name="resnet18")


def test_model_spec_is_frozen_hashable_and_has_display_names():
    spec = ModelSpec(hub="timm", name=" resnet18 ", pretrained=False, tags={"family": "resnet"})
    assert spec.name == "resnet18"
    with pytest.raises(pydantic.ValidationError):
        spec.name = "resnet34"
    same = ModelSpec.model_validate(json.loads(spec.model_dump_json()))
    assert same == spec and hash(same) == hash(spec) and len({spec, same}) == 1
    assert spec.display_name == "resnet18 [random-init]"
    assert (
        ModelSpec(hub="hf", name="org/m", revision="v2", pooling="cls").display_name
        == "org/m@v2 [cls]"
    )
    assert (
        ModelSpec(hub="timm", name="resnet50", checkpoint_path="/ckpt/ft.safetensors").display_name
        == "resnet50 [ckpt:ckpt/ft.safetensors]"  # the folder tells two fine-tunes apart
    )


# ------------------------------------------------------------------------------ preprocessing


def test_preprocessing_follows_each_models_own_config():
    inception = load_preprocessor(ModelSpec(hub="timm", name="inception_v3"))
    assert inception([random_rgb(0)])["pixel_values"].shape == (
        1,
        3,
        299,
        299,
    )  # a 299px model gets 299px inputs
    assert inception.data_config["mean"] == (0.5, 0.5, 0.5)
    dinov2 = load_preprocessor(ModelSpec(hub="timm", name="vit_small_patch14_dinov2.lvd142m"))
    assert dinov2.input_size == (3, 518, 518)
    vit = load_preprocessor(timm_spec("vit_tiny_patch16_224", timm_kwargs={"img_size": 96}))
    assert vit.input_size == (3, 96, 96)


def test_preprocessing_matches_an_independent_resize_crop_normalize():
    """resnet18.a1_in1k: bicubic resize of the short side to 224/0.95, centre crop, ImageNet stats."""
    preprocessor = load_preprocessor(ModelSpec(hub="timm", name="resnet18.a1_in1k"))
    cfg = preprocessor.data_config
    assert cfg["crop_pct"] == 0.95 and cfg["interpolation"] == "bicubic"
    image = Image.fromarray(random_rgb(1, height=120, width=90))
    size = cfg["input_size"][1]
    short = int(size / cfg["crop_pct"])  # 235
    resized = image.resize((short, int(short * 120 / 90)), Image.Resampling.BICUBIC)
    top = round((resized.height - size) / 2)
    left = round((resized.width - size) / 2)
    crop = np.asarray(resized, dtype=np.float64)[top : top + size, left : left + size] / 255.0
    expected = ((crop - cfg["mean"]) / cfg["std"]).transpose(2, 0, 1)
    pixels = preprocessor([image])["pixel_values"]
    assert pixels.dtype == np.float32
    np.testing.assert_allclose(pixels[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    "name",
    ["resnet18.a1_in1k", "vit_tiny_patch16_224.augreg_in21k"],  # ImageNet stats; 0.5 stats
)
def test_uint8_pixels_normalised_by_the_extractor_equal_the_float_path(name):
    """The extract stage ships uint8 pixels and normalises in the actor: same features."""
    extractor = load_extractor(ModelSpec(hub="timm", name=name, pretrained=False), device="cpu")
    images = [random_rgb(i, height=60 + 7 * i, width=90 - 5 * i) for i in range(3)]
    float_pixels = extractor.preprocess(images)["pixel_values"]
    uint8_pixels = extractor.preprocess.uint8_pixels(images)["pixel_values_uint8"]
    assert uint8_pixels.dtype == np.uint8 and uint8_pixels.shape == float_pixels.shape
    assert uint8_pixels.nbytes * 4 == float_pixels.nbytes
    cfg = extractor.preprocess.data_config
    independent = (uint8_pixels / 255.0 - np.reshape(cfg["mean"], (3, 1, 1))) / np.reshape(
        cfg["std"], (3, 1, 1)
    )
    np.testing.assert_allclose(float_pixels, independent, atol=1e-5)
    np.testing.assert_array_equal(extractor.normalize_uint8(uint8_pixels).numpy(), float_pixels)
    np.testing.assert_array_equal(
        extractor({"pixel_values_uint8": uint8_pixels}), extractor({"pixel_values": float_pixels})
    )
    with pytest.raises(ValueError, match="must be uint8"):
        extractor({"pixel_values_uint8": float_pixels})


def test_every_image_input_form_gives_the_same_pixels():
    preprocessor = load_preprocessor(timm_spec("mobilenetv3_small_050"))
    rgb = random_rgb(2)
    grey = rgb[:, :, 0]
    forms = [
        rgb,
        encode(rgb, "PNG"),
        Image.fromarray(rgb),
        np.dstack([rgb, np.full(grey.shape, 255, np.uint8)]),
    ]
    pixels = preprocessor(forms)["pixel_values"]
    for index in range(1, len(forms)):
        np.testing.assert_array_equal(pixels[index], pixels[0])
    grey_forms = [
        grey,
        grey[:, :, None],
        np.repeat(grey[:, :, None], 3, axis=2),
        Image.fromarray(grey),
    ]
    grey_pixels = preprocessor(grey_forms)["pixel_values"]
    for index in range(1, len(grey_forms)):
        np.testing.assert_array_equal(grey_pixels[index], grey_pixels[0])
    jpeg = preprocessor([encode(rgb, "JPEG")])["pixel_values"][0]
    assert jpeg.shape == pixels[0].shape  # lossy, but the same picture:
    assert np.corrcoef(jpeg.ravel(), pixels[0].ravel())[0, 1] > 0.95


def test_image_files_and_bad_inputs(tmp_path):
    preprocessor = load_preprocessor(timm_spec("mobilenetv3_small_050"))
    rgb = random_rgb(3)
    path = tmp_path / "cat.png"
    path.write_bytes(encode(rgb, "PNG"))
    from_file = preprocessor([str(path), path])["pixel_values"]
    np.testing.assert_array_equal(from_file[0], preprocessor([rgb])["pixel_values"][0])
    np.testing.assert_array_equal(from_file[0], from_file[1])
    with pytest.raises(TaskError, match="image input 2: cannot decode image bytes"):
        preprocessor([rgb, encode(rgb, "PNG"), b"\x89PNG not really"])
    with pytest.raises(TaskError, match="image input 0: numpy images must be uint8"):
        preprocessor([rgb.astype(np.float32)])
    with pytest.raises(TaskError, match=r"image input 1: .* is not an existing local file"):
        preprocessor([rgb, str(tmp_path / "missing.png")])
    with pytest.raises(TaskError, match="image input 0: unsupported type int"):
        preprocessor([7])


def test_preprocessor_is_picklable_and_stays_equal():
    preprocessor = load_preprocessor(timm_spec("convnext_atto"))
    images = [random_rgb(4), random_rgb(5)]
    expected = preprocessor(images)["pixel_values"]
    clone = pickle.loads(pickle.dumps(preprocessor))
    np.testing.assert_array_equal(clone(images)["pixel_values"], expected)
    assert clone.modality == "image"


# --------------------------------------------------------------------------------- extractors


@pytest.mark.parametrize(
    ("name", "feature_dim"),
    [  # BatchNorm CNN, LayerNorm ConvNeXt, ViT (resnet18 adds 2.5 s and no new code path)
        ("convnext_atto", 320),
        ("vit_tiny_patch16_224", 192),
        ("mobilenetv3_small_050", 1024),
    ],
)
def test_random_init_features_are_timm_pre_logits_and_deterministic(name, feature_dim):
    extractor = load_extractor(timm_spec(name), device="cpu")
    images = [random_rgb(10), random_rgb(11, height=24, width=70)]
    batch = extractor.preprocess(images)
    features = extractor(batch)
    assert features.shape == (2, feature_dim) and features.dtype == np.float32
    assert np.isfinite(features).all() and features.std() > 0
    # Ground truth: the same weights in a full timm model (with classifier), pre-logits path.
    full = timm.create_model(name, pretrained=False)
    missing, unexpected = full.load_state_dict(extractor.model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(full.pretrained_cfg["classifier"]) for k in missing)
    np.testing.assert_allclose(
        features, reference_pre_logits(full, batch["pixel_values"]), rtol=1e-5, atol=1e-5
    )
    # A second load of the same spec: same weights (seeded init), same features, same fingerprint.
    again = load_extractor(timm_spec(name), device="cpu")
    np.testing.assert_array_equal(again.extract(images), features)
    assert again.metadata.fingerprint == extractor.metadata.fingerprint
    meta = extractor.metadata
    assert (meta.feature_dim, meta.modality, meta.revision, meta.dtype) == (
        feature_dim,
        "image",
        "random-init",
        "float32",
    )
    assert meta.num_params == sum(p.numel() for p in full.parameters()) - sum(
        p.numel()
        for n, p in full.named_parameters()
        if n.startswith(full.pretrained_cfg["classifier"] + ".")
    )
    assert json.loads(json.dumps(meta.to_dict()))["input_size"] == [3, 224, 224]


def test_init_seed_changes_weights_features_and_fingerprint():
    first = load_extractor(timm_spec("mobilenetv3_small_050"), device="cpu")
    other = load_extractor(timm_spec("mobilenetv3_small_050", init_seed=1), device="cpu")
    images = [random_rgb(12)]
    assert not np.allclose(first.extract(images), other.extract(images))
    assert first.metadata.fingerprint != other.metadata.fingerprint
    pooled = load_extractor(timm_spec("mobilenetv3_small_050", pooling="max"), device="cpu")
    assert pooled.metadata.fingerprint != first.metadata.fingerprint


@pytest.mark.parametrize(
    ("name", "timm_kwargs"),
    [("mobilenetv3_small_050", {}), ("vit_tiny_patch16_224", {"img_size": 64})],
)
def test_batch_of_one_equals_batch_of_32(name, timm_kwargs):
    extractor = load_extractor(timm_spec(name, timm_kwargs=timm_kwargs), device="cpu")
    images = [random_rgb(seed, height=20 + seed, width=30) for seed in range(32)]
    together = extractor.extract(images, batch_size=32)
    one_by_one = np.concatenate([extractor.extract([image], batch_size=1) for image in images])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-4, atol=1e-5)


def test_vit_pooling_options_match_token_arithmetic():
    images = [random_rgb(20), random_rgb(21)]
    small = {"img_size": 64}  # 4 x 4 patches: same code path, a tenth of the work
    default = load_extractor(timm_spec("vit_tiny_patch16_224", timm_kwargs=small), device="cpu")
    pixels = torch.from_numpy(default.preprocess(images)["pixel_values"])
    with torch.no_grad():
        tokens = default.model.forward_features(pixels).numpy()  # [n, 1 + 16, 192], CLS first
    assert tokens.shape == (2, 17, 192)
    expected = {
        "cls": tokens[:, 0],
        "mean": tokens[:, 1:].mean(axis=1),
        "max": tokens[:, 1:].max(axis=1),
    }
    for pooling, want in expected.items():
        extractor = load_extractor(
            timm_spec("vit_tiny_patch16_224", pooling=pooling, timm_kwargs=small), device="cpu"
        )
        np.testing.assert_allclose(extractor.extract(images), want, rtol=1e-5, atol=1e-5)
        assert extractor.metadata.pooling == pooling
    assert default.metadata.pooling == "default:token"
    np.testing.assert_allclose(default.extract(images), tokens[:, 0], rtol=1e-5, atol=1e-5)


def test_convnet_has_no_cls_token():
    with pytest.raises(ModelLoadError, match="no CLS token"):
        load_extractor(timm_spec("convnext_atto", pooling="cls"), device="cpu")


def test_img_size_kwarg_reaches_model_and_preprocessing():
    extractor = load_extractor(
        timm_spec("vit_tiny_patch16_224", timm_kwargs={"img_size": 64}), device="cpu"
    )
    assert extractor.metadata.input_size == (3, 64, 64)
    assert extractor.extract([random_rgb(30)]).shape == (1, 192)


# ------------------------------------------------------------------------------------ weights


@pytest.fixture(scope="module")
def trained_mobilenet():
    """A full mobilenetv3_small_050 with non-default weights (what a fine-tune would save)."""
    torch.manual_seed(1234)
    model = timm.create_model("mobilenetv3_small_050", pretrained=False)
    with torch.no_grad():
        for buffer_name, buffer in model.named_buffers():
            if buffer_name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
    return model.eval()


def test_checkpoint_path_safetensors_loads_those_weights(tmp_path, trained_mobilenet):
    path = tmp_path / "ft.safetensors"
    safetensors.torch.save_file(trained_mobilenet.state_dict(), str(path))
    spec = ModelSpec(hub="timm", name="mobilenetv3_small_050", checkpoint_path=str(path))
    extractor = load_extractor(spec, device="cpu")
    batch = extractor.preprocess([random_rgb(40), random_rgb(41)])
    np.testing.assert_allclose(
        extractor(batch),
        reference_pre_logits(trained_mobilenet, batch["pixel_values"]),
        rtol=1e-5,
        atol=1e-5,
    )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert extractor.metadata.revision == sha == extractor.metadata.weights_sha256
    random_init = load_extractor(timm_spec("mobilenetv3_small_050"), device="cpu")
    assert random_init.metadata.fingerprint != extractor.metadata.fingerprint
    # Other weights in the same file name: new content key.
    state = {
        k: v + 0.01 if v.is_floating_point() else v
        for k, v in trained_mobilenet.state_dict().items()
    }
    safetensors.torch.save_file(state, str(path))
    assert load_extractor(spec, device="cpu").metadata.fingerprint != extractor.metadata.fingerprint


def test_pickle_checkpoints_need_allow_pickle_and_load_weights_only(tmp_path, trained_mobilenet):
    path = tmp_path / "ft.pth"
    torch.save({"state_dict": trained_mobilenet.state_dict(), "epoch": 3}, path)
    spec = ModelSpec(hub="timm", name="mobilenetv3_small_050", checkpoint_path=str(path))
    with pytest.raises(
        CheckpointError, match=r"'mobilenetv3_small_050'.*ft\.pth.*pickle.*allow_pickle: true"
    ):
        load_extractor(spec, device="cpu")
    allowed = load_extractor(spec.model_copy(update={"allow_pickle": True}), device="cpu")
    batch = allowed.preprocess([random_rgb(42)])
    np.testing.assert_allclose(
        allowed(batch),
        reference_pre_logits(trained_mobilenet, batch["pixel_values"]),
        rtol=1e-5,
        atol=1e-5,
    )

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(_RunsCode(str(marker)), protocol=2))
    evil_spec = ModelSpec(
        hub="timm", name="mobilenetv3_small_050", checkpoint_path=str(evil), allow_pickle=True
    )
    with pytest.raises(CheckpointError, match=r"evil.pth"):
        load_extractor(evil_spec, device="cpu")
    assert not marker.exists()


class _RunsCode:
    """Unpickling this creates a file: what a malicious checkpoint would do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_missing_corrupt_and_mismatched_checkpoints(tmp_path, trained_mobilenet):
    def spec_for(path):
        return ModelSpec(hub="timm", name="mobilenetv3_small_050", checkpoint_path=str(path))

    with pytest.raises(
        CheckpointError, match=r"mobilenetv3_small_050.*nowhere\.safetensors.*does not exist"
    ):
        load_extractor(spec_for(tmp_path / "nowhere.safetensors"), device="cpu")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match=r"corrupt\.safetensors"):
        load_extractor(spec_for(corrupt), device="cpu")
    truncated = tmp_path / "truncated.safetensors"
    safetensors.torch.save_file(trained_mobilenet.state_dict(), str(truncated))
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"truncated\.safetensors"):
        load_extractor(spec_for(truncated), device="cpu")
    other_arch = tmp_path / "resnet.safetensors"
    safetensors.torch.save_file(
        timm.create_model("resnet10t", pretrained=False).state_dict(), str(other_arch)
    )
    with pytest.raises(CheckpointError, match=r"resnet\.safetensors.*mobilenetv3_small_050"):
        load_extractor(spec_for(other_arch), device="cpu")


def test_local_dir_written_by_save_for_hf(tmp_path, trained_mobilenet):
    folder = tmp_path / "my-mobilenet"
    timm.models.save_for_hf(
        trained_mobilenet, str(folder), safe_serialization="both"
    )  # .bin ignored
    for name in (str(folder), f"local-dir:{folder}"):
        extractor = load_extractor(ModelSpec(hub="timm", name=name), device="cpu")
        batch = extractor.preprocess([random_rgb(43)])
        np.testing.assert_allclose(
            extractor(batch),
            reference_pre_logits(trained_mobilenet, batch["pixel_values"]),
            rtol=1e-5,
            atol=1e-5,
        )
        assert extractor.metadata.architecture == "mobilenetv3_small_050"
    pickle_only = tmp_path / "pickle-only"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_bytes((folder / "config.json").read_bytes())
    torch.save(trained_mobilenet.state_dict(), pickle_only / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*allow_pickle"):
        load_extractor(ModelSpec(hub="timm", name=str(pickle_only)), device="cpu")


def test_pkg_names_load_a_folder_shipped_in_an_installed_package(
    tmp_path, monkeypatch, trained_mobilenet
):
    """``pkg:<package>/<dir>`` and ``local-dir:pkg:...`` find the folder wherever the package is."""
    package = tmp_path / "site" / "zoo_pkg_for_test"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    timm.models.save_for_hf(
        trained_mobilenet, str(package / "models" / "mine"), safe_serialization=True
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    images = [random_rgb(44), random_rgb(45)]
    expected = None
    for name in ("pkg:zoo_pkg_for_test/models/mine", "local-dir:pkg:zoo_pkg_for_test/models/mine"):
        extractor = load_extractor(ModelSpec(hub="timm", name=name), device="cpu")
        batch = extractor.preprocess(images)
        expected = reference_pre_logits(trained_mobilenet, batch["pixel_values"])
        np.testing.assert_allclose(extractor(batch), expected, rtol=1e-5, atol=1e-5)
        assert (
            extractor.metadata.weights_sha256
            == hashlib.sha256(
                (package / "models" / "mine" / "model.safetensors").read_bytes()
            ).hexdigest()
        )
    random_init = load_extractor(timm_spec("pkg:zoo_pkg_for_test/models/mine"), device="cpu")
    assert random_init.metadata.architecture == "mobilenetv3_small_050"
    assert not np.allclose(random_init(batch), expected, atol=1e-3)
    with pytest.raises(CheckpointError, match=r"pkg:zoo_pkg_for_test/models/nope.*config.json"):
        load_preprocessor(ModelSpec(hub="timm", name="pkg:zoo_pkg_for_test/models/nope"))
    with pytest.raises(CheckpointError, match=r"package 'no_such_pkg_xyz' is not installed"):
        load_preprocessor(ModelSpec(hub="timm", name="pkg:no_such_pkg_xyz/models/mine"))

    # The feature store's content key hashes that folder for every spelling of the name.
    from ray_logme.hub.identity import weight_identity

    identities = {
        weight_identity(ModelSpec(hub="timm", name=name))
        for name in (
            "pkg:zoo_pkg_for_test/models/mine",
            "local-dir:pkg:zoo_pkg_for_test/models/mine",
            str(package / "models" / "mine"),
        )
    }
    assert len(identities) == 1 and None not in identities


@pytest.mark.parametrize("member", ["shapes", "shapes-brief", "textures", "digits0-4"])
def test_shipped_default_zoo_member_loads_its_own_weights(member):
    """The zoo the default config ranks is package data, and loads as the weights it ships."""
    from importlib import resources

    from safetensors.torch import load_file

    folder = resources.files("ray_logme") / "zoo" / member
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet10t"
    model_args = {**config["model_args"], "num_classes": 0}
    reference = timm.create_model("resnet10t", pretrained=False, **model_args)
    reference.load_state_dict(load_file(str(folder / "model.safetensors")))
    extractor = load_extractor(
        ModelSpec(hub="timm", name=f"pkg:ray_logme/zoo/{member}"), device="cpu"
    )
    assert extractor.metadata.input_size == (3, 32, 32)
    batch = extractor.preprocess([random_rgb(46, 32, 32), random_rgb(47, 32, 32)])
    # The data config is the training one: mean 0.5, std 0.25, no resize of a 32x32 image.
    np.testing.assert_allclose(
        batch["pixel_values"][0],
        (random_rgb(46, 32, 32).transpose(2, 0, 1) / 255.0 - 0.5) / 0.25,
        atol=1e-5,
    )
    features = extractor(batch)
    assert features.shape == (2, extractor.metadata.feature_dim)
    np.testing.assert_allclose(
        features, reference_pre_logits(reference, batch["pixel_values"]), rtol=1e-5, atol=1e-5
    )
    assert (folder / "model.safetensors").stat().st_size < 1_000_000


def test_pretrained_tag_resolves_through_the_hub_cache_offline(
    tmp_path, monkeypatch, trained_mobilenet
):
    """A registry name with a tag loads timm/<name> from the Hugging Face cache, pinned to its commit."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file(trained_mobilenet.state_dict(), str(weights))
    cache = tmp_path / "hub"
    add_to_hub_cache(
        cache, "timm/mobilenetv3_small_050.lamb_in1k", commit, {"model.safetensors": weights}
    )
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    extractor = load_extractor(
        ModelSpec(hub="timm", name="mobilenetv3_small_050.lamb_in1k"), device="cpu"
    )
    assert extractor.metadata.revision == commit
    assert extractor.metadata.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    batch = extractor.preprocess([random_rgb(44)])
    np.testing.assert_allclose(
        extractor(batch),
        reference_pre_logits(trained_mobilenet, batch["pixel_values"]),
        rtol=1e-5,
        atol=1e-5,
    )
    # The bare architecture name means timm's default tag (lamb_in1k here): same weights.
    bare = load_extractor(ModelSpec(hub="timm", name="mobilenetv3_small_050"), device="cpu")
    assert bare.metadata.fingerprint == extractor.metadata.fingerprint
    with pytest.raises(CheckpointError, match=r"not in the Hugging Face cache.*offline"):
        load_extractor(ModelSpec(hub="timm", name="resnet18.a1_in1k"), device="cpu")


# ---------------------------------------------------------------------------------- bad input


def test_unknown_names_suggest_the_closest():
    with pytest.raises(UnknownModelError, match=r"'resnet18x'.*closest names: \['resnet18'"):
        load_preprocessor(ModelSpec(hub="timm", name="resnet18x"))
    with pytest.raises(UnknownModelError, match=r"convnext_tiny"):
        load_extractor(timm_spec("convnxt_tiny"), device="cpu")
    with pytest.raises(UnknownModelError, match=r"no pretrained tag 'bogus'.*resnet18\.a1_in1k"):
        load_preprocessor(ModelSpec(hub="timm", name="resnet18.bogus"))
    with pytest.raises(UnknownModelError, match="hf-hub:someone/model"):
        load_preprocessor(ModelSpec(hub="timm", name="someone/model"))
    with pytest.raises(CheckpointError, match="directory not found"):
        load_preprocessor(ModelSpec(hub="timm", name="./no/such/dir"))
    with pytest.raises(ModelLoadError, match="timm_kwargs"):
        load_extractor(timm_spec("resnet18", timm_kwargs={"no_such_option": 1}), device="cpu")


def test_modality_check_names_model_and_task():
    extractor = load_extractor(timm_spec("mobilenetv3_small_050"), device="cpu")
    ensure_modality(extractor, "image", "flowers")
    ensure_modality(extractor.metadata, "image", "flowers")
    with pytest.raises(
        ModalityMismatchError, match=r"'mobilenetv3_small_050 \[random-init\]'.*'imdb'"
    ):
        ensure_modality(extractor, "text", "imdb")
    with pytest.raises(ValueError, match="modality must be one of"):
        ensure_modality(extractor, "audio", "speech")


# --------------------------------------------------------------------------- GPU (skipped on CPU)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("name", ["convnext_atto", "vit_tiny_patch16_224", "resnet18"])
def test_cuda_autocast_channels_last_matches_cpu(name):
    spec = timm_spec(name)
    gpu = load_extractor(spec, device="auto")
    cpu = load_extractor(spec, device="cpu")
    want = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert gpu.device.type == "cuda" and gpu.metadata.dtype == want
    assert gpu.metadata.fingerprint == cpu.metadata.fingerprint  # device-independent content key
    conv = next(p for p in gpu.model.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = [random_rgb(seed) for seed in range(8)]
    on_gpu, on_cpu = gpu.extract(images), cpu.extract(images)
    assert on_gpu.dtype == np.float32 and np.isfinite(on_gpu).all()
    assert cosine_rows(on_gpu, on_cpu).min() > 0.99
    one_by_one = np.concatenate([gpu.extract([image]) for image in images])
    assert cosine_rows(one_by_one, on_gpu).min() > 0.995
    exact = load_extractor(spec.model_copy(update={"dtype": "float32"}), device="cuda")
    assert exact.metadata.dtype == "float32"
    assert cosine_rows(exact.extract(images), on_cpu).min() > 0.9999
