"""Hardware targets: bit widths, resource limits and per-operation energy/time, read from YAML.

Nothing about a chip is hard-coded in snnc: every number comes from `targets/*.yaml` (or a
user-written file given by path), validated here so that a bad file names the offending field.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import yaml

from snnc.errors import TargetError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"

_INT = (int,)
_NUM = (int, float)
# Every integer width of `arithmetic`, with the range snnc's executors handle (64-bit registers):
# a value outside it is a broken file, not a chip.
ARITHMETIC_RANGES = {
    "weight_bits": (2, 16), "activation_shift": (0, 16), "state_bits": (8, 32), "decay_bits": (1, 16),
    "bias_mant_bits": (2, 32), "bias_exp_bits": (0, 5), "threshold_mant_bits": (1, 32),
    "threshold_shift": (0, 16), "input_bits": (1, 16),
}
CHOICES = {"current_overflow": ("wrap", "saturate"), "voltage_overflow": ("wrap", "saturate"),
           "fire_rule": (">", ">=")}
MAX_FILE_BYTES = 1 << 20   # a target description is a few kilobytes
LIMIT_FIELDS = ("cores", "neurons_per_core", "synaptic_memory_bits_per_core",
                "fan_in_axons_per_core", "fan_out_per_core")
OPERATION_FIELDS = ("synaptic_op", "neuron_update_active", "neuron_update_inactive",
                    "spike_within_tile", "hop_east_west", "hop_north_south")
TIME_FIELDS = OPERATION_FIELDS + ("barrier_min", "barrier_max")
ENERGY_TABLE_FIELDS = ("mac", "ac")


@dataclass(frozen=True)
class Target:
    """A validated chip description; `arithmetic` is copied into every network quantized for it."""

    name: str
    description: str
    arithmetic: dict
    limits: dict
    energy_pj: dict
    time_ns: dict
    static_power_mw: float
    source_path: str

    @property
    def chip_grid(self) -> tuple[int, int]:
        """The system's chips as a 2-D mesh [rows, columns]; (1, 1) for a single chip."""
        rows, cols = self.limits.get("chips", [1, 1])
        return int(rows), int(cols)


@dataclass(frozen=True)
class EnergyTable:
    """A per-operation energy convention (E_MAC, E_AC) such as 45 nm CMOS."""

    name: str
    description: str
    energy_pj: dict


def _resolve(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        if not candidate.is_file():
            raise TargetError(f"target file {name_or_path} does not exist")
        return candidate
    path = TARGETS_DIR / f"{name_or_path}.yaml"
    if name_or_path not in available() or not path.is_file():  # a name never leaves targets/
        raise TargetError(f"unknown target '{name_or_path}' (known: {', '.join(available())})")
    return path


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without anchors and aliases: an alias bomb expands a kilobyte file into
    gigabytes, and no target description needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "anchors and aliases are not allowed in a target "
                                              "file", event.start_mark)
        return super().compose_node(parent, index)


