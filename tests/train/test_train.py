"""Training: the force error goes down, resume is exact, bad data and configs are refused."""

import json

import numpy as np
import pytest
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from freecg_md import load_model
from freecg_md.train import TrainConfig, train
from freecg_md.train.export import export_model
from freecg_md.train.loop import evaluate_errors
from tests.train.conftest import TINY_MODEL, config_for, labelled_set


def test_training_drives_the_force_error_down(data_file, tmp_path):
    config = config_for(data_file, tmp_path / "run", max_epochs=25)
    metrics = train(config, progress=False)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    first = float(log[1].split(",")[6])
    best = min(float(row.split(",")[6]) for row in log[1:])
    assert best < 0.5 * first, (first, best)
    assert metrics["force_mae_eV_per_A"] < 0.6 * first
    assert set(json.loads((tmp_path / "run" / "split.json").read_text())) == {
        "train", "val", "test"}
    model = load_model(tmp_path / "run" / "model.pt")
    assert model.metadata["test_metrics"]["n_test"] == metrics["n_test"]
    for key in ("energy_mae_eV", "energy_mae_per_atom_eV", "force_mae_eV_per_A",
                "force_rmse_eV_per_A", "force_mae_kcal_mol_per_A"):
        assert np.isfinite(metrics[key])
    # Exporting the run's best model measures the same test metrics and records the run.
    report = export_model(config, tmp_path / "shipped.pt")
    np.testing.assert_allclose(report["test_metrics"]["force_mae_eV_per_A"],
                               metrics["force_mae_eV_per_A"], rtol=1e-5)
    shipped = load_model(tmp_path / "shipped.pt")
    assert next(shipped.parameters()).dtype == torch.float32
    domain = shipped.metadata["training_domain"]  # what it knows, for the warnings
    assert domain["elements"] == [1, 6] and domain["n_structures"] == 40
    assert shipped.metadata["training"]["epochs_finished"] == len(log) - 1
    assert shipped.metadata["split"]["test"] == json.loads(
        (tmp_path / "run" / "split.json").read_text())["test"]


def test_export_records_what_the_frames_say_about_their_labels(tmp_path):
    structures = labelled_set(12)
    for k, atoms in enumerate(structures):
        atoms.info.update(temperature=300.0 + 100 * (k % 2), method="LJ, charge 0 (test)")
    write(tmp_path / "data.extxyz", structures)
    config = config_for(tmp_path / "data.extxyz", tmp_path / "run", max_epochs=1)
    train(config, progress=False)
    export_model(config, tmp_path / "model.pt", description="six-atom clusters")
    domain = load_model(tmp_path / "model.pt").metadata["training_domain"]
    assert domain["temperatures_K"] == [300.0, 400.0] and domain["charges"] == [0]
    assert domain["reference"] == "LJ, charge 0 (test)"
    assert domain["description"] == "six-atom clusters"


def test_resume_equals_uninterrupted(data_file, tmp_path):
    whole = train(config_for(data_file, tmp_path / "whole", max_epochs=3), progress=False)
    # Stop mid-run after one epoch and a few steps (max_minutes=0 stops at the first step
    # after the deadline), then resume to the end.
    part = config_for(data_file, tmp_path / "part", max_epochs=1)
    train(part, progress=False)
    assert train(config_for(data_file, tmp_path / "part", max_epochs=3, max_minutes=0.0),
                 resume=True, progress=False) == {}
    resumed = train(config_for(data_file, tmp_path / "part", max_epochs=3), resume=True,
                    progress=False)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert resumed["force_mae_eV_per_A"] == whole["force_mae_eV_per_A"]
    log_whole = (tmp_path / "whole" / "log.csv").read_text().splitlines()
    log_part = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert len(log_whole) == len(log_part) == 4
    # Resuming rewrites the log up to the checkpoint: it keeps the csv writer's line
    # endings, so the file does not mix two kinds once rows are appended again.
    raw_whole = (tmp_path / "whole" / "log.csv").read_bytes()
    raw_part = (tmp_path / "part" / "log.csv").read_bytes()
    assert raw_whole.count(b"\r\n") == raw_part.count(b"\r\n") == 4


def test_truncating_the_log_keeps_the_rows_of_the_checkpoint_with_one_line_ending(tmp_path):
    from freecg_md.train.loop import _truncate_log

    log = tmp_path / "log.csv"
    log.write_bytes(b"epoch,loss\r\n0,1.0\n1,0.5\r\n2,0.4\n")  # mixed, as older runs left it
    _truncate_log(log, 2)
    assert log.read_bytes() == b"epoch,loss\r\n0,1.0\r\n1,0.5\r\n"
    _truncate_log(log, 0)  # a checkpoint before the first epoch's row: the header stays
    assert log.read_bytes() == b"epoch,loss\r\n"


