"""The core trainer on a tiny regression task: resumption ends bit-exact, the kept epoch is the best on
validation (never the last or the best on training data), patience stops a run, accumulation equals a
larger batch, balanced draws balance, autocast is off on the CPU, and two processes (gloo) train as one
process on the same global batch, resuming on one."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from avbench.training import LAST, Selection, Trainer, autocast, balanced_draw

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class Regression:
    """y = x @ w + noise; the noise of each step is drawn from the run's generator (as masks are)."""

    def __init__(self, model, n: int = 12, batch_size: int = 4, val_losses=None, noise: float = 0.1):
        g = torch.Generator().manual_seed(0)
        self.model, self.batch_size, self.noise = model, batch_size, noise
        self.x = torch.randn(n, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3
        self.val_losses = val_losses  # scripted validation results, or None: the real validation loss
        self.validated = 0

    def epoch_jobs(self, generator):
        order = torch.randperm(len(self.x), generator=generator).tolist()
        return [order[k:k + self.batch_size] for k in range(0, len(order), self.batch_size)]

    def make_batch(self, job):
        return self.x[job], self.y[job]

    def losses(self, batch, job, generator):
        x, y = batch
        assert not torch.is_autocast_enabled()  # no autocast on the CPU
        with autocast(torch.device("cpu")):
            prediction = self.model(x).squeeze(-1)
        if self.noise:
            prediction = prediction + self.noise * torch.randn(len(x), generator=generator)
        return {"total": torch.nn.functional.mse_loss(prediction, y), "abs": (prediction - y).abs().mean()}

    def validate(self, record):
        self.validated += 1
        if self.val_losses is not None:
            return {"loss": self.val_losses[self.validated - 1]}
        with torch.no_grad():
            return {"loss": float(torch.nn.functional.mse_loss(self.model(self.x).squeeze(-1), self.y))}


def model_and_optimiser(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return model, optimiser, torch.optim.lr_scheduler.StepLR(optimiser, step_size=2, gamma=0.5)


def train(directory=None, on_epoch=None, epochs: int = 4, noise: float = 0.1, **trainer):
    model, optimiser, scheduler = model_and_optimiser()
    task = Regression(model, noise=noise)
    history = Trainer(epochs=epochs, grad_clip=1.0, schedule_every="step", select=Selection("loss", "min"),
                      **trainer).fit(model, optimiser, scheduler, task, seed=7, directory=directory,
                                     key={"task": "regression"}, on_epoch=on_epoch)
    return model, history


def volatile_free(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mib")} for r in history]


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_bit_exact(tmp_path):
    straight, history = train(tmp_path / "straight")

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(tmp_path / "interrupted", on_epoch=stop_after_two)
    assert len(torch.load(tmp_path / "interrupted" / LAST, weights_only=True)["history"]) == 2
    resumed, resumed_history = train(tmp_path / "interrupted")
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    assert volatile_free(resumed_history) == volatile_free(history)
    assert set(history[0]) >= {"epoch", "loss", "abs", "lr", "clips", "val_loss", "best", "seconds", "peak_memory_mib"}
    assert history[0]["clips"] == 12 and history[-1]["loss"] < history[0]["loss"]
    with pytest.raises(ValueError, match="other settings"):
        model, optimiser, scheduler = model_and_optimiser()
        Trainer(epochs=4).fit(model, optimiser, scheduler, Regression(model), seed=7, directory=tmp_path / "straight",
                              key={"task": "another"})


def test_the_kept_weights_are_those_of_the_best_validation_epoch():
    model, optimiser, _ = model_and_optimiser()
    task = Regression(model, val_losses=[0.9, 0.4, 0.6, 0.5])  # epoch 2 is best on validation
    snapshots = []
    history = Trainer(epochs=4, select=Selection("loss", "min")).fit(
        model, optimiser, None, task, seed=1,
        on_epoch=lambda r: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert [r["best"] for r in history] == [True, True, False, False]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in snapshots[1].items())
    assert not all(torch.equal(model.state_dict()[k], v) for k, v in snapshots[3].items())
    assert min(range(4), key=lambda e: history[e]["loss"]) != 1  # not the epoch the training loss prefers


def test_patience_stops_after_epochs_without_a_better_validation_result():
    model, optimiser, _ = model_and_optimiser()
    task = Regression(model, val_losses=[0.5, 0.6, 0.7, 0.8, 0.1])
    history = Trainer(epochs=5, select=Selection("loss", "min"), patience=2).fit(model, optimiser, None, task, seed=1)
    assert len(history) == 3 and task.validated == 3


def test_accumulated_gradients_equal_one_larger_batch():
    results = []
    for batch_size, accumulate in ((4, 1), (2, 2)):
        model, optimiser, _ = model_and_optimiser()
        task = Regression(model, batch_size=batch_size, noise=0.0)
        Trainer(epochs=2, accumulate=accumulate).fit(model, optimiser, None, task, seed=3)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(results[0], results[1], atol=1e-6)


def test_selection_breaks_ties_and_ignores_missing_values():
    select = Selection("auc", "max", tie_break=("loss", "min"))
    assert select.better({"auc": 0.7, "loss": 9.0}, None)
    assert select.better({"auc": 0.9, "loss": 9.0}, {"auc": 0.8, "loss": 1.0})
    assert select.better({"auc": 0.8, "loss": 0.5}, {"auc": 0.8, "loss": 1.0})
    assert not select.better({"auc": 0.8, "loss": 1.0}, {"auc": 0.8, "loss": 1.0})  # equal: the earlier stays
    assert select.better({"auc": None, "loss": 0.5}, {"auc": None, "loss": 1.0})
    with pytest.raises(ValueError, match="'max' or 'min'"):
        Selection("auc", "highest")


def test_balanced_draws_give_each_group_an_equal_share():
    groups = ["real"] * 30 + ["fake"] * 10
    drawn = []
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        drawn += [groups[i] for i in balanced_draw(groups, generator)]
    share = Counter(drawn)["fake"] / len(drawn)
    assert share == pytest.approx(0.5, abs=0.02)
    again = torch.Generator().manual_seed(0)
    assert balanced_draw(groups, again) == balanced_draw(groups, torch.Generator().manual_seed(0))


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_is_bf16_on_cuda_and_nothing_on_the_cpu():
    assert not isinstance(autocast(torch.device("cpu")), torch.autocast)
    on_cuda = autocast(torch.device("cuda"))
    assert isinstance(on_cuda, torch.autocast) and on_cuda.fast_dtype == torch.bfloat16


def _rank(rank: int, world: int, folder, epochs: int) -> None:
    """One process of a gloo group: `train` on its share of each batch, rank 0 keeping the parameters."""
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous-{epochs}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model, history = train(folder / "run", epochs=epochs, noise=0.0)
        if rank == 0:
            torch.save({"state": model.state_dict(), "history": history}, folder / f"rank0-{epochs}.pt")
        dist.barrier()  # as avbench.distributed does: gloo aborts a rank whose peer left the group first
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_train_as_one_process_and_resume_on_one(tmp_path):
    one, one_history = train(epochs=4, noise=0.0)
    mp.spawn(_rank, args=(2, tmp_path, 4), nprocs=2)
    two = torch.load(tmp_path / "rank0-4.pt", weights_only=True)
    for name, value in one.state_dict().items():  # equal up to the rounding of a sum split in two
        assert torch.allclose(two["state"][name], value, atol=1e-6), name
    assert [r["loss"] for r in two["history"]] == pytest.approx([r["loss"] for r in one_history], rel=1e-5)
    assert all(r["clips"] == 12 for r in two["history"])  # figures of the whole batch, not of one rank

    (tmp_path / "switched").mkdir()
    mp.spawn(_rank, args=(2, tmp_path / "switched", 2), nprocs=2)
    resumed, resumed_history = train(tmp_path / "switched" / "run", epochs=4, noise=0.0)  # 2 epochs on 2, 2 on 1
    assert len(resumed_history) == 4
    for name, value in one.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-6), name


def test_the_hold_out_keeps_each_identity_on_one_side():
    import numpy as np

    from avbench.training import holdout

    identities = [f"p{k // 4}" for k in range(40)]  # 10 people, 4 clips each: 2 real, 2 fake
    labels = np.array([k % 2 for k in range(40)])
    keep, val = holdout(labels, seed=5, identities=identities)
    held_people = {identities[k] for k in val}
    assert held_people and held_people.isdisjoint(identities[k] for k in keep)
    assert set(labels[val].tolist()) == {0, 1} and len(val) == 4  # 10% of each label, whole people
    assert np.array_equal(holdout(labels, seed=5, identities=identities)[1], val)
    assert not np.array_equal(holdout(labels, seed=6, identities=identities)[1], val)
    unknown = holdout(labels, seed=5, identities=[""] * 40)  # no identities: clips stratified by label
    assert np.array_equal(unknown[1], holdout(labels, seed=5)[1])


class Display:
    """What a rich Progress is asked to show."""

    def __init__(self):
        self.tasks, self.advanced, self.removed = {}, 0, []

    def add_task(self, description, total=None):
        self.tasks[len(self.tasks)] = {"description": description, "total": total}
        return len(self.tasks) - 1

    def update(self, task, **fields):
        self.tasks[task].update(fields)

    def advance(self, task, n=1):
        self.advanced += n

    def remove_task(self, task):
        self.removed.append(task)


def test_a_fit_shows_one_bar_on_the_lent_display_and_none_elsewhere():
    from avbench.reporting import reporting_to

    display = Display()
    with reporting_to(display):
        _, history = train(epochs=2)
    (bar,) = display.tasks.values()
    assert bar["total"] == 6 and display.advanced == 6 and display.removed == [0]  # 2 epochs of 3 steps
    assert bar["description"].startswith("training · epoch 2/2 · loss")
    train(epochs=1)  # no display lent: nothing to show, nothing fails
    assert len(display.tasks) == 1
