"""``quirks=official``: each official-code behaviour a method's docstring lists, on fixed
batches, and the switch recorded in results.json."""

import pytest
import torch
import torch.nn.functional as F

from noisylab.methods.coteaching import COTEACHING_QUIRKS, CoTeaching, cross_update_losses
from noisylab.methods.coteaching_plus import CoTeachingPlus, disagreement_cross_update
from noisylab.methods.jocor import JoCoR
from noisylab.train import build_datamodule, build_method, run
from tests.conftest import tiny_method

SCHEDULE = {"name": "coteaching", "tau": None, "num_gradual": 10, "exponent": 1, "form": "paper"}
LOGITS1 = torch.tensor([[2.0, 0.1, -1.0], [0.2, 0.9, 0.1], [-1.0, 0.5, 2.0], [1.0, 1.0, 1.0], [0.3, -0.2, 0.8]])
LOGITS2 = torch.tensor([[1.5, 0.2, 0.0], [1.2, 0.3, 0.1], [0.0, 0.5, 0.4], [0.1, 2.0, 1.0], [0.2, 0.1, 0.9]])
Y = torch.tensor([0, 1, 2, 0, 2])


def test_double_normalisation_divides_the_mean_again_by_the_number_kept():
    plain = cross_update_losses(LOGITS1, LOGITS2, Y, forget_rate=0.4)
    quirky = cross_update_losses(LOGITS1, LOGITS2, Y, forget_rate=0.4, double_normalisation=True)
    kept = len(plain[2])
    assert kept == 3  # floor(0.6 * 5)
    assert quirky[0].item() == pytest.approx(plain[0].item() / kept)
    assert quirky[1].item() == pytest.approx(plain[1].item() / kept)
    assert torch.equal(quirky[2], plain[2]) and torch.equal(quirky[3], plain[3])  # same selection


def test_softmax_input_feeds_probabilities_to_the_cross_entropy():
    loss1, _, kept_by_1, kept_by_2, disagree = disagreement_cross_update(LOGITS1, LOGITS2, Y, 0.0, softmax_input=True)
    probabilities = LOGITS1.softmax(1)[disagree]  # forget 0: every disagreeing sample kept
    assert disagree.tolist() == [1, 2, 3]  # argmax 1/0, 2/1, 0/1 differ; samples 0 and 4 agree
    expected = F.cross_entropy(probabilities, Y[disagree])  # CE(softmax(softmax(logits)))
    assert loss1.item() == pytest.approx(expected.item())
    plain, *_ = disagreement_cross_update(LOGITS1, LOGITS2, Y, 0.0)
    assert plain.item() == pytest.approx(F.cross_entropy(LOGITS1[disagree], Y[disagree]).item())
    assert loss1.item() != pytest.approx(plain.item())


def test_the_switch_selects_the_methods_listed_quirks_only():
    assert tiny_method(CoTeaching, quirks="official", schedule=SCHEDULE).quirks == frozenset(COTEACHING_QUIRKS)
    assert "softmax_input" in tiny_method(CoTeachingPlus, quirks="official", schedule=SCHEDULE).quirks
    assert "double_normalisation" not in tiny_method(JoCoR, quirks="official", schedule=SCHEDULE).quirks
    assert tiny_method(CoTeaching, schedule=SCHEDULE).quirks == frozenset()
    from noisylab.errors import ConfigError

    with pytest.raises(ConfigError, match="quirks must be one of paper, official"):
        tiny_method(CoTeaching, quirks="offical", schedule=SCHEDULE)


def test_a_list_of_quirk_names_turns_on_those_alone(make_cfg):
    only = tiny_method(CoTeachingPlus, quirks=["softmax_input"], schedule=SCHEDULE)
    assert only.quirks == frozenset({"softmax_input"})
    from noisylab.errors import ConfigError

    with pytest.raises(ConfigError, match="quirk rce_clamp is not one of CoTeachingPlus's official-code behaviours; "
                                          "its quirks are: skip_first_epoch, drop_last"):
        tiny_method(CoTeachingPlus, quirks=["softmax_input", "rce_clamp"], schedule=SCHEDULE)
    cfg = make_cfg("debug=fast", "data=digits", "method=coteaching_plus", "quirks=[double_normalisation,drop_last]")
    datamodule = build_datamodule(cfg)
    assert datamodule.data_cfg.drop_last  # the named data-side quirk reaches the loader
    assert build_method(cfg, datamodule).quirks == frozenset({"double_normalisation", "drop_last"})


def test_linspace_schedule_reads_the_official_array_at_the_codes_epoch():
    """With the first epoch skipped, epoch t is the code's epoch t: rate_schedule[t] =
    linspace(0, tau^c, Tk)[t], then tau (tau = 0.5, Tk = 10)."""
    official = tiny_method(CoTeaching, quirks="official", schedule=SCHEDULE, max_epochs=200)
    expected = [0.5 * t / 9 for t in range(10)] + [0.5] * 5
    assert [official.forget_rate(t) for t in range(15)] == pytest.approx(expected)
    paper = tiny_method(CoTeaching, schedule=SCHEDULE, max_epochs=200)
    assert [paper.forget_rate(t) for t in range(12)] == pytest.approx([0.5 * min(t / 10, 1) for t in range(12)])


def test_dropout_at_eval_keeps_dropout_on_in_evaluation_only_under_the_switch():
    from noisylab.methods.ce import CrossEntropy
    from noisylab.methods.contract import RunFacts

    facts = RunFacts(num_classes=3, input_shape=(8,), train_size=8, max_epochs=2)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    for quirks, noisy in (("paper", False), ("official", True)):
        method = CrossEntropy(facts=facts, model={"name": "mlp", "hidden": [64], "dropout": 0.5},
                              protocol={"optimizer": {"name": "adam", "lr": 1e-3}}, quirks=quirks)
        method.official_quirks = ("dropout_at_eval",)  # CE lists none; the mechanism is the base's
        method.quirks = frozenset(method.official_quirks if quirks == "official" else ())
        method.eval()
        with method.evaluation_mode():
            first, second = method.net(x), method.net(x)
        assert (not torch.equal(first, second)) == noisy
        assert not any(m.training for m in method.modules())  # eval mode restored


def test_skip_first_epoch_and_drop_last_in_a_run(make_cfg):
    overrides = ["debug=fast", "data=digits", "method=coteaching", "protocol.epochs=1"]
    cfg = make_cfg(*overrides, "quirks=official")
    datamodule = build_datamodule(cfg)
    datamodule.prepare()
    loader = datamodule.train_dataloader()
    assert len(loader) == datamodule.train_size // 128  # the last partial batch is dropped
    assert all(len(batch["y"]) == 128 for batch in loader)
    import pytorch_lightning as pl

    pl.seed_everything(0, workers=True, verbose=False)
    initial = build_method(cfg, build_datamodule(cfg)).state_dict()
    results = run(make_cfg(*overrides, "quirks=official"))
    assert (results["quirks"], results["quirks_applied"]) == ("official", sorted(COTEACHING_QUIRKS))
    trained = torch.load(f"{results['run_dir']}/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    for name, tensor in initial.items():
        if name.startswith("nets."):
            assert torch.equal(trained[name], tensor), name  # epoch 0 evaluated, never trained
    paper = run(make_cfg(*overrides))
    assert paper["quirks_applied"] == []
    trained = torch.load(f"{paper['run_dir']}/checkpoints/last.ckpt", weights_only=False)["state_dict"]
    assert any(not torch.equal(trained[n], t) for n, t in initial.items() if n.startswith("nets."))
