"""The IR: validation, and a save/load round trip that is exact and byte-reproducible."""
import json

import numpy as np
import pytest

import netfactory
from snnc import compiler, ir
from snnc.errors import InputError
from snnc.targets import load_target


@pytest.fixture(scope="module")
def compiled():
    return compiler.compile_network(netfactory.random_network(netfactory.recipe("mnist_srif")),
                                    load_target("loihi2"))


def assert_same_network(a: ir.Network, b: ir.Network):
    assert (a.name, a.T, a.readout, a.arithmetic, a.encoding) == (b.name, b.T, b.readout, b.arithmetic, b.encoding)
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for x, y in zip(a.nodes, b.nodes):
        assert (x.op, x.inputs, tuple(x.shape), x.attrs) == (y.op, y.inputs, tuple(y.shape), y.attrs)
        for field in ("weight", "bias", "scale"):
            vx, vy = getattr(x, field), getattr(y, field)
            assert (vx is None) == (vy is None)
            if vx is not None:
                assert vx.dtype == vy.dtype and np.array_equal(vx, vy)
        assert (x.neuron is None) == (y.neuron is None)
        if x.neuron is not None:
            for key, value in vars(x.neuron).items():
                other = getattr(y.neuron, key)
                if isinstance(value, np.ndarray):
                    assert value.dtype == other.dtype and np.array_equal(value, other)
                else:
                    assert value == other


@pytest.mark.parametrize("stage", ["float_net", "folded", "fixed"])
def test_round_trip_is_identical(tmp_path, compiled, stage):
    net = getattr(compiled, stage)
    ir.save(net, tmp_path)
    assert_same_network(net, ir.load(tmp_path))


def test_saved_bytes_are_reproducible(tmp_path, compiled):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ir.save(compiled.fixed, tmp_path / "a")
    ir.save(compiled.fixed.copy(), tmp_path / "b")
    for name in ("network.json", "network.npz"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_on_disk_form_is_versioned_and_readable(tmp_path, compiled):
    ir.save(compiled.fixed, tmp_path)
    doc = json.loads((tmp_path / "network.json").read_text())
    assert doc["format"] == "snnc-ir" and doc["format_version"] == ir.FORMAT_VERSION
    doc["format_version"] = ir.FORMAT_VERSION + 1
    (tmp_path / "network.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="version"):
        ir.load(tmp_path)


def test_validate_names_the_broken_node(compiled):
    net = compiled.fixed.copy()
    net.node("conv2").neuron.threshold = net.node("conv2").neuron.threshold[:1]
    with pytest.raises(InputError, match="conv2"):
        net.validate()
    net = compiled.float_net.copy()
    net.node("fc1").weight[0, 0] = np.nan
    with pytest.raises(InputError, match="fc1.*NaN"):
        net.validate()
    net = compiled.float_net.copy()
    net.node("conv2").inputs = ["readout"]
    with pytest.raises(InputError, match="not an earlier node"):
        net.validate()
