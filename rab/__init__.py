"""RAB: provable robustness against backdoor attacks (certification library)."""

__version__ = "0.1.0"
