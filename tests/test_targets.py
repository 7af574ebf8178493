"""Targets: shipped files validate, bad files name the field, the CLI lists and shows them."""
import subprocess
import sys

import pytest
import yaml

from snnc.errors import TargetError
from snnc.targets import TARGETS_DIR, available, load_energy_table, load_target


def test_shipped_targets_load():
    assert {"loihi1", "loihi2", "cmos45nm"} <= set(available())
    loihi1, loihi2 = load_target("loihi1"), load_target("loihi2")
    assert loihi1.arithmetic["fire_rule"] == ">" and loihi1.arithmetic["reset_modes"] == ["hard"]
    assert loihi2.arithmetic["fire_rule"] == ">=" and "soft" in loihi2.arithmetic["reset_modes"]
    assert loihi1.energy_pj["synaptic_op"] == 23.6
    assert "ASSUMPTION" in loihi2.energy_pj["source"]
    table = load_energy_table("cmos45nm")
    assert (table.energy_pj["mac"], table.energy_pj["ac"]) == (4.6, 0.9)


def _write_variant(tmp_path, change):
    doc = yaml.safe_load((TARGETS_DIR / "loihi2.yaml").read_text())
    change(doc)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("change, field", [
    (lambda d: d["arithmetic"].pop("weight_bits"), "arithmetic.weight_bits"),
    (lambda d: d["arithmetic"].update(fire_rule="=>"), "arithmetic.fire_rule"),
    (lambda d: d["limits"].update(neurons_per_core=-3), "limits.neurons_per_core"),
    (lambda d: d["energy_pj"].update(synaptic_op="cheap"), "energy_pj.synaptic_op"),
    (lambda d: d.pop("time_ns"), "time_ns"),
    (lambda d: d["limits"].update(mesh=[4]), "limits.mesh"),
])
def test_bad_target_names_the_field(tmp_path, change, field):
    with pytest.raises(TargetError, match=field.replace(".", r"\.")):
        load_target(_write_variant(tmp_path, change))


def test_user_target_file_and_unknown_name(tmp_path):
    path = _write_variant(tmp_path, lambda d: d["limits"].update(cores=2))
    assert load_target(path).limits["cores"] == 2
    with pytest.raises(TargetError, match="unknown target 'loihi9'"):
        load_target("loihi9")
    (tmp_path / "broken.yaml").write_text("arithmetic: [unclosed")
    with pytest.raises(TargetError, match="not valid YAML"):
        load_target(str(tmp_path / "broken.yaml"))


def test_cli_lists_and_shows_targets():
    snnc = [sys.executable, "-m", "snnc.cli"]
    listing = subprocess.run(snnc + ["targets"], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["cmos45nm", "loihi1", "loihi1-pohoiki-springs", "loihi2", "loihi2-hala-point",
                                      "loihi2-kapoho-point"]      # the files in targets/
    shown = subprocess.run(snnc + ["targets", "show", "loihi1"], capture_output=True, text=True, check=True)
    assert "Davies" in shown.stdout and "synaptic_op: 23.6" in shown.stdout
    missing = subprocess.run(snnc + ["targets", "show", "nope"], capture_output=True, text=True)
    assert missing.returncode == 4 and missing.stderr.startswith("error: unknown target")
    assert "Traceback" not in missing.stderr