def _text(path: Path) -> str:
    """The file's text: UTF-8 and at most MAX_FILE_BYTES."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise TargetError(f"{path}: a target file is at most {MAX_FILE_BYTES} bytes, this one has "
                              f"{path.stat().st_size}")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TargetError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise TargetError(f"{path}: cannot be read ({error.strerror or error})") from None


def _read(path: Path) -> dict:
    text = _text(path)
    try:
        doc = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as error:
        raise TargetError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(doc, dict):
        raise TargetError(f"{path}: a target file must be a mapping")
    return doc


def _section(doc: dict, path: Path, key: str) -> dict:
    section = doc.get(key)
    if not isinstance(section, dict):
        raise TargetError(f"{path}: field '{key}' is missing or not a mapping")
    return section


def _number(section: dict, path: Path, where: str, key: str, kinds=_NUM, positive=False):
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if kinds == _INT else "a number"
        raise TargetError(f"{path}: field '{where}.{key}' must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise TargetError(f"{path}: field '{where}.{key}' must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise TargetError(f"{path}: field '{where}.{key}' must be positive, got {value!r}")
    return value


def is_integer(value) -> bool:
    """An integer (Python or numpy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def arithmetic_problem(arithmetic: dict) -> str | None:
    """What is wrong with a target's (or a fixed network's) `arithmetic` section, naming the field;
    None when every width is an integer in ARITHMETIC_RANGES and every mode a known one."""
    if not isinstance(arithmetic, dict):
        return "field 'arithmetic' must be a mapping"
    for key, (low, high) in ARITHMETIC_RANGES.items():
        value = arithmetic.get(key)
        if not is_integer(value):
            return f"field 'arithmetic.{key}' must be an integer, got {value!r}"
        if not low <= value <= high:
            return f"field 'arithmetic.{key}' must be between {low} and {high}, got {value}"
    for key, choices in CHOICES.items():
        if arithmetic.get(key) not in choices:
            return f"field 'arithmetic.{key}' must be one of {choices}, got {arithmetic.get(key)!r}"
    modes = arithmetic.get("reset_modes")
    if not isinstance(modes, list) or not modes or not all(mode in ("hard", "soft") for mode in modes):
        return f"field 'arithmetic.reset_modes' must list hard and/or soft, got {modes!r}"
    for key in ("activation_shift", "threshold_shift"):
        if arithmetic[key] >= arithmetic["state_bits"]:
            return (f"field 'arithmetic.{key}' ({arithmetic[key]}) must be below state_bits "
                    f"({arithmetic['state_bits']})")
    return None


def _validate_arithmetic(arithmetic: dict, path: Path) -> None:
    problem = arithmetic_problem(arithmetic)
    if problem:
        raise TargetError(f"{path}: {problem}")


def load_target(name_or_path: str) -> Target:
    """Load a chip target by name (targets/NAME.yaml) or by path to a YAML file."""
    path = _resolve(name_or_path)
    doc = _read(path)
    if "arithmetic" not in doc and "energy_pj" in doc:
        raise TargetError(f"{path}: '{doc.get('name')}' is an energy table, not a chip target")
    arithmetic = _section(doc, path, "arithmetic")
    _validate_arithmetic(arithmetic, path)
    limits = _section(doc, path, "limits")
    for key in LIMIT_FIELDS:
        _number(limits, path, "limits", key, _INT, positive=True)
    if _number(limits, path, "limits", "max_delay", _INT) < 0:
        raise TargetError(f"{path}: field 'limits.max_delay' must be >= 0 (time steps), got {limits['max_delay']}")
    # absent (a file written before multi-spike populations, an export's copy of one): binary spikes
    limits.setdefault("graded_spikes", False)
    if not isinstance(limits["graded_spikes"], bool):
        raise TargetError(f"{path}: field 'limits.graded_spikes' must be true or false (whether a spike can "
                          f"carry a count), got {limits['graded_spikes']!r}")
    if "graded_spike_bits" in limits:
        _number(limits, path, "limits", "graded_spike_bits", _INT, positive=True)
    mesh = limits.get("mesh")
    if not (isinstance(mesh, list) and len(mesh) == 2 and all(isinstance(v, int) and v > 0 for v in mesh)):
        raise TargetError(f"{path}: field 'limits.mesh' must be [rows, columns]")
    if limits.get("conv_weights", "per_connection") not in ("per_connection", "shared"):
        raise TargetError(f"{path}: field 'limits.conv_weights' must be per_connection or shared, got "
                          f"{limits['conv_weights']!r}")
    if limits.get("conv_weights") == "shared":
        _number(limits, path, "limits", "conv_axon_bits", _INT, positive=True)
    chips = limits.get("chips", [1, 1])
    if not (isinstance(chips, list) and len(chips) == 2 and all(is_integer(v) and v > 0 for v in chips)):
        raise TargetError(f"{path}: field 'limits.chips' must be [rows, columns] of chips")
    energy = _section(doc, path, "energy_pj")
    time = _section(doc, path, "time_ns")
    # a system of several chips also prices a message crossing a chip-to-chip link
    link = ("hop_chip",) if chips[0] * chips[1] > 1 else ()
    for key in OPERATION_FIELDS + link:
        _number(energy, path, "energy_pj", key, positive=True)
    for key in TIME_FIELDS + link:
        _number(time, path, "time_ns", key, positive=True)
    for where, section in (("energy_pj", energy), ("time_ns", time)):
        if not isinstance(section.get("source"), str):
            raise TargetError(f"{path}: field '{where}.source' must say where the figures come from")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise TargetError(f"{path}: field 'name' is missing")
    static_power = _number(doc, path, "", "static_power_mw")
    return Target(name=name, description=str(doc.get("description", "")), arithmetic=dict(arithmetic),
                  limits=dict(limits), energy_pj=dict(energy), time_ns=dict(time),
                  static_power_mw=float(static_power), source_path=str(path))


def load_energy_table(name_or_path: str = "cmos45nm") -> EnergyTable:
    """Load an E_MAC/E_AC energy convention such as targets/cmos45nm.yaml."""
    path = _resolve(name_or_path)
    doc = _read(path)
    energy = _section(doc, path, "energy_pj")
    for key in ENERGY_TABLE_FIELDS:
        _number(energy, path, "energy_pj", key, positive=True)
    return EnergyTable(name=str(doc.get("name", path.stem)), description=str(doc.get("description", "")),
                       energy_pj=dict(energy))


def available() -> list[str]:
    """Names of the shipped YAML files (chip targets and energy tables)."""
    return sorted(path.stem for path in TARGETS_DIR.glob("*.yaml"))


def describe(name: str) -> str:
    """The YAML text of a shipped target or table, for `snnc targets show`."""
    return _text(_resolve(name))
