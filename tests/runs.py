"""Reading run directories in tests."""
from pathlib import Path

from fedfit.results import read_rounds


def rounds(run: str | Path) -> list[dict]:
    """The round records of a run directory."""
    return read_rounds(run)


def timeless(obj, wire: bool = True):
    """Records without wall-clock fields ("seconds"), and without wire sizes unless ``wire`` (Flower's
    own engine draws node ids whose serialized length varies, a byte or two per message); the simulated
    clock's times (``sim_*``) come from the wire sizes and go with them."""
    if isinstance(obj, dict):
        return {k: timeless(v, wire) for k, v in obj.items()
                if "seconds" not in k and (wire or ("wire" not in k and not k.startswith("sim_")))}
    if isinstance(obj, list):
        return [timeless(v, wire) for v in obj]
    return obj


def unresumed(rows: list[dict]) -> list[dict]:
    """Records without what resuming cost (``resume_bytes_wire``: an uninterrupted run has none), to compare a
    resumed run with the uninterrupted one."""
    return [{k: v for k, v in r.items() if k != "resume_bytes_wire"} for r in rows]
