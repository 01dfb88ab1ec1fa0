"""The libvirt provider: VMs under Vagrant + vagrant-libvirt, on one or more hypervisors."""