def test_a_data_folder_leaves_out_the_labellers_half_written_chunks(tmp_path):
    from freecg_md.train.dataset_cache import data_files

    for name in ("chunk_00001.extxyz.gz", "chunk_00000.extxyz.gz", ".chunk_00002.tmp.extxyz.gz",
                 "extra.extxyz"):
        (tmp_path / name).write_bytes(b"")
    assert [f.name for f in data_files([str(tmp_path)])] == [
        "extra.extxyz", "chunk_00000.extxyz.gz", "chunk_00001.extxyz.gz"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_files([str(tmp_path / "missing")])


def test_existing_run_needs_resume(data_file, tmp_path):
    train(config_for(data_file, tmp_path / "run", max_epochs=1), progress=False)
    with pytest.raises(FileExistsError, match="resume"):
        train(config_for(data_file, tmp_path / "run", max_epochs=1), progress=False)
    # Resuming on data that grew since the split was made is refused.
    write(data_file, labelled_set(45))
    with pytest.raises(ValueError, match="splits 40 structures but the data now hold 45"):
        train(config_for(data_file, tmp_path / "run", max_epochs=2), resume=True,
              progress=False)


def test_resume_and_export_refuse_data_relabelled_in_place(data_file, tmp_path):
    """As many structures, other content: the split's indices would name other structures,
    so resuming and exporting are refused on the content's fingerprint (data.json)."""
    config = config_for(data_file, tmp_path / "run", max_epochs=1)
    train(config, progress=False)
    assert json.loads((tmp_path / "run" / "data.json").read_text())["structures"] == 40
    write(data_file, labelled_set(40, seed=7))
    with pytest.raises(ValueError, match="data differ from those .*split.json was made on"):
        train(config_for(data_file, tmp_path / "run", max_epochs=2), resume=True,
              progress=False)
    with pytest.raises(ValueError, match="would score other structures as held out"):
        export_model(config, tmp_path / "x.pt")


def test_a_resume_before_the_first_checkpoint_splits_by_the_config_given(data_file, tmp_path):
    """Without a checkpoint nothing was trained: a changed split seed makes its own split
    (the old one kept would overlap a committee member's test set)."""
    from freecg_md.train.data import split_indices

    train(config_for(data_file, tmp_path / "run", max_epochs=1), progress=False)
    (tmp_path / "run" / "checkpoint.pt").unlink()
    config = config_for(data_file, tmp_path / "run", max_epochs=1, split_seed=7)
    train(config, resume=True, progress=False)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split == split_indices(40, config.val_fraction, config.test_fraction, 7)


def test_malformed_data_is_refused(tmp_path):
    structures = labelled_set(5)
    bare = structures[2].copy()  # no energy, no forces
    structures[2] = bare
    path = tmp_path / "bad.extxyz"
    write(path, structures)
    with pytest.raises(ValueError, match="bad.extxyz"):
        train(config_for(path, tmp_path / "run"), progress=False)


def test_unknown_element_in_data_is_named(tmp_path):
    structures = labelled_set(5)
    structures[1].numbers[0] = 26
    structures[1].calc = SinglePointCalculator(structures[1], energy=0.0,
                                               forces=np.zeros((6, 3)))
    path = tmp_path / "fe.extxyz"
    write(path, structures)
    config = config_for(path, tmp_path / "run", model={**TINY_MODEL, "species": [1, 6]})
    with pytest.raises(ValueError, match="Fe"):
        train(config, progress=False)


@pytest.mark.parametrize("bad, named", [
    (dict(batch_size=0), "batch_size=0: expected >= 1"),
    (dict(val_fraction=0.6, test_fraction=0.5), "< 1"),
    (dict(lr=-1.0), "lr"), (dict(data=[]), "data"),
    (dict(plateau_factor=1.5), "plateau_factor=1.5: expected between 0 and 1"),
    (dict(early_stopping_patience=0), "early_stopping_patience=0: expected >= 1"),
    (dict(max_structures=-5), "max_structures=-5"), (dict(seed=-1), "seed=-1"),
    (dict(num_threads=0), "num_threads=0"), (dict(dtype="float16"), "dtype='float16'"),
    (dict(energy_key="REF_energy"), "both label names or neither"),
    (dict(stage_two_epoch=3), "expected at least one of them"),
    (dict(stage_two_lr=1e-4), "need stage_two_epoch"), (dict(stage_two_epoch=0), "stage_two_epoch"),
    (dict(stage_two_epoch=2, stage_two_energy_weight=0.0, stage_two_force_weight=0.0),
     "stage 2's energy and force weights are both 0")])
def test_bad_config(tmp_path, bad, named):
    with pytest.raises(ValueError, match=named):
        TrainConfig(**{"data": ["x.extxyz"], "output_dir": str(tmp_path), **bad})


@pytest.mark.parametrize("bad, named", [
    (dict(batch_size=4.0), "batch_size=4.0: expected an integer"),
    (dict(batch_size=True), "batch_size=True: expected an integer"),
    (dict(lr="1e-3"), "lr='1e-3': expected a number"), (dict(compile="yes"), "compile")])
def test_config_values_of_the_wrong_type_are_named(tmp_path, bad, named):
    with pytest.raises(TypeError, match=named):
        TrainConfig(**{"data": ["x.extxyz"], "output_dir": str(tmp_path), **bad})


def test_a_split_that_leaves_nothing_to_train_on_is_refused():
    from freecg_md.train.data import split_indices

    with pytest.raises(ValueError, match="leaving none to train on"):
        split_indices(4, 0.5, 0.4, seed=0)
    assert len(split_indices(4, 0.25, 0.25, seed=0)["train"]) == 2


def test_resume_refuses_a_changed_config_and_allows_limits(data_file, tmp_path):
    train(config_for(data_file, tmp_path / "run", max_epochs=1), progress=False)
    for changed, named in ((dict(lr=1e-3), "lr: 0.003 -> 0.001"),
                           (dict(batch_size=8), "batch_size: 4 -> 8"),
                           (dict(seed=4), "seed: 3 -> 4")):
        with pytest.raises(ValueError, match=named):
            train(config_for(data_file, tmp_path / "run", max_epochs=2, **changed),
                  resume=True, progress=False)
    # Limits and how it runs may change; so may where the run and its data lie, together.
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "run").rename(moved / "run")
    data_file.rename(moved / data_file.name)
    metrics = train(config_for(moved / data_file.name, moved / "run", max_epochs=2,
                               checkpoint_every=3, early_stopping_patience=50),
                    resume=True, progress=False)
    assert metrics["epochs"] == 2


