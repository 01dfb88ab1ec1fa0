"""Vagrant, as the libvirt provider and the box builder use it: the command, box fetching."""
