"""snnc's NIR import against the producers' OWN simulations (docs/interop.md, "Producer semantics").

Each case builds a small network with a producer's layers (tests/producer_nets.py), runs it with
the producer's own code in float64 on 16 real digits (pixel/255 at every step, T = 16), exports it
with the producer's own NIR exporter, loads it with `load_nir(path, T=16, semantics=<producer>,
assume=...)` and requires snnc's float reference to give every spiking layer's spikes, and the
output, exactly. A case in producer_nets.REFUSED (what snnc's neuron cannot express: snnTorch's
Synaptic with reset 'zero', several spikes per step) must instead be refused with an InputError of
one line naming a neuron and the reason. A case whose exporter cannot write the network (a known
exporter bug) is skipped with the reason; nothing else is. Each case takes well under a second:
none is marked slow.

Rockpool is the exception to float64: its modules stay float32 (`.double()` breaks LIFTorch's
F.linear on its float32 spike state), so its simulation runs in float32 against snnc's float64,
with parameters float32 represents exactly (tau_mem = 1/64, tau_syn = 1/128, dt = 1/1024; the
weights are float32). That agrees spike for spike on these digits, but it is not float64's margin.

Producer versions (pinned in pyproject.toml's test extra; sinabs and rockpool installed with
--no-deps by scripts/setup.sh): snntorch 1.0.0, norse 1.1.0, sinabs 3.1.3, spikingjelly 0.0.0.0.14
(no NIR exporter in that release: producer_nets.spikingjelly_export writes what its development
exporter writes), rockpool 3.1.0, nir 1.0.8, nirtorch 2.6.
"""
import functools
import warnings

import nir
import numpy as np
import pytest

import producer_nets as nets
from snnc import execute
from snnc.errors import InputError
from snnc.frontends.nir_frontend import load_nir

# The one exporter failure known per producer and architecture: the case is skipped when (and only
# when) the export raises this error.
KNOWN_EXPORTER_BUGS = {
    ("norse", "conv"): (AttributeError, "Norse 1.1.0's to_nir maps AvgPool2d and Flatten to no node "
                                        "(norse/torch/utils/export_nir.py, _extract_norse_module returns "
                                        "None), which nir.write cannot write"),
}

# The variant whose semantics NIR's literal reading gets wrong, and the producer's step dt (given
# to the wrong reading too, so that only the rules differ).
WRONG_SEMANTICS = {"snntorch": ("leaky-subtract", 1e-4), "norse": ("iaf", 1e-3),
                   "sinabs": ("iaf-multi", 1.0), "spikingjelly": ("if-soft", 1e-4),
                   "rockpool": ("cuba-single", nets.ROCKPOOL_DT)}


@functools.lru_cache(maxsize=None)
def _pixels() -> np.ndarray:
    return nets.digits()


@functools.lru_cache(maxsize=None)
def _reference(case: tuple[str, str, str]) -> dict[str, np.ndarray]:
    """The producer's own spikes for a case: {layer key: [T, B, ...]}."""
    producer, arch, _ = case
    frames = nets.frames(_pixels(), nets.input_shape(arch))
    return nets.PRODUCERS[producer].simulate(nets.build(*case), frames, nets.T)


def _export(case: tuple[str, str, str], directory) -> str:
    producer, arch, _ = case
    path = directory / f"{'_'.join(case)}.nir"
    try:
        nets.PRODUCERS[producer].export(nets.build(*case), path, nets.input_shape(arch))
    except Exception as error:   # noqa: BLE001 - only the documented failure is skipped
        known = KNOWN_EXPORTER_BUGS.get((producer, arch))
        if known and isinstance(error, known[0]):
            pytest.skip(f"{known[1]} ({type(error).__name__}: {error})")
        raise
    return str(path)


def _run_snnc(path: str, semantics: str, assume, dt=None):
    net = load_nir(path, T=nets.T, semantics=semantics, assume=assume, dt=dt)
    pixels = _pixels().reshape((len(_pixels()),) + tuple(net.input_node.shape))
    return net, execute.run(net, execute.encode(net, pixels))


def _snnc_layer(path: str, spikes: dict, nir_key: str) -> str:
    """snnc's name for the spiking layer of NIR neuron `nir_key`: the neuron's key, else the nearest
    node upstream of it that snnc names a spiking layer (the import merges neurons into the synapse
    feeding them, through a pool where it folds one)."""
    edges = nir.read(path, type_check=False).edges
    frontier = [nir_key]
    while frontier:
        key = frontier.pop(0)
        if key in spikes:
            return key
        frontier += [src for src, dst in edges if dst == key]
    raise AssertionError(f"no snnc spiking layer for NIR neuron '{nir_key}' (snnc has {sorted(spikes)})")


