"""labgen.nodes.ssh's pure parts: how a command is wrapped for the remote shell, and reading
`vagrant ssh-config`. (Against a real sshd: tests/e2e/test_ssh_runner.py.)"""
from __future__ import annotations

import pytest

from labgen.nodes.ssh import SSHRunner, SSHTarget, parse_ssh_config, remote_command


def test_remote_command_wrapping():
    assert remote_command("echo hi", "vagrant", sudo=True) == "sudo -n sh -c 'echo hi'"
    assert remote_command("echo 'a b'", "vagrant") == \
        """sudo -n sh -c 'echo '"'"'a b'"'"''"""
    assert remote_command("echo hi", "root", sudo=True) == "sh -c 'echo hi'"
    assert remote_command("echo hi", "vagrant", sudo=False) == "sh -c 'echo hi'"


VAGRANT_SSH_CONFIG = """\
Host node1
  HostName 127.0.0.1
  User vagrant
  Port 2222
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "/home/me/My Labs/lab1/.vagrant/machines/node1/libvirt/private_key"
  IdentitiesOnly yes
  LogLevel FATAL
  PubkeyAcceptedKeyTypes +ssh-rsa
  HostKeyAlgorithms +ssh-rsa

Host node2
  HostName 192.168.121.57
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /home/me/.vagrant.d/insecure_private_keys/vagrant.key.ed25519
  IdentityFile /home/me/.vagrant.d/insecure_private_keys/vagrant.key.rsa
  IdentitiesOnly yes
  LogLevel FATAL
"""


def test_parse_vagrant_ssh_config():
    targets = parse_ssh_config(VAGRANT_SSH_CONFIG)
    assert targets == {
        "node1": SSHTarget("127.0.0.1", 2222, "vagrant",
                           "/home/me/My Labs/lab1/.vagrant/machines/node1/libvirt/private_key"),
        "node2": SSHTarget("192.168.121.57", 22, "vagrant",
                           "/home/me/.vagrant.d/insecure_private_keys/vagrant.key.ed25519"),
    }


def test_parse_is_case_insensitive_and_accepts_equals():
    targets = parse_ssh_config('host n\n hostname=10.0.0.1\n USER root\n'
                               ' identityfile = "/k"\n')
    assert targets == {"n": SSHTarget("10.0.0.1", 22, "root", "/k")}


def test_parse_errors():
    with pytest.raises(ValueError, match=r"host 'node1' lacks HostName"):
        parse_ssh_config("Host node1\n  User vagrant\n  IdentityFile /k\n")
    with pytest.raises(ValueError, match=r"host 'node2' lacks User, IdentityFile"):
        parse_ssh_config("Host node2\n  HostName 127.0.0.1\n")
    with pytest.raises(ValueError, match="bad Port"):
        parse_ssh_config("Host n\n HostName h\n User u\n IdentityFile /k\n Port ssh\n")
    with pytest.raises(ValueError, match="no 'Host' block"):
        parse_ssh_config("")
    with pytest.raises(ValueError, match=r"node9: no 'Host node9'.*found: node1, node2"):
        SSHRunner.from_ssh_config("node9", VAGRANT_SSH_CONFIG)
