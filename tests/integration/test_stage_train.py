"""The fast batching paths change speed, not results: same loss on the same rows."""

import pytest
import torch
from helpers import small_training_setup

from playpen_attribution.stages.train import build_trainer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return small_training_setup(tmp_path_factory)


def _loss(cfg, rows, model_dir, batching, tmp_path):
    train = cfg.train.model_copy(update={"batching": batching})
    trainer = build_trainer(rows, model_dir, train, cfg, tmp_path / batching)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    model = trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(model, batch).item(), batch


@pytest.mark.parametrize("batching", ["length_grouped", "padding_free"])
def test_same_loss_as_padded_batches(setup, tmp_path, batching):
    cfg, rows, model_dir = setup
    padded, padded_batch = _loss(cfg, rows, model_dir, "padded", tmp_path)
    other, batch = _loss(cfg, rows, model_dir, batching, tmp_path)
    assert other == pytest.approx(padded, rel=1e-5)
    if batching == "padding_free":
        assert batch["input_ids"].shape[0] == 1 and "position_ids" in batch  # one flat row, no pad tokens
        assert batch["input_ids"].numel() == int(padded_batch["attention_mask"].sum())


def test_length_grouped_sampler_is_used(setup, tmp_path):
    cfg, rows, model_dir = setup
    trainer = build_trainer(rows, model_dir, cfg.train.model_copy(update={"batching": "length_grouped"}), cfg, tmp_path)
    sampler = trainer._get_train_sampler()
    assert type(sampler).__name__ == "EpochOrder" and type(sampler.sampler).__name__ == "LengthGroupedSampler"
    orders = []
    for epoch in (0, 1, 0):  # each epoch's order is a function of (seed, epoch), whatever came before
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert orders[0] == orders[2] and sorted(orders[0]) == list(range(len(rows)))


def _first_batch_loss(trainer) -> tuple[float, dict]:
    """The trainer's loss on its first batch before any step (model in eval mode), and that batch."""
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.eval()
    with torch.no_grad():
        return trainer.compute_loss(model, batch).item(), batch


def _model_loss(model, batch) -> float:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                            labels=batch["labels"]).loss.item()


def test_an_arm_from_base_starts_at_the_base_model_and_one_from_base_adapter_at_the_adapter(setup, tmp_path):
    from playpen_attribution.core.modeling import load_model
    from playpen_attribution.stages.train import train_rows

    cfg, rows, model_dir = setup
    adapter_run = train_rows(rows, model_dir, cfg.train.model_copy(update={"epochs": 3}), cfg, tmp_path / "base_adapter")
    adapter = tmp_path / "base_adapter" / "adapter"
    assert adapter_run["steps"] > 0
    fresh, batch = _first_batch_loss(build_trainer(rows, model_dir, cfg.arm_train, cfg, tmp_path / "fresh"))
    assert fresh == pytest.approx(_model_loss(load_model(model_dir), batch), rel=1e-5)  # LoRA B = 0: the base itself
    continued, batch = _first_batch_loss(build_trainer(rows, model_dir, cfg.arm_train, cfg, tmp_path / "continued",
                                                       init_adapter=adapter))
    assert continued == pytest.approx(_model_loss(load_model(model_dir, adapter), batch), rel=1e-5)
    assert abs(continued - fresh) > 1e-3  # the two starts really differ


def test_the_train_stage_picks_the_start_from_arm_train_init(demo_run, tmp_path):
    from playpen_attribution.run import artifacts
    from playpen_attribution.stages import train

    cfg, run_dir = demo_run
    seed_dir = run_dir / "seed_1"
    assert artifacts.load_manifest(seed_dir / "train_top_k").fields["init_adapter"] is None  # init: base (default)
    continued = cfg.model_copy(update={"arm_train": cfg.arm_train.model_copy(update={"init": "base_adapter"})})
    other = tmp_path / "seed_1"  # a copy of the seed folder, so the session's demo run stays as it was
    other.mkdir()
    for name in ("data", "base_model", "train_base", "select"):
        (other / name).symlink_to((seed_dir / name).resolve(), target_is_directory=True)
    folder = train.run(continued.for_seed(1), other, arm="top_k")
    manifest = artifacts.load_manifest(folder).fields
    assert manifest["init_adapter"].endswith("train_base/adapter") and "train_base" in manifest["consumed"]


