"""labgen: stand up, prove and tear down Open vSwitch overlay labs."""

__version__ = "0.1.0"
