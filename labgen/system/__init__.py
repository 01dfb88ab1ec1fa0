"""This machine: its facts (tools, KVM), processes, lab ownership records and file locks."""
