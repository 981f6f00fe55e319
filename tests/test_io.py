"""Model files: round trip, safety, and a clear error for every kind of bad file."""

import json
import pickle

import pytest
import torch

from freecg_md import FORMAT_VERSION, ModelFileError, load_model, read_model_file, save_model
from tests.conftest import full_edges, random_molecule, small_model


def energy(model, atoms):
    pos = torch.as_tensor(atoms.positions, dtype=next(model.parameters()).dtype)
    return model(torch.as_tensor(atoms.numbers), pos, full_edges(len(atoms))).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_keeps_config_weights_standardisation_and_metadata(tmp_path, dtype):
    model = small_model(dtype, use_group_cg=False)
    model.set_energy_standardisation({1: -10.5, 6: -1020.25}, scale=0.7, shift=-0.1)
    path = save_model(model, tmp_path / "model.pt", metadata={"data": "toy", "mae": 0.1})
    loaded = load_model(path)
    assert loaded.config == model.config
    assert next(loaded.parameters()).dtype == dtype
    assert not loaded.training
    assert loaded.metadata == {"data": "toy", "mae": 0.1}
    atoms = random_molecule(7, seed=1)
    assert energy(loaded, atoms) == energy(model, atoms)
    content = read_model_file(path)
    assert content["format_version"] == FORMAT_VERSION
    assert set(content["versions"]) == {"freecg_md", "torch", "e3nn"}
    assert content["units"]["energy"] == "eV"
    # Saved again without metadata, a loaded model keeps its own (its training domain, for
    # one, on which the calculator's checks rest); an explicit {} clears it.
    assert load_model(save_model(loaded, tmp_path / "again.pt")).metadata == loaded.metadata
    assert load_model(save_model(loaded, tmp_path / "bare.pt", metadata={})).metadata == {}


def test_file_is_plain_data_loadable_with_weights_only(tmp_path):
    path = save_model(small_model(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert json.loads(payload["config"])["hidden"] == 32


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_model(tmp_path / "nothere.pt")


def test_truncated_file(tmp_path):
    path = save_model(small_model(), tmp_path / "model.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or not a torch file"):
        load_model(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(ModelFileError, match="notes.pt"):
        load_model(path)


@pytest.mark.parametrize("content", ['{"model": "chignolin"}', "", "\x80\x04 a legacy pickle"])
def test_json_empty_and_legacy_files_get_our_message_not_torchs(tmp_path, content):
    path = tmp_path / "model.json"
    path.write_text(content)
    with pytest.raises(ModelFileError, match="is not a torch file") as refused:
        load_model(path)
    assert "weights_only" not in str(refused.value)


def test_a_directory_is_named_as_one(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory"):
        load_model(tmp_path)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(ModelFileError, match="not a FreeCG-MD model"):
        load_model(path)


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran on load",))


def test_pickled_objects_are_refused_without_running_code(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "freecg-md-model", "payload": _Exploit()}, path)
    with pytest.raises(ModelFileError, match="safe load refuses") as refused:
        load_model(path)
    assert "code ran on load" not in capsys.readouterr().out
    assert "weights_only" not in str(refused.value)  # no advice to load it unsafely
    whole = tmp_path / "whole.pt"
    torch.save(small_model(), whole, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(ModelFileError, match="safe load refuses"):
        load_model(whole)


def test_newer_format_version(tmp_path):
    path = save_model(small_model(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1}"):
        load_model(path)


def test_state_dict_not_matching_config(tmp_path):
    path = save_model(small_model(), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["config"])
    config["num_layers"] += 1
    payload["config"] = json.dumps(config)
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="does not match its config"):
        load_model(path)


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        save_model(small_model(), tmp_path / "m.pt", metadata={"x": object()})
    assert not (tmp_path / "m.pt").exists()


def test_shipped_models_are_found_from_the_package():
    from freecg_md import shipped_model

    path = shipped_model("chignolin")
    assert path.is_file() and path.parent.name == "models" and "freecg_md" in path.parts
    assert load_model(path).config.hidden > 0
    assert shipped_model("chignolin_visnet").is_file()
    with pytest.raises(ValueError, match="no shipped model 'water'; the package ships "
                                         "'chignolin'"):
        shipped_model("water")


def test_the_repository_model_paths_are_the_shipped_files():
    from pathlib import Path

    from freecg_md.io import SHIPPED_MODELS, shipped_model

    repo_models = Path(__file__).resolve().parent.parent / "models"
    for name in SHIPPED_MODELS:
        # models/NAME.pt must be the package's file, not a copy that can drift from it.
        assert (repo_models / f"{name}.pt").resolve() == shipped_model(name).resolve()


def test_the_authors_settings_round_trip_through_a_file(tmp_path):
    """Every choice of the config is saved with the model and computes the same after
    loading."""
    from freecg_md import FreeCG, FreeCGConfig

    torch.manual_seed(0)
    model = FreeCG(FreeCGConfig.reference(hidden=32, num_layers=2, num_heads=4, num_groups=4,
                                          enhancer="max")).double()
    path = save_model(model, tmp_path / "authors.pt")
    loaded = load_model(path).double()
    assert loaded.config == model.config and loaded.config.self_loops
    atoms = random_molecule(9, seed=1)
    args = (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions),
            full_edges(len(atoms)))
    torch.testing.assert_close(loaded(*args), model(*args), rtol=0, atol=1e-12)


def test_fingerprint_of_default_choices_matches_a_file_written_without_them(tmp_path):
    """A file written before the config had its choices, and one written now with the
    choices at those files' values, compute the same function: same fingerprint. Another
    choice changes it."""
    from freecg_md.io import model_fingerprint
    from freecg_md.nn.model import LEGACY_CHOICES

    model = small_model()
    now = save_model(model, tmp_path / "now.pt")
    raw = torch.load(now, weights_only=True)
    config = json.loads(raw["config"])

    def written(name, changed):
        path = tmp_path / name
        torch.save({**raw, "config": json.dumps(changed)}, path)
        return model_fingerprint(path)

    old = {k: v for k, v in config.items() if k not in LEGACY_CHOICES}
    assert written("old.pt", old) == model_fingerprint(now)
    assert written("other.pt", {**config, "edge_update": "dot"}) != model_fingerprint(now)


def test_a_file_without_the_choices_loads_as_it_was_written(tmp_path):
    """A file that predates the config's choices computes what they were then
    (LEGACY_CHOICES), whatever today's defaults; how its weights were initialised does not
    enter its fingerprint."""
    from freecg_md.io import model_fingerprint
    from freecg_md.nn.model import LEGACY_CHOICES

    path = save_model(small_model(), tmp_path / "model.pt")
    raw = torch.load(path, weights_only=True)
    config = json.loads(raw["config"])
    old = {k: v for k, v in config.items() if k not in LEGACY_CHOICES}
    torch.save({**raw, "config": json.dumps(old)}, tmp_path / "old.pt")
    loaded = load_model(tmp_path / "old.pt")
    for name, value in LEGACY_CHOICES.items():
        assert getattr(loaded.config, name) == value
    torch.save({**raw, "config": json.dumps({**config, "init": "reference"})},
               tmp_path / "init.pt")
    assert model_fingerprint(tmp_path / "init.pt") == model_fingerprint(path)