def test_a_non_finite_loss_stops_the_run_with_its_last_checkpoint(data_file, tmp_path,
                                                                 monkeypatch):
    from freecg_md.train import loop

    config = config_for(data_file, tmp_path / "run", max_epochs=2, checkpoint_every=3)
    real = loop.loss_fn
    calls = []

    def blows_up_at_the_fifth_step(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 5 else loss

    monkeypatch.setattr(loop, "loss_fn", blows_up_at_the_fifth_step)
    with pytest.raises(FloatingPointError, match="non-finite loss at optimiser step 4"):
        train(config, progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert json.loads(state["progress"])["step"] == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    monkeypatch.setattr(loop, "loss_fn", real)
    assert np.isfinite(train(config, resume=True, progress=False)["force_mae_eV_per_A"])


def test_early_stopping_waits_for_stage_two_and_a_longer_patience_resumes(data_file,
                                                                         tmp_path):
    # Steps too small to move a float32 weight: every epoch after the first is stale.
    stalled = dict(ema_decay=0.0, lr=1e-30, warmup_steps=0, early_stopping_patience=1)
    config = config_for(data_file, tmp_path / "run", max_epochs=6, stage_two_epoch=3,
                        stage_two_energy_weight=1.0, **stalled)
    train(config, progress=False)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[7] for row in rows] == ["1", "0", "0", "0"]
    # Stage one's stale epochs 1 and 2 did not stop it; stage two's first one did.
    longer = config_for(data_file, tmp_path / "run", max_epochs=6, stage_two_epoch=3,
                        stage_two_energy_weight=1.0, **{**stalled, "early_stopping_patience": 50})
    assert train(longer, resume=True, progress=False)["epochs"] == 6


def test_without_a_test_split_the_test_errors_are_none(data_file, tmp_path):
    config = config_for(data_file, tmp_path / "run", max_epochs=1, test_fraction=0.0)
    metrics = train(config, progress=False)
    assert metrics["n_test"] == 0 and metrics["force_mae_eV_per_A"] is None
    exported = export_model(config, tmp_path / "model.pt")["test_metrics"]
    assert exported["n_test"] == 0 and exported["force_mae_eV_per_A"] is None
    from freecg_md.train.__main__ import training_summary

    summary = training_summary(config.output_dir, metrics)
    assert "test set (0 structures)" in summary and "force MAE" not in summary


def test_a_stage_two_beyond_the_last_epoch_leaves_stage_one_the_last():
    config = TrainConfig(data=["x.extxyz"], output_dir="run", max_epochs=3, stage_two_epoch=3,
                         stage_two_energy_weight=5.0)
    assert config.loss_weights() == config.loss_weights(1)
    assert config.stage(config.max_epochs - 1) == 1


def test_resume_ignores_model_fields_the_record_does_not_know(data_file, tmp_path):
    from freecg_md.train.loop import check_resumable

    config = config_for(data_file, tmp_path / "run", max_epochs=1)
    train(config, progress=False)
    recorded = tmp_path / "run" / "config.json"
    record = json.loads(recorded.read_text())
    del record["train"]["model"]["num_basis"]  # as written before the field existed
    del record["train"]["checkpoint_every"]
    recorded.write_text(json.dumps(record))
    check_resumable(config, recorded)
    record["train"]["model"]["hidden"] = 32
    recorded.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="model"):
        check_resumable(config, recorded)


def test_stage_two_takes_its_weights_and_rate_from_its_epoch_on(data_file, tmp_path):
    stage_two = dict(stage_two_epoch=2, stage_two_energy_weight=20.0, stage_two_lr=1e-3)
    config = config_for(data_file, tmp_path / "run", max_epochs=4, **stage_two)
    assert [config.stage(epoch) for epoch in range(4)] == [1, 1, 2, 2]
    assert config.loss_weights(1) == (0.1, 0.9) and config.loss_weights() == (20.0, 0.9)
    assert config.learning_rate(1) == 3e-3 and config.learning_rate(2) == 1e-3
    metrics = train(config, progress=False)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    assert [float(row.split(",")[2]) for row in rows] == [3e-3, 3e-3, 1e-3, 1e-3]
    best = load_model(tmp_path / "run" / "best_model.pt")
    if best.metadata["epoch"] < 2:  # the stage-one best, scored again under stage two
        assert best.metadata["rescored_for_stage_two"]
    # The best model's validation loss and the test loss are stage two's.
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    from freecg_md.train.dataset_cache import load_training_structures
    structures, _ = load_training_structures(config)
    best = best.requires_grad_(False)
    for part, expected in (("val", best.metadata["val"]["loss"]), ("test", metrics["loss"])):
        chosen = [structures[i] for i in split[part]]
        stage_two_loss = evaluate_errors(best, chosen, config, torch.device("cpu"),
                                         torch.float32).summary()["loss"]
        stage_one_loss = evaluate_errors(best, chosen, config, torch.device("cpu"),
                                         torch.float32, config.loss_weights(1)).summary()["loss"]
        np.testing.assert_allclose(expected, stage_two_loss, rtol=1e-5)
        assert stage_two_loss > 1.2 * stage_one_loss  # the weights changed what it measures


