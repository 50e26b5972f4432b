"""rpger_ops: the operations layer of the RPGer permanent database stack."""

__version__ = "0.1.0"
