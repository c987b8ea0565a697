"""Model packages, their schema, the registry and `unimiss models`; packages here hold random weights and never ship."""
from __future__ import annotations

import argparse
import copy
import json
import os
import pickle
import zipfile

import pytest
import torch

from unimiss.models import MiTSegmentation
from unimiss.zoo import (ModelPackage, ModelPackageError, default_model, export_model, import_model, list_models,
                         registry, remove_model, resolve_model, save_package, user_models_dir)
from unimiss.zoo.cli import add_models_parser

PATCH = {2: (64, 64), 3: (32, 64, 64)}


def make_meta(name="demo", version="1.0.0", dimension=3, **changes):
    meta = {
        "schema_version": 1,
        "name": name,
        "version": version,
        "task": "segmentation",
        "description": "Random weights for tests.",
        "dimension": dimension,
        "modality": "CT" if dimension == 3 else "DX",
        "labels": [
            {"value": 1, "name": "liver", "color": [221, 130, 101],
             "terminology": {"category": ["SCT", "123037004", "Anatomical Structure"],
                             "type": ["SCT", "10200004", "Liver"]}},
            {"value": 2, "name": "spleen", "color": [157, 108, 162]},
        ],
        "preprocessing": {
            "spacing": [1.5, 1.5, 3.0][:dimension],
            "orientation": "LPS" if dimension == 3 else None,
            "intensity": {"method": "ct", "clip": [-1000, 1000], "scale": [0.0, 1000.0]},
        },
        "network": {"architecture": "MiT", "config": "compact", "in_channels": 1, "num_classes": 3},
        "patch_size": list(PATCH[dimension]),
        "provenance": {"training_data": "none (random weights)", "command": "pytest", "date": "2026-11-26",
                       "seed": 0, "base_model": None},
        "metrics": {"val_dice": {"liver": 0.5}},
    }
    meta.update(changes)
    return meta


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    return {d: MiTSegmentation("compact", 3, d, in_channels=1, patch_size=PATCH[d]).eval() for d in (2, 3)}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty UNIMISS_HOME and an empty built-in folder."""
    monkeypatch.setenv("UNIMISS_HOME", str(tmp_path / "home"))
    builtin = tmp_path / "builtin"
    builtin.mkdir()
    monkeypatch.setattr(registry, "builtin_models_dir", lambda: builtin)
    return tmp_path


def package(networks, folder, dimension=3, dtype="float32", **meta):
    return save_package(folder, make_meta(dimension=dimension, **meta), networks[dimension].state_dict(), dtype)


def outputs(net, dimension):
    torch.manual_seed(1)
    with torch.inference_mode():
        return net(torch.randn(1, 1, *PATCH[dimension]))


def edit_meta(folder, change):
    meta = json.loads((folder / "model.json").read_text())
    change(meta)
    (folder / "model.json").write_text(json.dumps(meta))


# Package files --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dimension", [2, 3])
def test_saved_package_rebuilds_the_same_network(networks, tmp_path, dimension):
    pkg = package(networks, tmp_path / "pkg", dimension)
    assert sorted(p.name for p in pkg.root.iterdir()) == ["model.json", "weights.safetensors"]
    assert pkg.reference == "demo@1.0.0" and pkg.dimension == dimension and pkg.patch_size == PATCH[dimension]
    assert [(label.value, label.name) for label in pkg.labels] == [(1, "liver"), (2, "spleen")]
    assert pkg.labels[0].terminology_string().startswith("Segmentation category")
    loaded = ModelPackage.load(tmp_path / "pkg").build_network()
    assert not loaded.training and all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(outputs(loaded, dimension), outputs(networks[dimension], dimension), rtol=0, atol=1e-6)


def test_float16_package_is_half_the_size_and_close(networks, tmp_path):
    full = package(networks, tmp_path / "fp32", 3)
    half = package(networks, tmp_path / "fp16", 3, dtype="float16")
    assert half.meta["weights"]["dtype"] == "float16"
    assert half.weights_path.stat().st_size < 0.6 * full.weights_path.stat().st_size
    expected = outputs(networks[3], 3)
    got = outputs(half.build_network(), 3)
    assert (got - expected).abs().max() <= 1e-2 * expected.abs().max()


def test_save_refuses_weights_that_do_not_fit_and_a_package_whose_model_json_disagrees(networks, tmp_path):
    with pytest.raises(ModelPackageError, match=r"do not fit.*wrong shape \(file vs network\): aux_heads.0.weight \[3, 128, 1, 1, 1\] vs \[4, "):
        save_package(tmp_path / "bad", make_meta(network={"architecture": "MiT", "config": "compact",
                                                          "in_channels": 1, "num_classes": 4}),
                     networks[3].state_dict())
    assert not (tmp_path / "bad").exists()
    pkg = package(networks, tmp_path / "pkg")
    edit_meta(pkg.root, lambda m: m["network"].update(num_classes=5))
    with pytest.raises(ModelPackageError, match=r"pkg: the weights do not fit .*aux_heads"):
        ModelPackage.load(pkg.root).build_network()


def test_zip_loads_with_files_at_the_top_or_in_one_folder(networks, tmp_path):
    pkg = package(networks, tmp_path / "pkg", 2)
    top = export_model(pkg.root, tmp_path / "top.zip")
    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as archive:
        for f in pkg.root.iterdir():
            archive.write(f, f"demo-1.0.0/{f.name}")
    expected = outputs(networks[2], 2)
    for path in (top, nested):
        loaded = ModelPackage.load(path)
        assert loaded.source == path and loaded.meta == pkg.meta and not loaded.is_builtin
        torch.testing.assert_close(outputs(loaded.build_network(), 2), expected, rtol=0, atol=1e-6)


def test_describe_names_the_model_labels_data_and_metrics(networks, tmp_path):
    text = package(networks, tmp_path / "pkg").describe()
    assert text.splitlines()[0] == "demo@1.0.0 (user): Random weights for tests."
    for part in ("3D CT", "1 liver, 2 spleen", "none (random weights)", "val_dice", "spacing [1.5, 1.5, 3.0]"):
        assert part in text


def _drop_labels(m):
    del m["labels"]


def _duplicate_value(m):
    m["labels"][1]["value"] = 1


def _spacing_2d(m):
    m["preprocessing"]["spacing"] = [1.0, 1.0]


def _bad_name(m):
    m["name"] = "Demo Model"


def _value_too_large(m):
    m["labels"][1]["value"] = 3


def _patch_not_multiple(m):
    m["patch_size"] = [30, 64, 64]


def _unknown_config(m):
    m["network"]["config"] = "huge"


def _bad_intensity(m):
    m["preprocessing"]["intensity"] = {"method": "ct", "clip": [-1000, 1000]}


def _not_below_in_3d(m):
    m["postprocessing"] = {"not_below": {"liver": ["spleen"]}}


def _join_unknown_class(m):
    m["postprocessing"] = {"largest_component": True, "join_gaps_mm": {"aorta": 20}}


def _largest_of_unknown_class(m):
    m["postprocessing"] = {"largest_component": ["liver", "pancreas"]}


def _join_negative_gap(m):
    m["postprocessing"] = {"largest_component": True, "join_gaps_mm": {"liver": -5}}


@pytest.mark.parametrize("change, field", [
    (_drop_labels, "labels: is required but missing"),
    (_duplicate_value, "labels[1].value: 1 is used by more than one label"),
    (_spacing_2d, "preprocessing.spacing: has 2 values; a 3D model needs 3"),
    (_bad_name, "name: 'Demo Model' is not a valid name"),
    (_value_too_large, "labels[1].value: 3 is not below network.num_classes"),
    (_patch_not_multiple, "patch_size:"),
    (_unknown_config, "network.config: unknown MiT config 'huge'"),
    (_bad_intensity, "preprocessing.intensity.scale: is required but missing"),
    (_not_below_in_3d, "postprocessing.not_below: applies to 2D models only"),
    (_join_unknown_class, "postprocessing.join_gaps_mm: 'aorta' is not one of the model's labels"),
    (_join_negative_gap, "postprocessing.join_gaps_mm.liver:"),
    (_largest_of_unknown_class, "postprocessing.largest_component: 'pancreas' is not one of the model's labels"),
])
def test_schema_errors_are_one_line_naming_the_package_and_field(networks, tmp_path, change, field):
    meta = make_meta()
    change(meta)
    with pytest.raises(ModelPackageError) as error:
        save_package(tmp_path / "new", meta, networks[3].state_dict())
    assert field in str(error.value) and "\n" not in str(error.value)
    # The same mistake in an existing package names its folder.
    pkg = package(networks, tmp_path / "pkg")
    edit_meta(pkg.root, change)
    with pytest.raises(ModelPackageError) as error:
        ModelPackage.load(pkg.root)
    assert str(error.value).startswith(f"{pkg.root}: model.json: {field}") and "\n" not in str(error.value)


def test_tampered_weights_fail_the_sha256_check(networks, home):
    pkg = package(networks, home / "pkg")
    data = bytearray(pkg.weights_path.read_bytes())
    data[-1] ^= 0xFF
    pkg.weights_path.write_bytes(bytes(data))
    for attempt in (lambda: ModelPackage.load(pkg.root).build_network(), lambda: import_model(pkg.root)):
        with pytest.raises(ModelPackageError, match=r"demo@1\.0\.0 .*does not match the sha256"):
            attempt()
    assert not user_models_dir().exists() or not any(user_models_dir().iterdir())


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickles_are_refused_without_being_executed(networks, home):
    live = home / "payload-works"
    pickle.loads(pickle.dumps(_Hostile(live)))  # the payload does run when unpickled...
    assert live.exists()
    marker = home / "pwned"
    payload = pickle.dumps(_Hostile(marker))
    (home / "model.pth").write_bytes(payload)
    torch.save({"state_dict": _Hostile(marker)}, home / "checkpoint.pth")  # a zip archive holding a pickle
    (home / "evil.zip").write_bytes((home / "checkpoint.pth").read_bytes())
    for path in ("model.pth", "checkpoint.pth", "evil.zip"):
        for attempt in (resolve_model, import_model):
            with pytest.raises(ModelPackageError, match="is not a model package"):
                attempt(home / path)
    pkg = package(networks, home / "pkg")
    pkg.weights_path.write_bytes(payload)
    edit_meta(pkg.root, lambda m: m["weights"].update(sha256=__import__("hashlib").sha256(payload).hexdigest()))
    for attempt in (lambda: ModelPackage.load(pkg.root).build_network(), lambda: import_model(pkg.root)):
        with pytest.raises(ModelPackageError, match="not a valid safetensors file"):
            attempt()
    assert not marker.exists()  # ...but never here


# Registry -------------------------------------------------------------------------------------------------------

def test_user_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIMISS_HOME", str(tmp_path / "u"))
    assert user_models_dir() == tmp_path / "u" / "models"
    monkeypatch.delenv("UNIMISS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_models_dir() == tmp_path / "xdg" / "unimiss" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    if os.name != "nt":
        monkeypatch.setenv("HOME", str(tmp_path))
        assert user_models_dir() == tmp_path / ".local" / "share" / "unimiss" / "models"


def test_resolve_by_name_version_and_path(networks, home):
    for version in ("1.0.0", "1.10.0", "1.9.0", "1.10.0-rc.1"):
        import_model(package(networks, home / "src" / version, version=version).root)
    import_model(package(networks, home / "src" / "flat", 2, name="flat").root)
    assert resolve_model("demo").version == "1.10.0"
    assert resolve_model("demo@1.9.0").version == "1.9.0"
    assert resolve_model(home / "src" / "flat").source == home / "src" / "flat"
    assert resolve_model(str(user_models_dir() / "flat-1.0.0")).name == "flat"
    assert [p.reference for p in list_models()] == [
        "demo@1.0.0", "demo@1.9.0", "demo@1.10.0-rc.1", "demo@1.10.0", "flat@1.0.0"]
    with pytest.raises(ModelPackageError, match=r"^unknown model 'nope'; installed: demo@1\.0\.0, .*flat@1\.0\.0$"):
        resolve_model("nope")
    with pytest.raises(ModelPackageError, match="unknown model 'demo@2.0.0'"):
        resolve_model("demo@2.0.0")
    with pytest.raises(ModelPackageError, match="no such model package"):
        resolve_model(home / "missing.zip")


def test_a_user_package_never_shadows_a_builtin_and_builtins_cannot_be_removed(networks, home):
    builtin = registry.builtin_models_dir()
    package(networks, builtin / "demo-1.0.0", default=True)
    assert [(p.reference, p.is_builtin) for p in list_models()] == [("demo@1.0.0", True)]
    with pytest.raises(ModelPackageError, match="demo@1.0.0 is a built-in model and cannot be removed"):
        remove_model("demo")
    with pytest.raises(ModelPackageError, match="built-in model and cannot be removed"):
        remove_model(builtin / "demo-1.0.0")
    assert (builtin / "demo-1.0.0" / "model.json").is_file()
    # Importing a package with a built-in's name and version is refused ...
    src = package(networks, home / "src", description="mine")
    with pytest.raises(ModelPackageError, match=r"demo@1\.0\.0 is the name and version of a built-in model"):
        import_model(src.root)
    assert not (user_models_dir() / "demo-1.0.0").exists()
    # ... and one copied there by hand is ignored with a warning: the built-in is what runs.
    package(networks, user_models_dir() / "demo-1.0.0", description="mine")
    with pytest.warns(UserWarning, match=r"ignoring the user model demo@1\.0\.0 .* a built-in model has the same"):
        assert [p.is_builtin for p in list_models()] == [True]
    with pytest.warns(UserWarning):
        assert resolve_model("demo").is_builtin and resolve_model("demo").meta["description"] != "mine"
    # Under another version it is installed beside the built-in, and each says which copy it is.
    other = import_model(package(networks, home / "src2", version="1.0.1", description="mine").root)
    with pytest.warns(UserWarning):
        assert resolve_model("demo@1.0.1").source == other.root and not other.is_builtin
    assert remove_model("demo@1.0.0") == user_models_dir() / "demo-1.0.0"  # the ignored copy can be removed


def test_default_model(networks, home):
    with pytest.raises(ModelPackageError, match=r"^no default model for 3D images is installed; pass --model$"):
        default_model(3)
    package(networks, registry.builtin_models_dir() / "ct", default=True)
    package(networks, registry.builtin_models_dir() / "dx", 2, name="dx")
    assert default_model(3).name == "demo"
    with pytest.raises(ModelPackageError, match="no default model for 2D images"):
        default_model(2)


def test_import_export_remove_round_trip(networks, home):
    src = package(networks, home / "src", 2, dtype="float16")
    installed = import_model(src.root)
    assert installed.root == user_models_dir() / "demo-1.0.0" and installed.meta == src.meta
    with pytest.raises(ModelPackageError, match="already installed .* --replace"):
        import_model(src.root)
    zipped = export_model("demo", home)
    assert zipped == home / "demo-1.0.0.zip"
    with zipfile.ZipFile(zipped) as archive:
        assert sorted(archive.namelist()) == ["model.json", "weights.safetensors"]
    assert remove_model("demo") == installed.root and not installed.root.exists()
    with pytest.raises(ModelPackageError, match="unknown model 'demo'; installed: none"):
        resolve_model("demo")
    again = import_model(zipped)
    torch.testing.assert_close(outputs(again.build_network(), 2), outputs(src.build_network(), 2), rtol=0, atol=0)
    assert import_model(zipped, replace=True).root == installed.root
    assert sorted(p.name for p in user_models_dir().iterdir()) == ["demo-1.0.0"]  # no staging left behind
    with pytest.raises(ModelPackageError, match="must be a .zip"):
        export_model("demo", home / "demo.tar")


# Command line ---------------------------------------------------------------------------------------------------

def run_cli(*argv):
    parser = argparse.ArgumentParser(prog="unimiss")
    add_models_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["models", *map(str, argv)])
    return args.func(args)


def test_models_commands(networks, home, capsys):
    assert run_cli("list") == 0
    assert "no models installed" in capsys.readouterr().out
    package(networks, registry.builtin_models_dir() / "ct", default=True)
    src = package(networks, home / "src", 2, name="dx-lungs")
    assert run_cli("import", src.root) == 0
    assert "installed dx-lungs@1.0.0" in capsys.readouterr().out
    assert run_cli("list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["REFERENCE", "DIM", "MODALITY", "LABELS", "SOURCE"]
    assert lines[1].split() == ["demo@1.0.0", "3D", "CT", "2", "built-in,", "default"]
    assert lines[2].split() == ["dx-lungs@1.0.0", "2D", "DX", "2", "user"]
    assert run_cli("info", "dx-lungs") == 0
    assert capsys.readouterr().out.startswith("dx-lungs@1.0.0 (user)")
    assert run_cli("export", "dx-lungs", home / "out.zip") == 0 and (home / "out.zip").is_file()
    with pytest.raises(ModelPackageError, match="already installed"):
        run_cli("import", home / "out.zip")
    assert run_cli("import", home / "out.zip", "--replace") == 0
    assert run_cli("remove", "dx-lungs@1.0.0") == 0
    with pytest.raises(ModelPackageError, match="built-in model and cannot be removed"):
        run_cli("remove", "demo")
    capsys.readouterr()
    assert [p.reference for p in list_models()] == ["demo@1.0.0"]


def test_meta_passed_to_save_package_is_not_modified(networks, tmp_path):
    meta = make_meta()
    before = copy.deepcopy(meta)
    save_package(tmp_path / "pkg", meta, networks[3])  # the network itself is accepted too
    assert meta == before


def test_a_broken_user_package_is_skipped_with_a_warning(networks, home):
    import_model(package(networks, home / "src").root)
    broken = user_models_dir() / "broken-1.0.0"
    broken.mkdir()
    (broken / "model.json").write_text("{not json")
    with pytest.warns(UserWarning, match=r"broken-1\.0\.0: model\.json is not valid JSON"):
        assert [p.reference for p in list_models()] == ["demo@1.0.0"]


def test_unimiss_main_reports_package_errors_on_one_line(home, capsys):
    from unimiss.cli import main

    assert main(["models", "info", "nope"]) == 2
    assert capsys.readouterr().err == "unimiss: error: unknown model 'nope'; installed: none\n"
