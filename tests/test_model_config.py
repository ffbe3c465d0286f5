"""The model against the paper (§4.2, Table 6) and the run configuration's rules."""

import json

import pytest
import torch

from resnet_study.core.config import RunConfig, default_milestones
from resnet_study.core.model import param_count, resnet
from tests.helpers import run_cli

# He et al. 2016, Table 6: n -> (the model's name, parameters in millions) of ResNet-20/32/44/56/110, option A.
PAPER = {3: (20, 0.27), 5: (32, 0.46), 7: (44, 0.66), 9: (56, 0.85), 18: (110, 1.7)}


def weighted_layers(net: torch.nn.Module) -> int:
    """Layers as the paper counts them, by walking the built model: the 3x3 convolutions and the classifier (option
    B's 1x1 projections are shortcuts, not layers)."""
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    return len(convs) + sum(isinstance(m, torch.nn.Linear) for m in net.modules())


@pytest.mark.parametrize("n", sorted(PAPER))
def test_layers_and_params_match_the_paper(n):
    name_layers, params_m = PAPER[n]
    assert RunConfig(n=n).layers == name_layers
    for shortcut in ("A", "B", "none"):
        assert weighted_layers(resnet(n, shortcut)) == name_layers
    params = param_count(resnet(n, "A"))
    assert abs(params / 1e6 - params_m) / params_m < 0.02, params


def test_the_model_command_prints_what_the_code_builds():
    out = json.loads(run_cli("model", "--n", 7, "--shortcut", "A", "--json").stdout)
    assert out == {"layers": 44, "params": param_count(resnet(7, "A"))}


def test_option_a_is_parameter_free_and_b_adds_projections():
    a, b, plain = (param_count(resnet(3, s)) for s in ("A", "B", "none"))
    assert a == plain  # option A adds no parameters; the plain net has the same layers
    # B: two 1x1 projections (16->32, 32->64) with BN where the shape changes, identity elsewhere.
    assert b - a == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_shortcuts_shape_and_downsampling():
    x = torch.randn(4, 3, 32, 32)
    for s in ("A", "B", "none"):
        net = resnet(2, s)
        assert net(x).shape == (4, 10)
        feats = net.stack3(net.stack2(net.stack1(torch.relu(net.bn1(net.conv1(x))))))
        assert feats.shape == (4, 64, 8, 8)


@pytest.mark.parametrize("shortcut", ["B", "none"])
def test_b_and_plain_train(shortcut):
    """A few SGD steps of the paper's recipe on a fixed batch lower the loss for option B and the plain net."""
    torch.manual_seed(0)
    net = resnet(1, shortcut).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (64,))
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_bf16_autocast_on_cpu_computes_in_bf16_and_keeps_fp32_state():
    """The CUDA precision path (core.train.autocast), run on the CPU: the layers compute in bf16, while weights,
    momentum buffers and the loss stay fp32, and the training steps still lower the loss."""
    from resnet_study.core.train import autocast, train_one_epoch

    torch.manual_seed(0)
    net = resnet(1).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=True)
    x, y = torch.randn(64, 3, 32, 32).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (64,))
    seen = []
    net.fc.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    device = torch.device("cpu")
    first = train_one_epoch(net, [(x, y)], opt, device, "bf16")[0]
    last = train_one_epoch(net, [(x, y)] * 15, opt, device, "bf16")[0]
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert all(s["momentum_buffer"].dtype == torch.float32 for s in opt.state.values())
    with autocast(device, "bf16"):
        assert torch.nn.functional.cross_entropy(net(x), y).dtype == torch.float32
    assert last < 0.7 * first, (first, last)
    seen.clear()
    train_one_epoch(net, [(x, y)], opt, device, "fp32")
    assert seen == [torch.float32]


def test_lr_schedule_milestones_and_warmup():
    cfg = RunConfig(epochs=164, milestones=[82, 123], warmup_epochs=1)
    assert [cfg.lr_at(e) for e in (1, 2, 82, 83, 123, 124, 164)] == [0.01, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    assert default_milestones(20) == [10, 15] and default_milestones(100) == [50, 75]
    assert RunConfig(epochs=20).milestones == [10, 15]  # each epoch budget has its own schedule
    assert RunConfig(epochs=1).milestones == []


def test_run_id_is_stable_and_tells_configs_apart():
    a = RunConfig(n=7, dataset="cifar10", epochs=50)
    assert a.run_id == RunConfig(n=7, dataset="cifar10", epochs=50).run_id
    assert a.run_id.startswith("resnet44A-cifar10-e50-s0-")
    others = {RunConfig(n=7, dataset="cifar10", epochs=50, seed=1).run_id,
              RunConfig(n=7, dataset="cifar10", epochs=100).run_id,
              RunConfig(n=7, dataset="cifar10", epochs=50, augment="report").run_id,
              RunConfig(n=7, dataset="cifar10", epochs=50, run_name="mine").run_id}
    assert a.run_id not in others and len(others) == 4


def test_every_experiment_field_is_an_option_of_train_and_momentum_is_settable():
    """The training options are generated from RunConfig (jobs/options.py): every field but the seed is an
    option with the field's default and description, the seed is --seed / --seeds, and a field a spec could always
    set (momentum, weight decay) is settable from the command line too. Parsed by the real CLI."""
    from typer.main import get_command

    from resnet_study.jobs.cli import app
    from resnet_study.jobs.options import experiments_from, run_options_from
    from tests.helpers import parse_command

    train = get_command(app).get_command(None, "train")
    options = {p.name: p for p in train.params}
    for name, field in RunConfig.model_fields.items():
        if name == "seed":
            assert {"seed", "seeds"} <= set(options)
            continue
        assert name in options, name
        assert options[name].help == field.description
        if name != "milestones":
            assert options[name].default == field.get_default(call_default_factory=True), name
    _, params = parse_command(["resnet-study", "train", "--momentum", "0.5", "--weight-decay", "0.0005",
                               "--milestones", "5,8", "--epochs", "10", "--seeds", "0-2", "--device", "cpu"])
    cfgs = experiments_from(dict(params))
    assert [c.seed for c in cfgs] == [0, 1, 2]
    assert {(c.momentum, c.weight_decay, tuple(c.milestones)) for c in cfgs} == {(0.5, 0.0005, (5, 8))}
    assert run_options_from(dict(params)).device == "cpu"
