"""Failover: cut each redundant link in turn and measure the outage the spanning tree allows."""
