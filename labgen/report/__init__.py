"""Reports: verification and failover results as tables for people, JSON and JUnit for tools."""
