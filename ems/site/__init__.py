"""The runtime: `ems run --config FILE` composes control, device communication, records and the board for the
site the file describes. It never imports the simulator (ems.sim): the simulated site is another process that
speaks the same protocols (`ems sim-site`), so the desk, the tests and the demo run the board's code path."""
