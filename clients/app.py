"""The ClientApp that Flower loads (pyproject's ``clientapp``): each message goes to the SuperNode's warm
worker when its node config names one (``warm-socket``, ``clients.warm``) or the environment does
(``FEDFIT_WARM_SOCKET``, set by the SuperNode's start script), else - or when the worker
cannot be reached - to fedfit's ClientApp (``clients.client_app``) in this process. Imports no torch:
a message handled by the worker pays only Python and Flower's start-up in the process Flower starts."""
from __future__ import annotations

import logging
import os

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from clients.warm import ENV_KEY, SOCKET_KEY, WorkerUnavailable, forward

log = logging.getLogger(__name__)


def handle(message: Message, context: Context) -> Message:
    """``message``'s reply: from the warm worker, else from fedfit's ClientApp here."""
    path = context.node_config.get(SOCKET_KEY) or os.environ.get(ENV_KEY)
    if path:
        try:
            return forward(str(path), message, context)
        except WorkerUnavailable as e:
            log.warning("fedfit: %s; handling the message in this process", e)
    from clients.client_app import app as full_app  # torch, timm and the backbone: seconds

    return full_app(message, context)


app = ClientApp()
app.train()(handle)
app.evaluate()(handle)
app.query()(handle)
