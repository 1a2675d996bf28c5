import math

import numpy as np
import pytest
import torch

from headstart import TransferClassifier
from headstart.backbones import get_backbone
from headstart.errors import HeadstartError
from headstart.strategies.finetune import FineTuneConfig, FineTuneNet, finetune, set_train_mode, trainable_blocks
from headstart.strategies.linear import fit_linear_head
from headstart.training import EarlyStopping, param_groups, warmup_cosine
from tests.conftest import CLASS_COLOURS, colour_image

SPEC = get_backbone("tiny")  # blocks features.0-2, 32-wide codes


def colour_set(per_class: int, seed: int):
    images, labels = [], []
    for label, colour in enumerate(CLASS_COLOURS.values()):
        images += [colour_image(colour, seed=seed * 1000 + label * 100 + i) for i in range(per_class)]
        labels += [label] * per_class
    return images, np.array(labels)


def test_warmup_then_cosine():
    factors = [warmup_cosine(step, total_steps=100, warmup_steps=10) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # never rises after warm-up
    assert factors[-1] == pytest.approx(0.01, abs=0.01)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_discriminative_rates_and_no_decay_on_biases_and_norms():
    net = FineTuneNet(SPEC, 3)
    groups = {g["name"]: g for g in param_groups(net, SPEC, head_lr=1e-2, lr_mult=10, weight_decay=0.05)}
    assert groups["head"]["lr"] == 1e-2 and groups["head"]["weight_decay"] == 0.05
    assert groups["features.0"]["lr"] == pytest.approx(1e-3)
    assert groups["head (no decay)"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in groups["features.1 (no decay)"]["params"])
    everything = sum(p.numel() for g in groups.values() for p in g["params"])
    assert everything == sum(p.numel() for p in net.parameters())


def test_layer_decay_falls_towards_the_input():
    net = FineTuneNet(SPEC, 3)
    lrs = {g["name"]: g["lr"] for g in param_groups(net, SPEC, head_lr=1.0, layer_decay=0.5)}
    assert [lrs[f"features.{i}"] for i in range(3)] == [0.125, 0.25, 0.5]


@pytest.mark.parametrize(
    "strategy, epoch, expected",
    [("finetune_all", 0, {0, 1, 2}), ("finetune_top", 0, {1, 2}), ("gradual", 0, set()), ("gradual", 1, {0, 1, 2})],
)
def test_which_blocks_train(strategy, epoch, expected):
    config = FineTuneConfig(strategy=strategy, top_blocks=2, freeze_epochs=1)
    assert trainable_blocks(SPEC, config, epoch) == expected


def test_frozen_batchnorm_keeps_imagenet_statistics_while_its_affine_parameters_learn():
    net = FineTuneNet(SPEC, 3)
    set_train_mode(net, SPEC, FineTuneConfig(strategy="finetune_all"), 0)  # batchnorm="frozen" by default
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    net(torch.randn(4, 3, 32, 32))
    assert all(not m.training and m.weight.requires_grad for m in norms)
    assert all(torch.equal(m.running_mean, b) for m, b in zip(norms, before))
    assert net.training and net.dropout.training  # only the normalisation is in inference mode


def test_frozen_batchnorm_keeps_its_statistics():
    net = FineTuneNet(SPEC, 3)
    config = FineTuneConfig(strategy="finetune_top", top_blocks=1, batchnorm="batch")
    set_train_mode(net, SPEC, config, 0)
    frozen_bn = net.backbone.model.features[0][1]
    trained_bn = net.backbone.model.features[2][1]
    before = frozen_bn.running_mean.clone()
    net(torch.randn(4, 3, 32, 32))
    assert torch.equal(frozen_bn.running_mean, before) and not frozen_bn.training
    assert trained_bn.training and not torch.equal(trained_bn.running_mean, torch.zeros_like(trained_bn.running_mean))
    assert not any(p.requires_grad for p in net.backbone.model.features[0].parameters())
    set_train_mode(net, SPEC, FineTuneConfig(strategy="finetune_top", top_blocks=1, train_bn=True, batchnorm="batch"), 0)
    assert frozen_bn.training and frozen_bn.weight.requires_grad
    assert not net.backbone.model.features[0][0].weight.requires_grad


def test_warm_start_reproduces_the_linear_probe():
    net = FineTuneNet(SPEC, 3).eval()
    x = torch.randn(6, 3, 32, 32)
    codes = net.backbone(x).detach().numpy()
    head, _ = fit_linear_head(codes, np.array([0, 1, 2, 0, 1, 2]), Cs=(1.0,), class_weight=None)
    head.scale = np.maximum(head.scale, 0.5 * np.median(head.scale))  # no near-constant code: reproduced exactly
    net.warm_start(head)
    np.testing.assert_allclose(net(x).detach().numpy(), head.decision_function(codes), atol=1e-4)


def test_warm_start_damps_codes_that_were_nearly_constant():
    from headstart.strategies import LinearHead

    head = LinearHead("logistic", np.zeros(32), np.r_[np.full(31, 1.0), 1e-3], np.ones((3, 32)), np.zeros(3))
    net = FineTuneNet(SPEC, 3)
    net.warm_start(head)
    assert net.code_scale[-1].item() == pytest.approx(0.5) and torch.equal(net.code_scale[:31], torch.ones(31))


def test_early_stopping_restores_the_best_weights():
    net = torch.nn.Linear(2, 2)
    stopper = EarlyStopping(patience=2)
    assert not stopper.update(1, 1.0, net)
    best = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    assert not stopper.update(2, 1.5, net)
    assert stopper.update(3, 1.2, net)
    stopper.restore(net)
    assert torch.equal(net.weight, best) and stopper.best_epoch == 1


@pytest.mark.parametrize("strategy", ["finetune_top", "finetune_all", "gradual"])
def test_finetuning_learns_and_records_history(strategy):
    X, y = colour_set(8, seed=0)
    X_val, y_val = colour_set(3, seed=1)
    config = FineTuneConfig(strategy=strategy, epochs=4, batch_size=8, head_lr=1e-2, freeze_epochs=1, patience=10, keep="best", precision="fp32", augmentation="none")
    result = finetune(SPEC, X, y, X_val, y_val, config)
    records = result.history.records
    assert len(records) == 4 and records[-1].val_accuracy == 1.0
    assert records[-1].train_loss < records[0].train_loss
    assert result.history.best_epoch == min(records, key=lambda r: r.val_loss).epoch
    if strategy == "gradual":
        assert records[0].trainable_parameters < records[1].trainable_parameters


def test_finetune_all_keeps_the_schedules_last_epoch_by_default():
    assert [FineTuneConfig(strategy=s).kept_epoch for s in ("finetune_all", "finetune_top", "gradual")] == ["last", "best", "best"]
    with pytest.raises(HeadstartError, match="keep"):
        FineTuneConfig(keep="first")
    X, y = colour_set(4, seed=3)
    wrong = (y + 1) % len(CLASS_COLOURS)  # a split the network gets worse at: early stopping fires at once

    def run(**settings):
        snapshots = []
        config = FineTuneConfig(strategy="finetune_all", epochs=3, batch_size=8, head_lr=1e-2, patience=1, precision="fp32", augmentation="none", **settings)
        result = finetune(SPEC, X, y, X, wrong, config, on_epoch_end=lambda record, net: snapshots.append({k: v.clone() for k, v in net.state_dict().items()}))
        final = result.net.state_dict()
        kept = snapshots[result.history.best_epoch - 1]
        assert all(torch.equal(final[k], kept[k]) for k in final)
        return result.history

    stopped = run(keep="best")
    assert stopped.stopped_early and stopped.best_epoch < len(stopped.records)
    whole = run()
    assert len(whole.records) == 3 and not whole.stopped_early and whole.best_epoch == 3


def test_same_seed_same_weights():
    X, y = colour_set(4, seed=2)
    config = FineTuneConfig(epochs=2, batch_size=4, precision="fp32", augmentation="objects")
    a = finetune(SPEC, X, y, X[:3], y[:3], config).net.state_dict()
    b = finetune(SPEC, X, y, X[:3], y[:3], config).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_imbalance_auto_draws_balanced_batches():
    red, green, blue = CLASS_COLOURS.values()
    counts = {0: (red, 24), 1: (green, 8), 2: (blue, 1)}  # 24:1
    X = [colour_image(colour, seed=100 * label + i) for label, (colour, n) in counts.items() for i in range(n)]
    y = np.repeat(list(counts), [n for _, n in counts.values()])
    result = finetune(SPEC, X, y, X[:3], y[:3], FineTuneConfig(epochs=1, batch_size=8, precision="fp32"))
    assert result.imbalance.mode == "sampler" and "balanced" in result.imbalance.reason


def test_bf16_autocast_runs():
    X, y = colour_set(4, seed=4)
    result = finetune(SPEC, X, y, X[:3], y[:3], FineTuneConfig(epochs=1, batch_size=4, precision="bf16"))
    assert result.bf16 and result.net.head.weight.dtype == torch.float32


def test_bad_config():
    with pytest.raises(HeadstartError, match="unknown strategy"):
        FineTuneConfig(strategy="unfreeze_everything")
    with pytest.raises(HeadstartError, match="precision"):
        FineTuneConfig(precision="fp8")


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from headstart.training import loop

    X, y = colour_set(6, seed=5)
    X_val, y_val = colour_set(2, seed=6)
    config = FineTuneConfig(epochs=4, batch_size=6, precision="fp32", augmentation="objects", patience=10)
    straight = finetune(SPEC, X, y, X_val, y_val, config)

    real_train = loop.train

    def interrupted_train(*args, on_epoch_end=None, **kwargs):
        def save_then_stop(record):
            on_epoch_end(record)
            if record.epoch == 2:
                raise Interrupt  # as Ctrl-C would, right after epoch 2's checkpoint

        return real_train(*args, on_epoch_end=save_then_stop, **kwargs)

    monkeypatch.setattr("headstart.strategies.finetune.train", interrupted_train)
    with pytest.raises(Interrupt):
        finetune(SPEC, X, y, X_val, y_val, config, checkpoint_dir=tmp_path)
    monkeypatch.setattr("headstart.strategies.finetune.train", real_train)
    resumed = finetune(SPEC, X, y, X_val, y_val, config, checkpoint_dir=tmp_path, resume=True)

    assert [r.epoch for r in resumed.history.records] == [1, 2, 3, 4]
    a, b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    X, y = colour_set(4, seed=7)
    config = FineTuneConfig(epochs=1, batch_size=4, precision="fp32")
    finetune(SPEC, X, y, X[:3], y[:3], config, checkpoint_dir=tmp_path)
    with pytest.raises(HeadstartError, match=r"different run \(changed: head_lr\)"):
        finetune(SPEC, X, y, X[:3], y[:3], FineTuneConfig(epochs=1, batch_size=4, precision="fp32", head_lr=0.5), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(HeadstartError, match="nothing to resume"):
        finetune(SPEC, X, y, X[:3], y[:3], config, checkpoint_dir=tmp_path / "empty", resume=True)


def test_drop_connect_is_random_in_training_and_plain_in_evaluation():
    from headstart.strategies.layers import DropConnectLinear

    layer = DropConnectLinear(16, 3, p=0.5)
    x = torch.randn(4, 16)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    mean = torch.stack([layer(x) for _ in range(2000)]).mean(0)
    layer.eval()
    torch.testing.assert_close(mean, layer(x), atol=0.1, rtol=0.1)  # unbiased: rescaled survivors
    assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))


