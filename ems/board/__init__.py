"""What makes the controller run unattended on the EMS board: systemd notification and watchdog, the
real-time fast loop, signed update bundles with A/B slots and rollback, maintenance (factory reset, clock)."""
