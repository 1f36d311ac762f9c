"""Reporting: figures drawn from records (``plotting``) and the protocol's model FLOPs (``flops``)."""
