"""Flower client side: the ClientApp over ``fedfit.federated.ClientWork``."""