def test_stage_two_starts_a_fresh_optimiser_with_its_own_warm_up(data_file, tmp_path):
    # 32 training structures in batches of 4: 8 steps an epoch; a warm-up longer than that.
    config = config_for(data_file, tmp_path / "run", max_epochs=3, warmup_steps=100,
                        stage_two_epoch=2, stage_two_energy_weight=5.0, stage_two_lr=1e-3)
    train(config, progress=False)
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    lrs = [float(row.split(",")[2]) for row in rows]
    np.testing.assert_allclose(lrs, [3e-3 * 8 / 100, 3e-3 * 16 / 100, 1e-3 * 8 / 100])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert steps == {8.0}  # AdamW's moments count stage two's steps only
    assert json.loads(state["progress"])["stage_start_step"] == 16


def test_resume_across_the_start_of_stage_two_equals_uninterrupted(data_file, tmp_path):
    stage_two = dict(stage_two_epoch=1, stage_two_energy_weight=3.0, stage_two_lr=1e-3)
    train(config_for(data_file, tmp_path / "whole", max_epochs=3, **stage_two), progress=False)
    train(config_for(data_file, tmp_path / "part", max_epochs=1, **stage_two), progress=False)
    # Stopped at the first step of stage two, then resumed to the end.
    assert train(config_for(data_file, tmp_path / "part", max_epochs=3, max_minutes=0.0,
                            **stage_two), resume=True, progress=False) == {}
    train(config_for(data_file, tmp_path / "part", max_epochs=3, **stage_two), resume=True,
          progress=False)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert json.loads(a["progress"])["stage"] == json.loads(b["progress"])["stage"] == 2
    with pytest.raises(ValueError, match="stage_two_epoch: 1 -> None"):
        train(config_for(data_file, tmp_path / "part", max_epochs=4), resume=True,
              progress=False)
    # The logs agree but for the wall-clock column.
    logs = [[row.split(",")[:-1] for row in (tmp_path / run / "log.csv").read_text().split()]
            for run in ("whole", "part")]
    assert logs[0] == logs[1] and len(logs[0]) == 4


def test_config_file_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps({"data": "d.extxyz", "output_dir": "out"}))
    config = TrainConfig.from_json(tmp_path / "cfg.json")
    assert config.data == [str(tmp_path / "d.extxyz")]
    assert config.output_dir == str(tmp_path / "out")