def test_mixup_and_drop_connect_train_and_still_learn():
    X, y = colour_set(8, seed=8)
    X_val, y_val = colour_set(3, seed=9)
    base = dict(epochs=3, batch_size=8, head_lr=1e-2, precision="fp32", augmentation="none", patience=10)
    plain = finetune(SPEC, X, y, X_val, y_val, FineTuneConfig(**base))
    regularised = finetune(SPEC, X, y, X_val, y_val, FineTuneConfig(**base, mixup=0.4, drop_connect=0.3))
    assert regularised.history.records[-1].val_accuracy == 1.0
    assert regularised.history.records[0].train_loss != plain.history.records[0].train_loss


def test_stochastic_pooling_draws_in_proportion_to_activation_and_averages_in_evaluation():
    from headstart.strategies.layers import StochasticPool

    pool = StochasticPool()
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = torch.tensor([[1.0, 3.0], [0.0, -5.0]])  # negative activations count as zero
    draws = torch.stack([pool(x) for _ in range(4000)])[:, 0]
    assert set(draws[:, 0].tolist()) == {1.0, 3.0}
    assert (draws[:, 0] == 3.0).float().mean().item() == pytest.approx(0.75, abs=0.03)
    assert torch.equal(draws[:, 1], torch.zeros(4000))  # a silent channel stays silent
    pool.eval()
    torch.testing.assert_close(pool(x), torch.tensor([[(1 + 9) / 4, 0.0]]))  # the draw's expectation