def _nir_neuron_key(path: str, producer: str, layer: str) -> str:
    """The NIR key of the neuron recorded as `layer`: a recurrent layer (snnTorch's RLeaky) is a
    subgraph whose neuron is `<layer>.lif`."""
    key = nets.PRODUCERS[producer].nir_key(layer)
    nodes = nir.read(path, type_check=False).nodes
    return key if key in nodes else f"{key}.lif"


def _differences(case, path: str, trace) -> dict[str, int]:
    """Differing spike counts per layer (snnc vs the producer), the output's readout included."""
    producer = case[0]
    reference = _reference(case)
    counts = {}
    for layer, expected in reference.items():
        name = _snnc_layer(path, trace.spikes, _nir_neuron_key(path, producer, layer))
        got = trace.spikes[name].astype(np.float64)
        assert got.shape == expected.shape, f"layer {layer} ({name}): shape {got.shape} vs {expected.shape}"
        counts[layer] = int(np.abs(got - expected).sum())
    output = reference[list(reference)[-1]]
    counts["readout"] = int(np.abs(trace.readout_steps - np.cumsum(output, axis=0)).sum())
    return counts


def _assert_refused(case, path: str, reason: str) -> None:
    """snnc refuses the graph with one line naming one of its neurons and saying why."""
    producer, _, variant = case
    with pytest.raises(InputError) as refused:
        _run_snnc(path, producer, nets.assumptions(producer, variant))
    message = str(refused.value)
    neurons = [_nir_neuron_key(path, producer, layer) for layer in _reference(case)]
    assert "\n" not in message, f"not one line: {message!r}"
    assert any(f"NIR node '{key}'" in message for key in neurons), f"no neuron of {neurons} named: {message}"
    assert reason in message, f"the reason ({reason!r}) is not given: {message}"


@pytest.mark.parametrize("case", nets.cases(), ids="-".join)
def test_snnc_reproduces_the_producers_simulation(case, tmp_path):
    """Spike for spike, or (nets.REFUSED) the refusal of what snnc's neuron cannot express."""
    producer, _, variant = case
    reference = _reference(case)
    for layer, spikes in reference.items():
        assert 0.02 < (spikes > 0).mean() < 0.6, f"layer {layer} fires at {(spikes > 0).mean():.3f}"
    if "multi" in variant:
        assert max(s.max() for s in reference.values()) > 1, "no step with several spikes: multi is untested"
    path = _export(case, tmp_path)
    reason = nets.refusal(producer, variant)
    if reason is not None:
        _assert_refused(case, path, reason)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, trace = _run_snnc(path, producer, nets.assumptions(producer, variant))
    differences = _differences(case, path, trace)
    assert not any(differences.values()), f"differing spikes per layer: {differences}"


def test_rockpool_dt_is_recovered_from_r(tmp_path):
    """Rockpool does not write its step: the rockpool profile recovers it from r = tau e^(-dt/tau)/dt
    (float32 in the file) as the simplest number within float32's precision, 1/1024 exactly here,
    so that each population's membrane decay is 1 - exp(-dt/tau_mem) with the true dt."""
    case = ("rockpool", "dense", "cuba-single")
    path = _export(case, tmp_path)
    net = load_nir(path, T=nets.T, semantics="rockpool", assume=nets.assumptions("rockpool", "cuba-single"))
    populations = net.metadata["nir"]["populations"]
    assert sorted(populations) == sorted(_reference(case))
    tau_mem = float(np.float32(nets.ROCKPOOL_TAU_MEM))
    for key, name in populations.items():
        assert net.node(name).neuron.v_decay == 1.0 - np.exp(-nets.ROCKPOOL_DT / tau_mem), key


@pytest.mark.parametrize("producer", sorted(WRONG_SEMANTICS))
def test_literal_nir_reading_differs_from_the_producer(producer, tmp_path):
    """The same graph read with NIR's literal semantics does not reproduce the producer: the
    profiles are what makes the agreement above."""
    variant, dt = WRONG_SEMANTICS[producer]
    case = (producer, "dense", variant)
    path = _export(case, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, trace = _run_snnc(path, "nir", None, dt=dt)
        except InputError as error:
            pytest.fail(f"the literal reading should load, and differ: {error}")
    assert sum(_differences(case, path, trace).values()) > 0