def test_command_line_max_epochs_overrides_the_config(data_file, tmp_path, capsys):
    from freecg_md.train.__main__ import main

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config_for(data_file, tmp_path / "cli",
                                                 max_epochs=50).to_dict()))
    assert main([str(config_path), "--max-epochs", "1", "--no-progress"]) == 0
    assert len((tmp_path / "cli" / "log.csv").read_text().splitlines()) == 2  # header + 1
    printed = capsys.readouterr().out
    assert "force_mae_eV_per_A" in printed
    # It ends by saying which file to load and what its metrics are, labelled.
    assert f"model to use:  {tmp_path / 'cli' / 'model.pt'}" in printed
    assert "force MAE" in printed and "eV/Å" in printed
    with pytest.raises(SystemExit):
        main([str(config_path), "--max-epochs", "0"])
    # A bad config file and a run that cannot go on end with one line naming the problem.
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(config_path.read_text()), "lr": -1}))
    with pytest.raises(SystemExit):
        main([str(bad)])
    assert "lr" in capsys.readouterr().err
    assert main([str(config_path), "--max-epochs", "2", "--no-progress"]) == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_fine_tuning_keeps_the_earlier_split_and_starts_from_its_weights(data_file, tmp_path):
    first = config_for(data_file, tmp_path / "first", max_epochs=2)
    train(first, progress=False)
    more = tmp_path / "more.extxyz"
    write(more, labelled_set(20, seed=100))
    tuned = config_for(data_file, tmp_path / "tuned", data=[str(data_file), str(more)],
                       model={}, init_from=str(tmp_path / "first"), max_epochs=1, lr=1e-3)

    from freecg_md.train.dataset_cache import load_training_structures
    from freecg_md.train.finetune import StartingPoint
    from freecg_md.train.loop import Trainer

    (tmp_path / "tuned").mkdir()
    start = StartingPoint.read(tuned.init_from)
    tuned.model = start.model_config(tuned.model)
    structures, species = load_training_structures(tuned)
    split = start.extend_split(tuned.data, structures, tuned)
    old = json.loads((tmp_path / "first" / "split.json").read_text())
    # Nothing the first run trained on is held out now, and the added 20 are split too.
    for part in ("train", "val", "test"):
        assert set(old[part]) == {i for i in split[part] if i < 40}
    added = {part: [i for i in split[part] if i >= 40] for part in split}
    assert sorted(sum(added.values(), [])) == list(range(40, 60))
    assert added["val"] and added["train"]
    # The starting weights and energy standardisation are the earlier best model's.
    trainer = Trainer(tuned, structures, split, species, initial_model=start.model)
    best = load_model(tmp_path / "first" / "best_model.pt").state_dict()
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, best[key], rtol=0, atol=0)

    metrics = train(tuned, progress=False)
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 60
    assert json.loads((tmp_path / "tuned" / "split.json").read_text()) == split
    report = export_model(TrainConfig(**json.loads(
        (tmp_path / "tuned" / "config.json").read_text())["train"]), tmp_path / "tuned.pt")
    assert report["training"]["initialised_from"]["epochs_finished"] == 2
    earlier, added = report["test_metrics_earlier_data"], report["test_metrics_added_data"]
    assert earlier["n_test"] + added["n_test"] == metrics["n_test"]
    assert earlier["n_test"] == len(old["test"])
    # The whole test set's errors are the two parts' together (each structure is evaluated
    # once), equal to scoring the whole set directly.
    exported = load_model(tmp_path / "tuned.pt").requires_grad_(False)
    direct = evaluate_errors(exported, [structures[i] for i in split["test"]], tuned,
                             torch.device("cpu"), torch.float32).summary()
    for key in ("energy_mae_eV", "energy_rmse_eV", "force_mae_eV_per_A",
                "force_rmse_eV_per_A"):
        assert report["test_metrics"][key] == pytest.approx(direct[key], rel=1e-5)
    assert report["test_metrics"]["energy_mae_eV"] == pytest.approx(
        (earlier["energy_mae_eV"] * earlier["n_test"] + added["energy_mae_eV"] * added["n_test"])
        / metrics["n_test"], rel=1e-9)


def test_fine_tuning_keeps_the_starting_weights_unless_an_epoch_beats_them(data_file,
                                                                         tmp_path):
    train(config_for(data_file, tmp_path / "first", max_epochs=2), progress=False)
    start = load_model(tmp_path / "first" / "best_model.pt").state_dict()
    # A learning rate far too large (but with finite losses): the epoch's weights are worse
    # than the start's.
    tuned = config_for(data_file, tmp_path / "tuned", model={}, ema_decay=0.0, lr=0.05,
                       warmup_steps=0, init_from=str(tmp_path / "first"), max_epochs=1)
    metrics = train(tuned, progress=False)
    log = (tmp_path / "tuned" / "log.csv").read_text().splitlines()
    assert len(log) == 2 and log[1].split(",")[7] == "0"  # the epoch is not best
    assert metrics["best_epoch"] == -1
    kept = load_model(tmp_path / "tuned" / "model.pt").state_dict()
    for key, value in kept.items():
        torch.testing.assert_close(value, start[key], rtol=0, atol=0)
    report = export_model(tuned, tmp_path / "tuned.pt")
    assert report["training"]["best_epoch"] == -1
    assert report["training"]["exported_weights"] == {"epoch": -1}


def test_export_of_the_latest_weights_takes_the_checkpoints_ema(data_file, tmp_path):
    for name, ema_decay, which in (("ema", 0.9, "ema"), ("raw", 0.0, "model")):
        # 32 training structures in batches of 4: 8 optimiser steps.
        config = config_for(data_file, tmp_path / name, max_epochs=1, ema_decay=ema_decay)
        train(config, progress=False)
        export_model(config, tmp_path / f"{name}.pt", latest=True)
        latest = load_model(tmp_path / f"{name}.pt")
        saved = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)[which]
        for key, value in latest.state_dict().items():
            torch.testing.assert_close(value, saved[key].to(value.dtype), rtol=0, atol=0)
        described = "EMA weights" if ema_decay else "(weights"
        assert f"{described} at optimiser step 8)" in latest.metadata["exported_from"]
        # The file says which weights it holds: the end of epoch 0, not its best epoch.
        assert latest.metadata["training"]["exported_weights"] == {
            "epoch": 1, "batch_in_epoch": 0, "optimizer_step": 8}
    with pytest.raises(ValueError, match="give one"):
        export_model(config, tmp_path / "x.pt", tmp_path / "raw" / "best_model.pt",
                     latest=True)
    (tmp_path / "raw" / "checkpoint.pt").unlink()
    with pytest.raises(FileNotFoundError, match="checkpoint.pt is missing"):
        export_model(config, tmp_path / "x.pt", latest=True)


