"""npo.neural.mg_train: training the multilevel NPO (``npo-bench train --arch mg``)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from npo.cli import main  # noqa: E402
from npo.neural import mg_train  # noqa: E402
from npo.neural.checkpoint import MG_FORMAT, from_checkpoint  # noqa: E402


def test_training_reduces_the_loss_and_writes_a_safe_checkpoint(tmp_path):
    out = tmp_path / "tiny.pt"
    cfg = mg_train.MGTrainConfig(n=(32,), fields=("constant", "binary"), num_coef=2, steps=60,
                           batch_size=2, num_vectors=4, threads=1, out=str(out), progress=False)
    model, meta = mg_train.train_mg(cfg)
    hist = [h["loss"] for h in meta["history"]]
    assert hist[-1] < hist[0] and all(np.isfinite(hist))
    assert meta["train_s"] > 0 and meta["command"].startswith("npo-bench train --arch mg")
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["format"] == MG_FORMAT and side["n"] == [32]
    back, meta2 = from_checkpoint(out, expect=MG_FORMAT)
    assert meta2["train_s"] == meta["train_s"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    with pytest.raises(ValueError, match="right kind"):
        from_checkpoint(out)  # the seed's NPO needs a NAMG checkpoint


def test_config_is_checked_before_training():
    for bad, match in (({"n": (16,)}, "at least 32"), ({"fields": ("plaid",)}, "unknown"),
                       ({"contrast": (10.0, 1.0)}, "LO <= HI"), ({"steps": 0}, "--steps")):
        with pytest.raises(ValueError, match=match):
            mg_train.MGTrainConfig(**bad).validate()



def test_cli_trains_it_and_refuses_the_other_architectures_options(tmp_path, capsys):
    out = tmp_path / "m.pt"
    assert main(["train", "--arch", "mg", "--heads", "2", "--out", str(out)]) == 2
    assert "--heads applies to --arch namg only" in capsys.readouterr().err
    assert main(["train", "--steps", "5", "--out", str(out)]) == 2
    assert "--steps applies to --arch mg only" in capsys.readouterr().err
    assert main(["train", "--arch", "mg", "--n", "32", "--field", "constant", "--steps", "2",
                 "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["command"].startswith("npo-bench train --arch mg --n 32 --field constant")
    assert not list(tmp_path.glob("*.tmp*"))