def test_stochastic_pooling_fine_tunes_saves_and_reloads_with_the_same_parameters(tmp_path):
    X, y = colour_set(8, seed=12)
    config = FineTuneConfig(epochs=3, batch_size=8, head_lr=1e-2, precision="fp32", augmentation="none", patience=10, pooling="stochastic")
    result = finetune(SPEC, X, y, X[:6], y[:6], config)
    assert result.history.records[-1].val_accuracy == 1.0
    assert set(result.net.state_dict()) == set(FineTuneNet(SPEC, 3).state_dict())  # warm starts and loads either way
    images = torch.rand(2, 3, 32, 32)
    assert not torch.allclose(FineTuneNet(SPEC, 3).eval()(images), FineTuneNet(SPEC, 3, pooling="stochastic").eval()(images))


def test_stochastic_pooling_refuses_a_feature_map_narrower_than_the_codes():
    from dataclasses import replace

    with pytest.raises(HeadstartError, match="map has 16 channels; use pooling='avg'"):
        FineTuneNet(replace(SPEC, feature_map="features.1"), 3, pooling="stochastic")
    with pytest.raises(HeadstartError, match="does not name its last feature map"):
        FineTuneNet(replace(SPEC, feature_map=None), 3, pooling="stochastic")


@pytest.mark.parametrize(
    "settings, message",
    [({"drop_connect": 1.0}, r"\[0, 1\)"), ({"mixup": -1}, "Beta distribution"), ({"pooling": "max"}, "unknown pooling value 'max'")],
)
def test_bad_regularisation_settings(settings, message):
    with pytest.raises(HeadstartError, match=message):
        FineTuneConfig(**settings)