def test_fine_tuning_refuses_other_data_or_architecture(data_file, tmp_path):
    train(config_for(data_file, tmp_path / "first", max_epochs=1), progress=False)
    other = tmp_path / "other.extxyz"
    write(other, labelled_set(10, seed=50))
    with pytest.raises(ValueError, match="must start with the data of init_from"):
        train(config_for(other, tmp_path / "a", model={}, init_from=str(tmp_path / "first")),
              progress=False)
    with pytest.raises(ValueError, match="model.hidden=32 differs"):
        train(config_for(data_file, tmp_path / "b", model={"hidden": 32},
                         init_from=str(tmp_path / "first")), progress=False)
    # Same file names, other structures: the earlier indices would point elsewhere.
    write(data_file, labelled_set(40, seed=7))
    with pytest.raises(ValueError, match="differ from those init_from"):
        train(config_for(data_file, tmp_path / "d", model={}, init_from=str(tmp_path / "first")),
              progress=False)
    with pytest.raises(FileNotFoundError, match="not a training run"):
        train(config_for(data_file, tmp_path / "c", model={},
                         init_from=str(tmp_path / "nothing")), progress=False)


def test_labels_under_other_names_train_when_the_keys_are_given(tmp_path):
    structures = labelled_set(12)
    for atoms in structures:
        atoms.info["REF_energy"] = atoms.get_potential_energy()
        atoms.arrays["REF_forces"] = atoms.get_forces().copy()
        atoms.calc = None
    path = tmp_path / "ref.extxyz"
    write(path, structures)
    with pytest.raises(ValueError, match=r"no energy label .*energy_key=.*'REF_energy'"):
        train(config_for(path, tmp_path / "plain"), progress=False)
    with pytest.raises(ValueError, match=r"no energy under info\['DFT_energy'\] \(energy_key\)"
                                         r"; its info has \[.*'REF_energy'"):
        train(config_for(path, tmp_path / "wrong", energy_key="DFT_energy",
                         forces_key="REF_forces"), progress=False)
    metrics = train(config_for(path, tmp_path / "run", energy_key="REF_energy",
                               forces_key="REF_forces", max_epochs=1), progress=False)
    assert np.isfinite(metrics["force_mae_eV_per_A"])


def test_the_default_warm_up_scales_with_a_small_data_set(data_file, tmp_path):
    from freecg_md.train.__main__ import main

    config = config_for(data_file, tmp_path / "run", warmup_steps=None, max_epochs=3)
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    assert main([str(tmp_path / "config.json"), "--no-progress"]) == 0
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header = log[0].split(",")
    lr = [float(row.split(",")[header.index("lr")]) for row in log[1:]]
    # 32 training structures in batches of 4: 8 steps an epoch, so the warm-up takes 16
    # steps and the third epoch runs at the full rate (the 1,000-step default never did).
    assert lr[2] == pytest.approx(3e-3)


def test_the_progress_bar_counts_epochs(data_file, tmp_path, capsys):
    train(config_for(data_file, tmp_path / "run", max_epochs=2), progress=True)
    shown = capsys.readouterr().err
    assert "2/2" in shown and "val force MAE" in shown