def test_the_completion_only_head_gives_trls_own_loss_and_gradients(setup, tmp_path):
    from playpen_attribution.stages.train import completion_only_head

    cfg, rows, model_dir = setup
    trainer = build_trainer(rows, model_dir, cfg.train, cfg, tmp_path / "t")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    model = trainer.model.train()

    def loss_and_grads():
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, plain_grads = loss_and_grads()
    with completion_only_head():
        compact, compact_grads = loss_and_grads()
    assert compact == pytest.approx(plain, rel=1e-5) and plain_grads.keys() == compact_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, rtol=1e-4, atol=1e-6)


def test_the_train_stage_records_the_turn_end_token_and_its_embedding_twins(demo_run):
    from playpen_attribution.run import artifacts

    _, run_dir = demo_run
    turn_end = artifacts.load_manifest(run_dir / "train_base").fields["turn_end_token"]
    assert turn_end["token"] == "<eos>"  # raw format: the tiny tokenizer's EOS
    assert turn_end["embedding_twins"] == 0  # pretrained in the model stage: an embedding of its own


@pytest.mark.parametrize(("save_steps", "kill_at", "checkpoint"), [(2, 5, 4), (3, 5, 3), (5, 6, 5)],
                         ids=["epoch_boundary", "inside_the_first_epoch", "inside_a_later_epoch"])
def test_killed_training_resumes_from_its_checkpoint(setup, tmp_path, monkeypatch, caplog, save_steps, kill_at,
                                                     checkpoint):
    """A build killed mid-epoch resumes from its last checkpoint, at an epoch boundary or inside an epoch (the
    trainer then skips the batches it already saw: the epoch's order must be the one the killed build drew),
    and ends with the uninterrupted adapter."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from playpen_attribution.run import artifacts
    from playpen_attribution.stages import train as train_stage

    cfg, rows, model_dir = setup
    train = cfg.train.model_copy(update={"batch_size": 2, "grad_accum": 1, "epochs": 2, "save_steps": save_steps,
                                         "auto_batch": False})  # 8 rows: 4 steps an epoch
    whole = train_stage.train_rows(rows, model_dir, train, cfg, tmp_path / "whole")

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at:  # mid second epoch
                raise KeyboardInterrupt("killed")

    original = train_stage.build_trainer

    def with_kill(*args, **kwargs):
        trainer = original(*args, **kwargs)
        trainer.add_callback(Kill())
        return trainer
    monkeypatch.setattr(train_stage, "build_trainer", with_kill)
    out = tmp_path / "killed"
    out.mkdir()
    with pytest.raises(KeyboardInterrupt):
        train_stage.train_rows(rows, model_dir, train, cfg, out)
    assert train_stage.last_checkpoint(out / artifacts.TRAINER_SCRATCH).name == f"checkpoint-{checkpoint}"
    monkeypatch.setattr(train_stage, "build_trainer", original)
    with caplog.at_level("INFO", logger="playpen_attribution"):
        resumed = train_stage.train_rows(rows, model_dir, train, cfg, out)
    assert f"resuming from checkpoint-{checkpoint} (step {checkpoint}" in caplog.text
    assert resumed["steps"] == whole["steps"] == 8 and resumed["resumed_from_step"] == checkpoint
    logs = [artifacts.load_train_log(d) for d in (tmp_path / "whole", out)]
    assert logs[1][-1]["loss"] == pytest.approx(logs[0][-1]["loss"], abs=1e-6)
    a, b = (load_file(d / artifacts.ADAPTER_DIR / "adapter_model.safetensors") for d in (tmp_path / "whole", out))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    assert not (out / artifacts.TRAINER_SCRATCH).exists()


def test_a_checkpoint_cut_short_by_the_kill_is_not_resumed_from(tmp_path):
    from playpen_attribution.stages.train import last_checkpoint

    assert last_checkpoint(tmp_path / "absent") is None
    for step, complete in ((4, True), (8, False)):  # killed while writing checkpoint-8
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