def test_lr_range_test_suggests_a_rate_and_restores_the_model():
    from headstart.training import lr_range_test

    X, y = colour_set(8, seed=10)
    net = FineTuneNet(SPEC, 3)
    optimizer = torch.optim.AdamW(param_groups(net, SPEC, head_lr=1e-3))
    dataset = torch.utils.data.TensorDataset(torch.stack([SPEC.preprocessing.transform()(x) for x in X]), torch.as_tensor(y))
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, shuffle=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    test = lr_range_test(net, optimizer, loader, torch.nn.CrossEntropyLoss(), start=1e-5, end=10.0, steps=60)
    assert test.learning_rates == sorted(test.learning_rates) and test.learning_rates[0] == pytest.approx(1e-5)
    assert 1e-5 <= test.suggestion <= 10.0
    assert min(test.losses) < test.losses[0]  # it found rates that learn
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in torch.optim.AdamW(param_groups(net, SPEC, head_lr=1e-3)).param_groups]


def test_find_lr_sets_the_head_rate_from_the_test():
    X, y = colour_set(6, seed=11)
    result = finetune(SPEC, X, y, X[:3], y[:3], FineTuneConfig(epochs=1, batch_size=6, precision="fp32", find_lr=True))
    head_rate = result.history.records[0].learning_rates["head"]
    assert result.lr_test is not None and head_rate <= result.lr_test.suggestion * 1.0001


def test_a_time_limit_ends_training_after_the_epoch_that_uses_it_up():
    X, y = colour_set(4, seed=13)
    result = finetune(SPEC, X, y, X[:3], y[:3], FineTuneConfig(epochs=5, batch_size=4, precision="fp32", time_limit=0.0))
    assert len(result.history.records) == 1 and result.history.stopped_early
    budgeted = TransferClassifier("tiny", engine="torch", strategy="finetune_top", time_budget=0.0, finetune={"epochs": 5, "batch_size": 4})
    X, y = colour_set(8, seed=14)
    assert len(budgeted.fit(X, y).history_.records) == 1


def test_a_deadline_shortens_the_schedule_so_the_rate_has_decayed_when_time_runs_out(monkeypatch):
    from headstart.training import loop

    clock = [0.0]  # each training step takes one second of this clock
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock[0])

    def factor(step, total):
        clock[0] += 1.0
        return warmup_cosine(step, total, 0)

    net = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2), torch.tensor([0, 1, 0, 1])), batch_size=4)
    history = loop.train(net, optimizer, loader, epochs=10, criterion=torch.nn.CrossEntropyLoss(), lr_factor=factor, deadline=4.5)
    assert len(history.records) == 4 and history.time_bound == 4 and history.stopped_early
    rates = [r.learning_rates["0"] for r in history.records]
    assert rates[-1] == pytest.approx(warmup_cosine(3, 4, 0))  # the last step of a 4-step schedule, not of a 10-step one
    assert rates[-1] < 0.2 < warmup_cosine(3, 10, 0)
    unbounded = loop.train(torch.nn.Linear(2, 2), torch.optim.SGD(net.parameters(), lr=1.0), loader, epochs=3, criterion=torch.nn.CrossEntropyLoss(), lr_factor=factor)
    assert len(unbounded.records) == 3 and unbounded.time_bound is None