def test_fine_tuning_from_an_exported_model_file_keeps_its_split(data_file, tmp_path):
    first = config_for(data_file, tmp_path / "first", max_epochs=1)
    train(first, progress=False)
    export_model(first, tmp_path / "first.pt")
    more = tmp_path / "more.extxyz"
    write(more, labelled_set(20, seed=100))
    tuned = config_for(data_file, tmp_path / "tuned", data=[str(data_file), str(more)],
                       model={}, init_from=str(tmp_path / "first.pt"), max_epochs=1,
                       replay_fraction=0.5)
    metrics = train(tuned, progress=False)
    old = json.loads((tmp_path / "first" / "split.json").read_text())
    split = json.loads((tmp_path / "tuned" / "split.json").read_text())
    for part in ("train", "val", "test"):
        assert set(old[part]) == {i for i in split[part] if i < 40}
    # One epoch: half the earlier training structures and all the added ones.
    n_epoch = round(0.5 * len(old["train"])) + sum(i >= 40 for i in split["train"])
    log = (tmp_path / "tuned" / "log.csv").read_text().splitlines()
    assert int(log[1].split(",")[1]) == -(-n_epoch // 4)
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 60
    report = export_model(tuned, tmp_path / "tuned.pt")
    assert report["training"]["initialised_from"]["epochs_finished"] == 1
    # A file from elsewhere (other data) cannot be extended: its recorded fingerprint
    # decides, whatever the paths.
    other = tmp_path / "other.extxyz"
    write(other, labelled_set(50, seed=50))
    with pytest.raises(ValueError, match="first 40 structures of data differ"):
        train(config_for(other, tmp_path / "a", model={}, init_from=str(tmp_path / "first.pt")),
              progress=False)
    # The same data moved elsewhere (another checkout, another machine) can.
    moved = tmp_path / "elsewhere" / "data.extxyz"
    moved.parent.mkdir()
    data_file.rename(moved)
    assert train(config_for(moved, tmp_path / "moved", data=[str(moved), str(more)], model={},
                            init_from=str(tmp_path / "first.pt"), max_epochs=1),
                 progress=False)["n_test"] == metrics["n_test"]


def test_fine_tuning_checks_the_earlier_data_by_content_not_by_a_newer_cache(data_file,
                                                                            tmp_path):
    """A refused resume on changed data leaves a tensor cache of the new data in the
    earlier run: the fine-tune's check reads the run's recorded fingerprint, not that."""
    train(config_for(data_file, tmp_path / "first", max_epochs=1), progress=False)
    write(data_file, labelled_set(45, seed=7))
    with pytest.raises(ValueError, match="splits 40 structures"):
        train(config_for(data_file, tmp_path / "first", max_epochs=2), resume=True,
              progress=False)
    with pytest.raises(ValueError, match="first 40 structures of data differ"):
        train(config_for(data_file, tmp_path / "tuned", model={},
                         init_from=str(tmp_path / "first")), progress=False)


def test_replay_visits_every_added_structure_and_a_fresh_share_of_the_earlier():
    from freecg_md.train.loop import _epoch_order

    orders = [_epoch_order(50, seed=1, epoch=e, n_replayed=8, n_earlier=40) for e in range(3)]
    for order in orders:
        assert len(order) == 18 and len(set(order)) == 18
        assert set(range(40, 50)) <= set(order)
        assert sum(i < 40 for i in order) == 8
    assert {i for i in orders[0] if i < 40} != {i for i in orders[1] if i < 40}
    # Without replay the order is a permutation of everything, as before.
    assert sorted(_epoch_order(50, seed=1, epoch=0)) == list(range(50))
    assert _epoch_order(50, 1, 0, n_replayed=40, n_earlier=40) == _epoch_order(50, 1, 0)


def test_error_metrics_report_the_signed_energy_bias_per_atom():
    from freecg_md.train.data import collate, structures_from_atoms
    from freecg_md.train.loss import ErrorMetrics

    structures = structures_from_atoms(labelled_set(3), cutoff=4.0)
    batch = collate(structures)
    metrics = ErrorMetrics()
    # Every prediction 0.06 eV too low on 6-atom molecules: -0.01 eV per atom, each.
    metrics.update(batch.energy - 0.06, batch.forces, batch, loss=0.0)
    summary = metrics.summary()
    assert summary["energy_bias_per_atom_eV"] == pytest.approx(-0.01)
    assert summary["energy_mae_per_atom_eV"] == pytest.approx(0.01)
    assert summary["force_mae_eV_per_A"] == 0.0


def test_monitoring_the_force_mae_picks_the_best_epochs_by_it(data_file, tmp_path):
    """monitor="force_mae": an epoch is best when its validation force MAE beats every
    earlier one, whatever its loss; a run that monitored the loss may switch on resume,
    its best model scored again by the force MAE."""
    import csv

    def rows(run):
        with open(tmp_path / run / "log.csv", newline="") as handle:
            return list(csv.DictReader(handle))

    train(config_for(data_file, tmp_path / "mae", max_epochs=5, monitor="force_mae"),
          progress=False)
    best_so_far = np.inf
    for row in rows("mae"):
        mae = float(row["val_force_mae_eV_per_A"])
        assert row["best"] == str(int(mae < best_so_far))
        best_so_far = min(best_so_far, mae)
    # The switch alone (no epoch left to run): the best model is scored again by the new
    # figure, which the stale count and the plateau schedule now start from.
    train(config_for(data_file, tmp_path / "switch", max_epochs=2), progress=False)
    epoch = load_model(tmp_path / "switch" / "best_model.pt").metadata["epoch"]
    train(config_for(data_file, tmp_path / "switch", max_epochs=2, monitor="force_mae"),
          resume=True, progress=False)
    rescored = load_model(tmp_path / "switch" / "best_model.pt").metadata
    state = torch.load(tmp_path / "switch" / "checkpoint.pt", weights_only=True)
    progress = json.loads(state["progress"])
    assert rescored["rescored_for_monitor"] == "force_mae" and rescored["epoch"] == epoch
    assert progress["monitor"] == "force_mae" and progress["stale_epochs"] == 0
    assert progress["best_val"] == rescored["val"]["force_mae_eV_per_A"]
    assert state["plateau"]["best"] == progress["best_val"]
    assert state["plateau"]["num_bad_epochs"] == 0


def test_a_monitor_switch_before_the_first_epoch_ends_just_takes_effect(data_file, tmp_path):
    # Stopped at the time limit within epoch 0: a checkpoint, no best model yet.
    assert train(config_for(data_file, tmp_path / "run", max_epochs=1, max_minutes=0.0),
                 progress=False) == {}
    assert not (tmp_path / "run" / "best_model.pt").exists()
    train(config_for(data_file, tmp_path / "run", max_epochs=1, monitor="force_mae"),
          resume=True, progress=False)
    progress = json.loads(torch.load(tmp_path / "run" / "checkpoint.pt",
                                     weights_only=True)["progress"])
    assert progress["monitor"] == "force_mae" and progress["best_epoch"] == 0


def test_an_element_without_a_training_structure_is_named_in_a_warning():
    from freecg_md.train import fit_energy_standardisation
    from freecg_md.train.data import structures_from_atoms

    structures = structures_from_atoms(labelled_set(4), cutoff=4.0)  # H and C only
    with pytest.warns(UserWarning, match=r"element\(s\) S of the model's species appear in no"):
        references, _, _ = fit_energy_standardisation(structures, (1, 6, 16))
    assert references[16] == 0.0


def test_the_validation_loss_is_over_all_structures_whatever_the_batches():
    """With its weights the loss is loss_fn over every structure at once: the same for
    batches of 4 (the last holding one) and of 9; the mean of the batches' losses, kept for
    runs begun before, weighs the lone structure as much as a batch of four."""
    from freecg_md.nn import FreeCG, FreeCGConfig
    from freecg_md.train.data import collate, structures_from_atoms
    from freecg_md.train.loop import evaluate_errors
    from freecg_md.train.loss import loss_fn

    structures = structures_from_atoms(labelled_set(9), cutoff=TINY_MODEL["cutoff"])
    torch.manual_seed(0)
    model = FreeCG(FreeCGConfig(species=(1, 6), **TINY_MODEL)).double()
    losses = {}
    for batch_size in (4, 9):
        config = TrainConfig(data=["unused"], output_dir="unused", batch_size=batch_size)
        for exact in (True, False):
            losses[batch_size, exact] = evaluate_errors(
                model, structures, config, torch.device("cpu"), torch.float64,
                exact_loss=exact).summary()["loss"]
    batch = collate(structures).to(torch.device("cpu"), torch.float64)
    out = model.energy_and_forces(batch.numbers, batch.positions, batch.edge_index,
                                  batch.shifts, batch.batch, batch.num_graphs)
    whole = float(loss_fn(out["energy"].detach(), out["forces"].detach(), batch,
                          *config.loss_weights()))
    for key in ((4, True), (9, True), (9, False)):
        assert losses[key] == pytest.approx(whole, rel=1e-9)
    assert losses[4, False] != pytest.approx(whole, rel=1e-3)


def test_a_run_begun_before_the_exact_loss_keeps_its_batch_mean(data_file, tmp_path):
    config = config_for(data_file, tmp_path / "run", max_epochs=1)
    train(config, progress=False)
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    progress = json.loads(state["progress"])
    assert progress.pop("exact_val_loss") is True  # a new run scores exactly
    state["progress"] = json.dumps(progress)  # as a checkpoint written before it was
    torch.save(state, path)
    train(config_for(data_file, tmp_path / "run", max_epochs=2), resume=True, progress=False)
    resumed = torch.load(path, weights_only=True)
    assert json.loads(resumed["progress"])["exact_val_loss"] is False


def test_predictions_in_batches_cover_every_structure_in_order():
    """predict_in_batches gives each batch (a short last one included) with the model's
    energies on it, equal to the structures' one-by-one energies; a batch size below one is
    refused."""
    from freecg_md.nn import FreeCG, FreeCGConfig
    from freecg_md.train.data import structures_from_atoms
    from freecg_md.train.loop import predict_in_batches

    structures = structures_from_atoms(labelled_set(5), cutoff=TINY_MODEL["cutoff"])
    torch.manual_seed(0)
    model = FreeCG(FreeCGConfig(species=(1, 6), **TINY_MODEL)).double()
    batches = list(predict_in_batches(model, structures, 2, "cpu", torch.float64))
    assert [batch.num_graphs for batch, _ in batches] == [2, 2, 1]
    energies = torch.cat([out["energy"].detach() for _, out in batches])
    one_by_one = torch.cat([out["energy"].detach() for _, out in
                            predict_in_batches(model, structures, 1, "cpu", torch.float64)])
    torch.testing.assert_close(energies, one_by_one)
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        predict_in_batches(model, structures, 0, "cpu", torch.float64)


def test_scoring_runs_frozen_and_restores_each_parameters_flag(monkeypatch):
    """evaluate_errors scores with every parameter frozen (the inference path), gives the
    errors of the trainable path to float32 rounding, and leaves each parameter's
    requires_grad as it found it, a frozen one included."""
    from freecg_md.nn import FreeCG, FreeCGConfig
    from freecg_md.train import loop
    from freecg_md.train.data import structures_from_atoms
    from freecg_md.train.loss import ErrorMetrics, loss_fn

    structures = structures_from_atoms(labelled_set(6), cutoff=TINY_MODEL["cutoff"])
    torch.manual_seed(0)
    model = FreeCG(FreeCGConfig(species=(1, 6), **TINY_MODEL))
    first = next(model.parameters())
    first.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    config = TrainConfig(data=["unused"], output_dir="unused", batch_size=4)

    trainable = ErrorMetrics(weights=config.loss_weights())
    for batch, out in loop.predict_in_batches(model, structures, 4, "cpu", torch.float32):
        loss = loss_fn(out["energy"], out["forces"], batch, *config.loss_weights())
        trainable.update(out["energy"], out["forces"], batch, loss.item())

    seen = []
    original = loop.predict_in_batches

    def recording(model, *args):
        seen.append(any(p.requires_grad for p in model.parameters()))
        return original(model, *args)

    monkeypatch.setattr(loop, "predict_in_batches", recording)
    frozen = loop.evaluate_errors(model, structures, config, torch.device("cpu"),
                                  torch.float32)
    assert seen == [False]
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not first.requires_grad and any(flags)
    for key, value in trainable.summary().items():
        assert frozen.summary()[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


def test_fine_tuning_a_run_that_used_the_first_structures_only(data_file, tmp_path):
    # The earlier run's cache holds all 40 structures of its file, of which it used 30.
    train(config_for(data_file, tmp_path / "first", max_epochs=1, max_structures=30),
          progress=False)
    tuned = config_for(data_file, tmp_path / "tuned", model={}, max_epochs=1,
                       init_from=str(tmp_path / "first"))
    metrics = train(tuned, progress=False)
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 40
