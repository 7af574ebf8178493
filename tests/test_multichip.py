"""Systems of several chips: the shipped system targets, placement across chips (a layer on as few
chips as it can be, consecutive layers on neighbouring chips), and the chip-to-chip links in the
cycle simulator's counts, its time and the energy."""
import dataclasses

import numpy as np
import pytest
import yaml
from test_mapping import mlp

from snnc import execute
from snnc.backends import cycle
from snnc.errors import DesignRuleError
from snnc.passes import mapping as mp
from snnc.targets import TARGETS_DIR, load_target

SYSTEMS = {"loihi2-kapoho-point": ("loihi2", 8), "loihi2-hala-point": ("loihi2", 1152),
           "loihi1-pohoiki-springs": ("loihi1", 768)}


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_a_system_is_its_chip_times_a_chip_grid(name):
    base, chips = SYSTEMS[name]
    system, chip = load_target(name), load_target(base)
    rows, cols = system.chip_grid
    assert rows * cols == chips and chip.chip_grid == (1, 1)
    assert system.arithmetic == chip.arithmetic
    assert {k: v for k, v in system.limits.items() if k != "chips"} == chip.limits
    for section in ("energy_pj", "time_ns"):
        mine, theirs = getattr(system, section), getattr(chip, section)
        assert {k: v for k, v in mine.items() if k not in ("hop_chip", "source")} == \
            {k: v for k, v in theirs.items() if k != "source"}
        assert mine["hop_chip"] > 0 and mine["source"].startswith(theirs["source"]) and "hop_chip" in mine["source"]
    text = (TARGETS_DIR / f"{name}.yaml").read_text()
    assert text.count("ASSUMPTION") >= 3   # the chip grid and both link figures say so


def test_a_system_without_link_figures_is_refused(tmp_path):
    doc = yaml.safe_load((TARGETS_DIR / "loihi2-kapoho-point.yaml").read_text())
    del doc["time_ns"]["hop_chip"]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(Exception, match=r"time_ns\.hop_chip"):
        load_target(str(tmp_path / "t.yaml"))


def test_chips_in_serpentine_order_each_in_its_own_order():
    order = mp.core_positions((2, 2), (2, 2), chips=(2, 2))
    chip = [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert order == ([(r, c) for r, c in chip] + [(r, c + 2) for r, c in chip]            # chips (0,0), (0,1)
                     + [(r + 2, c + 2) for r, c in chip] + [(r + 2, c) for r, c in chip])  # then (1,1), (1,0)
    assert mp.core_positions((2, 2), (2, 2), cores=3) == chip[:3]


@pytest.mark.parametrize("layers, chips, slots", [
    ([3, 2], 2, [0, 4]),        # 2 cores fit on the next chip: one chip, not two
    ([2, 2], 2, [0, 2]),        # fits where the last layer ended
    ([3, 6], 3, [0, 4]),        # 6 cores: two chips from a chip's start, three from core 3
    ([4, 4], 2, [0, 4]),
    ([3, 4, 1], 2, [0, 3, 7]),  # moving on would need a third chip: every layer follows the last
])
def test_a_layer_starts_a_chip_when_that_spans_fewer_chips(layers, chips, slots):
    assert mp.first_slots(layers, 4, chips) == slots


def _system(chips):
    """A toy system: chips of 4 cores (2 x 2 mesh, one tile), 2 neurons a core."""
    system = load_target("loihi2-kapoho-point")
    limits = dict(system.limits, chips=list(chips), cores=4, mesh=[2, 2], tile=[2, 2], neurons_per_core=2)
    return dataclasses.replace(system, limits=limits)


def test_placement_counts_and_prices_the_chip_to_chip_links():
    net = mlp(hidden=8, classes=2)     # fc: 4 cores (a chip), readout: 1 core on the next chip
    target = _system((1, 3))
    mapping = mp.map_to_cores(net, target)
    assert [core["chip"] for core in mapping.cores] == [[0, 0]] * 4 + [[0, 1]]
    assert [entry["chips"] for entry in mapping.layers] == [1, 1]
    assert (mapping.totals["chips_used"], mapping.totals["chips_available"]) == (2, 3)
    assert "1x3 chips" in mp.format_mapping(mapping) and " chips " in mp.format_mapping(mapping).splitlines()[1]
    inputs = np.random.default_rng(0).integers(0, 256, (net.T, 6, 1, 4, 4))
    trace, counts = cycle.simulate(net, mapping, target, inputs)
    reference = execute.run(net, inputs)
    assert np.array_equal(trace.spikes["fc"], reference.spikes["fc"])
    fc, port = counts.layers["fc"], counts.layers["input"]
    # every fc spike reaches the readout's one core, one chip east: one message, one link each
    assert fc["messages"] == fc["spikes"] > 0 and fc["spike_across_chips"] == fc["hop_chip"] == fc["messages"]
    assert port["messages"] > 0 and port["hop_chip"] == port["spike_across_chips"] == 0   # the port is on chip 0
    assert cycle.energy_counts(counts, per_sample=False)["fc"]["hop_chip"] == fc["hop_chip"]
    one_chip = dataclasses.replace(target, limits=dict(target.limits, chips=[1, 1], cores=5, mesh=[1, 5], tile=[1, 5]))
    _, alone = cycle.simulate(net, mp.map_to_cores(net, one_chip), one_chip, inputs)
    # the barrier goes out to the farthest chip in use and back: 2 links' time more per step
    assert counts.barrier_ns == pytest.approx(alone.barrier_ns + 2 * target.time_ns["hop_chip"])


def test_a_network_larger_than_the_system_names_its_chips():
    net = mlp(hidden=16, classes=2)    # fc: 8 cores, readout: 1
    with pytest.raises(DesignRuleError, match=r"needs 9 cores \(3 chips of 4 as placed\), the target has 8 on 2 "
                                              r"chips \(largest layers: 'fc' 8, 'readout' 1\)"):
        mp.map_to_cores(net, _system((1, 2)))
