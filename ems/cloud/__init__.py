"""The cloud uplink over MQTT (docs/cloud.md): the site's telemetry, alarms and events to a broker.

- `config`: the [cloud] section's checks and the TLS / authentication settings it makes.
- `topics`: the topic and payload convention (versioned: v1), one home for every name.
- `cursor`: the uplink's position in the history database, stored atomically.
- `uplink`: the thread that reads the history database after its cursors and publishes, in order, with
  QoS 1, moving each cursor only past what the broker acknowledged: nothing is lost while the broker is
  away or when the EMS dies.
"""
