"""Options of the simulated clock (``fedfit.clock``): devices, links, availability, over-selection and
deadlines (bytes as metered, compute as images x seconds per image; never wall time)."""
from fedfit.options.spec import Option

GROUP = "simulated clock (fedfit/clock.py: bytes as metered, compute as images x seconds per image; never wall time)"

OPTIONS = (
    Option("devices", "mobile",
           "mobile: seeded log-normal device profiles | uniform: every client alike | PATH.csv: a "
           "trace (client, speed, down_mbps, up_mbps, latency_ms[, online intervals])"),
    Option("down_mbps", 0.0,
           "every client's downlink, Mbit/s (0 = from devices)", ge=0, hint="0: from devices", unit="Mbit/s"),
    Option("up_mbps", 0.0,
           "every client's uplink, Mbit/s (0 = from devices)", ge=0, hint="0: from devices", unit="Mbit/s"),
    Option("latency_ms", -1.0,
           "every client's latency, ms (-1 = from devices)",
           ge=0, special=(-1,), hint="-1: from devices", unit="ms"),
    Option("train_s_per_image", 0.0,
           "seconds per trained image on a speed-1 device (0 = the reference machine's, from fedfit "
           "bench, scaled by pixels; bench --out reports yours as clock_calibration)",
           ge=0, hint="0: the reference machine's", unit="seconds"),
    Option("availability", "always",
           "always | diurnal: each client online in a seeded nightly window of its local time",
           choices=("always", "diurnal")),
    Option("over_select", 0,
           "sample clients_per_round + this many; the first clients_per_round replies are kept",
           ge=0, unit="clients"),
    Option("deadline_s", 0.0,
           "simulated seconds a round waits for replies (0 = no deadline); later: stragglers",
           ge=0, hint="0: no deadline", unit="simulated seconds"),
)
