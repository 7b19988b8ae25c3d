"""Options of what is sent (``fedfit.codecs``): the codecs of each direction, deltas and top-k's error feedback."""
from fedfit.options.spec import Option

GROUP = "communication: codecs of what is sent"

OPTIONS = (
    Option("codec_up", "fp32",
           "fp32 | fp16 | int8 | int8-block:256 | topk:0.05"),
    Option("codec_down", "fp32",
           "server -> clients: fp32 | fp16 | int8 | int8-block:256 (no top-k)"),
    Option("delta", False,
           "clients send new - global (needed for useful top-k)"),
    Option("error_feedback", True,
           "top-k keeps each client's residual"),
)
