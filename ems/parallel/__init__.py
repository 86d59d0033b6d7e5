"""Parallel EMS: one site of many cabinets, each with its own EMS (docs/parallel.md).

- `units`: the group as the site file describes it (the slaves' IDs and addresses, ranges expanded, checked).
- `block`: the parallel block of the dispatch server's native map (commands master → slave, status slave →
  master), encoded and decoded from the map's profile (drivers/modbus/ems/ems_dispatch.toml).
- `slave`: what a slave does with the master's commands: checks them, holds the lease, its fallback.
- `group`: the master's view of the units: their states, the site totals, the distribution, the alarms.
- `link`: the master's Modbus TCP link to the units (one read/write transaction per unit per slow tick).
"""
