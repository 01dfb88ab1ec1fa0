"""The netns provider: nodes as network namespaces on this host, with their own OVS daemons."""
