"""Running commands on a node: the Runner protocol, this host's runner, SSH, root shells."""
